"""The round report: one self-contained HTML file (plots embedded as PNG) plus a terminal table.

Everything comes from the store (models.metrics, captions, verdicts, images.meta), so the report can be
regenerated at any time and for any tagged state. Hallucinated facts in the gallery come from the synthetic
world's grader; images without ground truth just show their captions.
"""
from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the report is written on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

# The metrics shown in the main table, in order; anything else in models.metrics goes to the skills table.
CAPTION_METRICS = ["caption_precision", "caption_recall", "caption_p_x_r", "caption_length_words"]


@dataclass
class ReportData:
    models: list[dict]                       # generalist SFT models with metrics, ordered by round
    specialists: list[dict]                  # specialist models (role != generalist)
    lengths: dict[str, list[int]]            # label ("r0 original", "r1 self" …) -> caption word counts
    drops: list[dict]                        # {round, filter, reason, n}
    gallery: list[dict] = field(default_factory=list)  # {image_id, png_b64, captions: [{label, text, hallucinated}]}


def _metrics(row: dict) -> dict:
    try:
        return json.loads(row.get("metrics") or "{}")
    except json.JSONDecodeError:
        return {}


def collect(store, gallery_size: int = 8, at=None) -> ReportData:
    """Read what the report shows from the store (one DuckDB connection, a few queries)."""
    con = store.connect(at=at)
    models = con.sql(
        "SELECT model_id, round, role, stage, path, trained_on, parent_model_id, metrics, created_at "
        "FROM models ORDER BY round, created_at, model_id").to_arrow_table().to_pylist()
    generalists = [m for m in models if m["role"] == "generalist" and m["stage"] == "sft"]
    specialists = [m for m in models if m["role"] != "generalist"]

    lengths: dict[str, list[int]] = {}
    for rnd, kind, words in con.execute(
        "SELECT round, kind, len(string_split(trim(text), ' ')) AS words FROM captions "
        "WHERE transform = '' OR transform IS NULL ORDER BY round, kind"
    ).fetchall():
        lengths.setdefault(f"r{rnd} {kind}", []).append(int(words))

    drops = [
        {"round": r, "filter": f, "reason": (reason or "").split(":")[0], "n": int(n)}
        for r, f, reason, n in con.execute(
            """
            SELECT c.round, l.filter, split_part(l.reason, ':', 1) AS reason, count(*) AS n
            FROM latest_verdicts l JOIN captions c USING (caption_id)   -- the store's acceptance rule
            WHERE NOT l.keep
            GROUP BY ALL ORDER BY c.round, n DESC, l.filter, reason
            """
        ).fetchall()
    ]

    gallery = []
    if gallery_size > 0:
        ids = [r[0] for r in con.execute(
            "SELECT image_id FROM images WHERE split = 'train' ORDER BY image_id LIMIT ?", [gallery_size]
        ).fetchall()]
        if ids:
            gallery = _gallery(con, store, ids)
    return ReportData(models=generalists, specialists=specialists, lengths=lengths, drops=drops, gallery=gallery)


def _gallery(con, store, ids: list[str]) -> list[dict]:
    from curator.world import grade

    meta = {i: json.loads(m or "{}") for i, m in con.execute(
        "SELECT image_id, meta FROM images WHERE list_contains(?, image_id)", [ids]).fetchall()}
    caps: dict[str, list[dict]] = {i: [] for i in ids}
    for image_id, rnd, kind, transform, text in con.execute(
        "SELECT image_id, round, kind, transform, text FROM captions WHERE list_contains(?, image_id) "
        "ORDER BY round, kind, transform, created_at", [ids]
    ).fetchall():
        truth = grade.truth_from_meta(meta.get(image_id, {}))
        hall = []
        if truth is not None and text:
            hall = [str(f) for f in grade.grade_caption(text, truth)["hallucinated"]]
        label = f"r{rnd} {kind}" + (f" ({transform})" if transform else "")
        caps[image_id].append({"label": label, "text": text or "", "hallucinated": hall})
    images = store.image_bytes(ids)
    return [
        {"image_id": i, "png_b64": base64.b64encode(images[i]).decode() if images.get(i) else "",
         "captions": caps[i]}
        for i in ids
    ]


