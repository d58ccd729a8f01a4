"""`show` (every caption version of one image, with provenance and verdicts) and `diff` (what changed
between two rounds), as functions returning data plus plain-text renderers the CLI prints.

Which caption stands for "round R" in a diff: kind `original` for round 0, otherwise the given kind
(default `self`); among that round×kind's versions the latest by created_at (so a derived repetition-cut
version, written after its raw parent, is the one compared — the same rule the interface contract uses).
On images with ground truth (synthetic; grade.truth_from_meta) grade.grade_caption grades both texts: recall,
precision, the ground-truth facts gained and lost (counted per kind — object attributes, relations, the
word — from the grader's recall counts) and the hallucinated facts that appear or disappear (its strings).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from curator.errors import InputError, StoreError

_HEX = re.compile(r"^[0-9a-f]{6,64}$")


@dataclass
class Verdict:
    filter: str
    keep: bool
    score: float | None
    reason: str
    run_id: str
    created_at: object          # datetime
    current: bool = True        # the latest verdict of its filter on this caption (the store's rule)


@dataclass
class CaptionVersion:
    caption_id: str
    round: int
    kind: str
    text: str
    captioner: str
    prompt_id: str
    sampling: str               # JSON text as stored
    sample_idx: int
    finish_reason: str
    n_tokens: int | None
    parent_caption_id: str
    transform: str
    run_id: str
    created_at: object
    verdicts: list[Verdict] = field(default_factory=list)   # every verdict row, oldest first
    image_id: str = ""

    @property
    def rejected_by(self) -> list[Verdict]:
        """Filters whose latest verdict on this caption says drop: the store's acceptance rule
        (curator.store.VIEWS), which marked each verdict `current` when it was read."""
        return [v for v in self.verdicts if v.current and not v.keep]

    @property
    def accepted(self) -> bool:
        return not self.rejected_by


@dataclass
class ImageCaptions:
    image_id: str
    uri: str
    source: str
    width: int | None
    height: int | None
    format: str
    split: str
    meta: dict
    captions: list[CaptionVersion]


def resolve_image_id(store, image_id: str, at=None) -> str:
    """A full image_id from a unique hex prefix (at least 6 characters)."""
    image_id = image_id.strip().lower()
    if not _HEX.match(image_id):
        raise InputError(f"invalid image id {image_id!r}", "image ids are sha256 hex (a prefix of 6+ characters works)",
                         "copy one from `curator sql \"SELECT image_id FROM images LIMIT 5\"`")
    ids = store.sql(f"SELECT image_id FROM images WHERE image_id LIKE '{image_id}%' ORDER BY image_id LIMIT 2",
                    at=at).column("image_id").to_pylist()
    if not ids:
        raise StoreError(f"no image {image_id} in the store", "no image_id starts with it",
                         "copy one from `curator sql \"SELECT image_id FROM images LIMIT 5\"`")
    if len(ids) > 1:
        raise InputError(f"image id prefix {image_id} is ambiguous", f"it matches {ids[0]} and {ids[1]} (at least)",
                         "give more characters")
    return ids[0]


def _verdicts_by_caption(store, caption_ids: list[str], at=None) -> dict[str, list[Verdict]]:
    """Every verdict on these captions, oldest first, each marked `current` by the store's latest_verdicts view
    (constant id lists, so DuckDB filters the window's partitions before ranking them)."""
    out: dict[str, list[Verdict]] = {}
    for s in range(0, len(caption_ids), 1000):
        ids = ",".join("'" + c.replace("'", "''") + "'" for c in caption_ids[s:s + 1000])
        rows = store.sql(
            "SELECT v.caption_id, v.filter, v.keep, v.score, v.reason, v.run_id, v.created_at, "
            f"v.verdict_id IN (SELECT verdict_id FROM latest_verdicts WHERE caption_id IN ({ids})) AS current "
            f"FROM verdicts v WHERE v.caption_id IN ({ids}) "
            "ORDER BY v.created_at, v.filter, v.verdict_id", at=at).to_pylist()
        for r in rows:
            out.setdefault(r["caption_id"], []).append(Verdict(
                r["filter"], bool(r["keep"]), r["score"], r["reason"] or "", r["run_id"] or "", r["created_at"],
                bool(r["current"])))
    return out


def _caption_rows(store, where: str, at=None) -> list[CaptionVersion]:
    rows = store.sql(
        "SELECT caption_id, image_id, round, kind, text, captioner, prompt_id, sampling, sample_idx, finish_reason, "
        "n_tokens, parent_caption_id, transform, run_id, created_at "
        f"FROM captions c WHERE {where} ORDER BY image_id, round, kind, created_at, caption_id", at=at).to_pylist()
    verdicts = _verdicts_by_caption(store, [r["caption_id"] for r in rows], at) if rows else {}
    out = []
    for r in rows:
        out.append(CaptionVersion(
            caption_id=r["caption_id"], round=r["round"], kind=r["kind"] or "", text=r["text"] or "",
            captioner=r["captioner"] or "", prompt_id=r["prompt_id"] or "", sampling=r["sampling"] or "",
            sample_idx=r["sample_idx"] or 0, finish_reason=r["finish_reason"] or "", n_tokens=r["n_tokens"],
            parent_caption_id=r["parent_caption_id"] or "", transform=r["transform"] or "",
            run_id=r["run_id"] or "", created_at=r["created_at"], verdicts=verdicts.get(r["caption_id"], []),
            image_id=r["image_id"]))
    return out


def show(store, image_id: str, at=None) -> ImageCaptions:
    """Every caption version of one image (by round, kind, then creation time) with its verdicts.
    at: read the store as of a tag (e.g. "round-1") or version, like Store.sql."""
    image_id = resolve_image_id(store, image_id, at)
    img = store.sql("SELECT image_id, uri, source, width, height, format, split, meta FROM images "
                    f"WHERE image_id = '{image_id}'", at=at).to_pylist()[0]
    caps = _caption_rows(store, f"c.image_id = '{image_id}'", at)
    return ImageCaptions(image_id=image_id, uri=img["uri"] or "", source=img["source"] or "",
                         width=img["width"], height=img["height"], format=img["format"] or "",
                         split=img["split"] or "", meta=_meta(img["meta"]), captions=caps)


def _meta(text) -> dict:
    try:
        m = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return m if isinstance(m, dict) else {}


def _short(h: str, n: int = 12) -> str:
    return h[:n] if h else "-"


def _score(s) -> str:
    return "-" if s is None else f"{s:.3f}"


def render_show(ic: ImageCaptions) -> str:
    size = f"{ic.width}x{ic.height}" if ic.width and ic.height else "?x?"
    lines = [f"image {ic.image_id}",
             f"  source={ic.source or '-'}  {size} {ic.format or '?'}  split={ic.split or '-'}  uri={ic.uri or '-'}",
             f"{len(ic.captions)} caption version{'s' if len(ic.captions) != 1 else ''}"]
    for c in ic.captions:
        rej = c.rejected_by
        status = "accepted" if not rej else "REJECTED by " + ", ".join(
            f"{v.filter}" + (f" ({v.reason})" if v.reason else "") for v in rej)
        lines.append("")
        lines.append(f"r{c.round} {c.kind}  caption {_short(c.caption_id)}  {status}")
        lines.append(f"  {json.dumps(c.text, ensure_ascii=False)}")
        prov = [f"captioner={_short(c.captioner)}", f"prompt_id={c.prompt_id or '-'}",
                f"sampling={c.sampling or '-'}", f"sample={c.sample_idx}",
                f"finish={c.finish_reason or '-'}", f"tokens={'-' if c.n_tokens is None else c.n_tokens}",
                f"run_id={c.run_id or '-'}"]
        lines.append("  " + "  ".join(prov))
        if c.parent_caption_id or c.transform:
            lines.append(f"  derived from {_short(c.parent_caption_id)} by {c.transform or '-'}")
        for v in c.verdicts:
            lines.append(f"  verdict {v.filter}: keep={'yes' if v.keep else 'no'} score={_score(v.score)}"
                         + (f" reason={v.reason}" if v.reason else "") + f" run_id={v.run_id or '-'}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ diff

KINDS = ("object", "relation", "word")      # grade_caption's fact kinds


@dataclass
class ImageDiff:
    image_id: str
    text_a: str
    text_b: str
    words_a: int
    words_b: int
    graded: bool = False
    recall_a: float | None = None
    recall_b: float | None = None
    precision_a: float | None = None                      # None: the caption states nothing gradeable
    precision_b: float | None = None
    recalled_a: dict = field(default_factory=dict)        # {kind: ground-truth facts the caption recalls}
    recalled_b: dict = field(default_factory=dict)
    halluc_gained: list[str] = field(default_factory=list)   # false facts in B, not in A
    halluc_lost: list[str] = field(default_factory=list)     # false facts in A, gone in B

    @property
    def delta_words(self) -> int:
        return self.words_b - self.words_a

    @property
    def gained(self) -> dict:
        """Ground-truth facts recalled in B beyond A, per kind (from the grader's per-kind recall counts)."""
        return {k: self.recalled_b.get(k, 0) - self.recalled_a.get(k, 0) for k in KINDS
                if self.recalled_b.get(k, 0) > self.recalled_a.get(k, 0)}

    @property
    def lost(self) -> dict:
        return {k: self.recalled_a.get(k, 0) - self.recalled_b.get(k, 0) for k in KINDS
                if self.recalled_a.get(k, 0) > self.recalled_b.get(k, 0)}


@dataclass
class RoundDiff:
    round_a: int
    round_b: int
    kind_a: str
    kind_b: str
    images: list[ImageDiff]          # images with a caption in both rounds, by image_id
    only_a: int                      # images with a caption only in round A
    only_b: int

    @property
    def graded(self) -> list[ImageDiff]:
        return [d for d in self.images if d.graded]

    def summary(self) -> dict:
        g = self.graded
        mean = (lambda xs: sum(xs) / len(xs) if xs else None)
        return {
            "images": len(self.images), "only_a": self.only_a, "only_b": self.only_b,
            "mean_words_a": mean([d.words_a for d in self.images]),
            "mean_words_b": mean([d.words_b for d in self.images]),
            "mean_delta_words": mean([d.delta_words for d in self.images]),
            "graded": len(g),
            "mean_recall_a": mean([d.recall_a for d in g]), "mean_recall_b": mean([d.recall_b for d in g]),
            # precision averages over captions that state something (the grader's convention)
            "mean_precision_a": mean([d.precision_a for d in g if d.precision_a is not None]),
            "mean_precision_b": mean([d.precision_b for d in g if d.precision_b is not None]),
            "facts_gained": sum(sum(d.gained.values()) for d in g),
            "facts_lost": sum(sum(d.lost.values()) for d in g),
            "hallucinations_gained": sum(len(d.halluc_gained) for d in g),
            "hallucinations_lost": sum(len(d.halluc_lost) for d in g),
        }


def _kind_for(round_: int, kind: str) -> str:
    return "original" if round_ == 0 else kind


def _latest_texts(store, round_: int, kind: str, where: str | None, at=None) -> dict[str, str]:
    img_filter = f" AND c.image_id IN (SELECT image_id FROM images WHERE {where})" if where else ""
    rows = store.sql(
        "SELECT image_id, text FROM (SELECT c.image_id, c.text, row_number() OVER ("
        "PARTITION BY c.image_id ORDER BY c.created_at DESC, c.caption_id DESC) AS rn FROM captions c "
        f"WHERE c.round = {int(round_)} AND c.kind = '{kind}'{img_filter}) WHERE rn = 1", at=at).to_pylist()
    return {r["image_id"]: r["text"] or "" for r in rows}


def _truths(store, image_ids: list[str], at=None) -> dict[str, dict]:
    """Ground truth of the images among image_ids whose meta holds some (synthetic images)."""
    from curator.world.grade import truth_from_meta

    out = {}
    for s in range(0, len(image_ids), 1000):
        chunk = ",".join(f"'{i}'" for i in image_ids[s:s + 1000])
        for r in store.sql(f"SELECT image_id, meta FROM images WHERE image_id IN ({chunk})", at=at).to_pylist():
            t = truth_from_meta(_meta(r["meta"]))
            if t is not None:
                out[r["image_id"]] = t
    return out


def _fact_str(f) -> str:
    return f if isinstance(f, str) else json.dumps(f, sort_keys=True, ensure_ascii=False)


def _words(text: str) -> int:
    return len(text.split())


def diff(store, round_a: int, round_b: int, kind: str = "self", where: str | None = None, at=None) -> RoundDiff:
    """Per-image changes from round A to round B and their aggregate (see module docstring)."""
    if round_a < 0 or round_b < 0:
        raise InputError(f"invalid rounds {round_a}, {round_b}", "rounds are 0 (original) or higher",
                         "e.g. --round 0 --round 1")
    ka, kb = _kind_for(round_a, kind), _kind_for(round_b, kind)
    a = _latest_texts(store, round_a, ka, where, at)
    b = _latest_texts(store, round_b, kb, where, at)
    if not a and not b:
        raise StoreError(f"no captions for round {round_a} ({ka}) or round {round_b} ({kb})",
                         "the store holds none of those round×kind rows" + (" matching --where" if where else ""),
                         "list what exists: curator sql \"SELECT round, kind, count(*) FROM captions GROUP BY ALL\"")
    both = sorted(set(a) & set(b))
    truths = _truths(store, both, at)
    from curator.world.grade import grade_caption as grade
    diffs = []
    for iid in both:
        d = ImageDiff(iid, a[iid], b[iid], _words(a[iid]), _words(b[iid]))
        if iid in truths:
            ga, gb = grade(a[iid], truths[iid]), grade(b[iid], truths[iid])
            d.graded = True
            d.recall_a, d.recall_b = ga["recall"], gb["recall"]
            d.precision_a, d.precision_b = ga["precision"], gb["precision"]
            d.recalled_a = {k: int(v["recalled"]) for k, v in ga["by_kind"].items()}
            d.recalled_b = {k: int(v["recalled"]) for k, v in gb["by_kind"].items()}
            ha = [_fact_str(f) for f in ga["hallucinated"]]
            hb = [_fact_str(f) for f in gb["hallucinated"]]
            d.halluc_gained = [f for f in hb if f not in ha]
            d.halluc_lost = [f for f in ha if f not in hb]
        diffs.append(d)
    return RoundDiff(round_a, round_b, ka, kb, diffs, only_a=len(set(a) - set(b)), only_b=len(set(b) - set(a)))


def _f(x, fmt="{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def render_diff(rd: RoundDiff, limit: int | None = 20) -> str:
    s = rd.summary()
    head = (f"diff round {rd.round_a} ({rd.kind_a}) -> round {rd.round_b} ({rd.kind_b}): "
            f"{s['images']} image{'s' if s['images'] != 1 else ''} in both")
    extra = []
    if rd.only_a:
        extra.append(f"{rd.only_a} only in round {rd.round_a}")
    if rd.only_b:
        extra.append(f"{rd.only_b} only in round {rd.round_b}")
    lines = [head + (", " + ", ".join(extra) if extra else "")]
    shown = rd.images if limit is None else rd.images[:limit]
    for d in shown:
        lines.append("")
        lines.append(f"{d.image_id[:12]}  words {d.words_a} -> {d.words_b} ({d.delta_words:+d})")
        lines.append(f"  - {json.dumps(d.text_a, ensure_ascii=False)}")
        lines.append(f"  + {json.dumps(d.text_b, ensure_ascii=False)}")
        if d.graded:
            lines.append(f"  recall {_f(d.recall_a)} -> {_f(d.recall_b)}  precision {_f(d.precision_a)} -> "
                         f"{_f(d.precision_b)}  facts gained: {_per_kind(d.gained)}; lost: {_per_kind(d.lost)}")
            for h in d.halluc_gained:
                lines.append(f"  + hallucinated: {h}")
            for h in d.halluc_lost:
                lines.append(f"  - hallucinated: {h}")
    if len(shown) < len(rd.images):
        lines.append("")
        lines.append(f"... {len(rd.images) - len(shown)} more image(s) (raise --limit to list them)")
    lines.append("")
    lines.append(f"drift: mean words {_f(s['mean_words_a'], '{:.1f}')} -> {_f(s['mean_words_b'], '{:.1f}')} "
                 f"({_f(s['mean_delta_words'], '{:+.1f}')}) over {s['images']} image(s)")
    if s["graded"]:
        lines.append(f"synthetic ({s['graded']} graded): recall {_f(s['mean_recall_a'])} -> {_f(s['mean_recall_b'])}, "
                     f"precision {_f(s['mean_precision_a'])} -> {_f(s['mean_precision_b'])}, "
                     f"facts gained {s['facts_gained']}, lost {s['facts_lost']}, "
                     f"hallucinations gained {s['hallucinations_gained']}, gone {s['hallucinations_lost']}")
    return "\n".join(lines)


def _per_kind(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) if d else "none"