def _fig_b64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _length_plot(lengths: dict[str, list[int]]) -> str | None:
    if not lengths:
        return None
    fig, ax = plt.subplots(figsize=(7, 3))
    labels = list(lengths)
    ax.boxplot([lengths[k] for k in labels], showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right")
    ax.set_ylabel("words per caption")
    ax.set_title("Caption length per round and kind")
    return _fig_b64(fig)


def _metric_plot(models: list[dict]) -> str | None:
    if not models:
        return None
    rounds = [m["round"] for m in models]
    fig, ax = plt.subplots(figsize=(7, 3))
    for key in ("caption_precision", "caption_recall", "caption_p_x_r", "vqa_acc"):
        ys = [_metrics(m).get(key) for m in models]
        if any(y is not None for y in ys):
            ax.plot(rounds, [y if y is not None else float("nan") for y in ys], marker="o", label=key)
    ax.set_xlabel("round")
    ax.set_xticks(rounds)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Eval metrics per round (held-out synthetic set)")
    return _fig_b64(fig)


TERMINAL_METRICS = CAPTION_METRICS + ["vqa_acc", "grounding_iou"]


def metric_rows(models: list[dict], only: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header + rows of the per-round metrics table (shared by the terminal and the HTML).
    `only` restricts and orders the columns; otherwise every numeric metric but the counts."""
    keys: list[str] = []
    for m in models:
        for k, v in _metrics(m).items():
            if isinstance(v, (int, float)) and k not in keys and not k.startswith("vqa_n_") and k != "n_eval":
                keys.append(k)
    if only is not None:
        keys = [k for k in dict.fromkeys(only) if k in keys]
    keys.sort(key=lambda k: (CAPTION_METRICS.index(k) if k in CAPTION_METRICS else 99, k))
    rows = []
    for m in models:
        met = _metrics(m)
        rows.append([str(m["round"]), run_name(m), m["model_id"][:10], m.get("trained_on") or ""] +
                    [f"{met[k]:.3f}" if isinstance(met.get(k), float) else str(met.get(k, "")) for k in keys])
    return ["round", "run", "model", "trained on"] + [k.replace("caption_", "cap_") for k in keys], rows


def run_name(model: dict) -> str:
    """The loop's name for a checkpoint: its training directory (models/<name>/<stage>), e.g. round-1,
    round-1-recaption, round-0-2x-epochs (a compute control)."""
    p = Path(model.get("path") or "")
    return p.parent.name if p.parent.name else ""


def compute_control_lines(models: list[dict], metric: str = "caption_p_x_r") -> list[str]:
    """Each compute control (round 0 retrained with N× the pretraining epochs, run name `…-<N>x-epochs`)
    beside the self-augment rounds: is a round's gain data, or would more training on the original
    captions have given it?"""
    import re

    lines = []
    rounds = {m["round"]: _metrics(m).get(metric) for m in models
              if re.fullmatch(r"round-\d+", run_name(m)) and _metrics(m).get(metric) is not None}
    for m in models:
        got = re.search(r"(\d+(?:\.\d+)?)x-epochs$", run_name(m))
        v = _metrics(m).get(metric)
        if m["round"] == 0 and got and v is not None:
            beside = ", ".join(f"round {r} {x:.3f} ({x - v:+.3f})" for r, x in sorted(rounds.items()) if r > 0)
            lines.append(f"compute control: round 0 with {got.group(1)}× the pretraining epochs, {metric} {v:.3f}"
                         + (f" — vs {beside}" if beside else ""))
    return lines


def write_html(data: ReportData, path: str | Path, title: str = "vila2-curator round report") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;margin:24px;max-width:1200px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;vertical-align:top}"
             ".hall{color:#b00;font-size:12px}.cap{white-space:pre-wrap;overflow-wrap:anywhere;font-size:12px;max-width:360px}"
             "img.g{width:128px;image-rendering:pixelated}</style></head><body>",
             f"<h1>{esc(title)}</h1>"]
    header, rows = metric_rows(data.models)
    parts.append("<h2>Eval metrics per round</h2>")
    if rows:
        parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append("</table>")
        parts += [f"<p><b>{esc(c)}</b></p>" for c in compute_control_lines(data.models)]
    else:
        parts.append("<p>No evaluated generalist models in the store yet.</p>")
    for title_, b64 in (("Metrics", _metric_plot(data.models)), ("Caption length", _length_plot(data.lengths))):
        if b64:
            parts.append(f"<h3>{title_}</h3><img src='data:image/png;base64,{b64}'>")
    if data.specialists:
        sh, sr = metric_rows(data.specialists)
        parts.append("<h2>Specialists</h2><table><tr><th>role</th>" +
                     "".join(f"<th>{esc(h)}</th>" for h in sh) + "</tr>")
        for m, r in zip(data.specialists, sr):
            parts.append(f"<tr><td>{esc(m['role'])}</td>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
        parts.append("</table>")
    parts.append("<h2>Filter drops by reason</h2>")
    if data.drops:
        parts.append("<table><tr><th>round</th><th>filter</th><th>reason</th><th>captions</th></tr>")
        parts += [f"<tr><td>{d['round']}</td><td>{esc(d['filter'])}</td><td>{esc(d['reason'])}</td><td>{d['n']}</td></tr>"
                  for d in data.drops]
        parts.append("</table>")
    else:
        parts.append("<p>No caption was rejected by a filter.</p>")
    if data.gallery:
        parts.append("<h2>Gallery: every caption version side by side</h2>"
                     "<p>Red: facts the grader found false against the image's ground truth.</p><table>")
        for g in data.gallery:
            cells = "".join(
                f"<td><b>{esc(c['label'])}</b><div class='cap'>{esc(c['text'])}</div>" +
                ("".join(f"<div class='hall'>✗ {esc(h)}</div>" for h in c["hallucinated"])) + "</td>"
                for c in g["captions"])
            img = f"<img class='g' src='data:image/png;base64,{g['png_b64']}'>" if g["png_b64"] else ""
            parts.append(f"<tr><td>{img}<br><code>{g['image_id'][:12]}</code></td>{cells}</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def terminal_table(data: ReportData) -> str:
    header, rows = metric_rows(data.models, only=TERMINAL_METRICS + [
        k for m in data.models for k in _metrics(m) if k.startswith("vqa_acc_")])
    if not rows:
        return "No evaluated generalist models in the store yet."
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
                     + compute_control_lines(data.models))


def report(store, out: str | Path, gallery_size: int = 8, at=None) -> tuple[Path, str]:
    """Write the HTML report to `out`; return its path and the terminal table."""
    data = collect(store, gallery_size=gallery_size, at=at)
    return write_html(data, out), terminal_table(data)
