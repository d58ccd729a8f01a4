"""Caption filters judged like classifiers, and timed.

1. Precision and recall per filter on a labelled set of healthy and degenerate captions
   (curator/world/filter_cases.py: healthy short / long / very long templated captions; loops, repeated
   sentences, truncations, charset garbage, stubs, template collapse). Per filter: recall on its own defect,
   the share of healthy captions of each length it drops, and precision (dropped captions that are degenerate
   in any way). The same for the previous defaults, and for Data-Juicer's and datatrove's nearest filters at
   their defaults when they are installed (they are not dependencies of this project:
   `pip install py-data-juicer datatrove spacy`).
2. Speed: captions per CPU-second for the whole set of text checks (repetition, n-gram loop, length,
   truncation, charset, template collapse) plus thresholds → keep/reason, three ways on the same data, same
   run — vectorized as run_filters runs it (Arrow compute + numpy scores, keep/reason in DuckDB SQL), all-DuckDB
   SQL, a plain Python loop — and Data-Juicer's / datatrove's nearest filters on the same captions.

One core each (DuckDB threads=1, Arrow cpu_count=1), best of 3 runs. Short (synthetic-world) and long
(paper-length) captions.

    .venv/bin/python bench/bench_filters.py [--n 30000] [--labelled 300]
"""
from __future__ import annotations

import argparse
import math
import random
import time
from collections import Counter

import duckdb
import numpy as np
import pyarrow as pa

from curator import filters
from curator.world.filter_cases import DEFECTS, HEALTHY, labelled_captions
from summary import record  # bench/ is sys.path[0]

COLORS = "red blue green yellow purple orange black white".split()
SHAPES = "circle square triangle star hexagon".split()
POS = ["top left", "top right", "bottom left", "bottom right", "center", "left edge", "right edge"]
NAMES = ["repetition", "ngram", "length", "truncation", "charset"]


def make_captions(n: int, seed: int = 0, short: bool = False):
    """Synthetic-world-like recaptions; a few % degenerate (loops, repeated sentences, broken bytes, cut)."""
    rng = random.Random(seed)
    texts, frs = [], []
    for _ in range(n):
        k = rng.randint(1, 3) if short else rng.randint(4, 12)
        sents = [f"A {rng.choice(['small', 'large', 'medium'])} {rng.choice(COLORS)} {rng.choice(SHAPES)} is at "
                 f"the {rng.choice(POS)} of the image, next to a {rng.choice(COLORS)} {rng.choice(SHAPES)}."
                 for _ in range(k)]
        r = rng.random()
        if r < 0.02:
            sents = sents[:3] + sents[:3]                 # repeated sentences
        elif r < 0.04:
            sents = ["circle " * 40]                       # loop
        elif r < 0.05:
            sents[0] += " \x00\ufffd"                      # broken bytes
        texts.append(" ".join(sents))
        frs.append("length" if r > 0.97 else "eos")
    return texts, frs


def python_loop(ids, texts, frs, cfgs):
    out = []
    tmpl = Counter(t.strip().lower() for t in texts)
    max_count = max(5, math.ceil(0.01 * len(texts)))
    for cid, t, fr in zip(ids, texts, frs):
        for name, score in filters.score_text(t, fr, cfgs).items():
            out.append((cid, name, score, *filters.keep_py(name, score, cfgs[name].threshold)))
        n = tmpl[t.strip().lower()]
        out.append((cid, "template", n, n <= max_count, "" if n <= max_count else f"template: {n}"))
    return out


def vectorized(con, table, cfgs, scorer, template):
    scores = scorer(table)
    con.register("_s", scores)
    out = []
    for name in NAMES:
        col = "rep_flag::DOUBLE" if name == "repetition" else name   # the exact cut index: flagged rows only
        keep, reason = filters.keep_reason_sql(name, cfgs[name].threshold)
        out.append(con.sql(f"SELECT caption_id, score, ({keep}) AS keep, ({reason}) AS reason "
                           f"FROM (SELECT caption_id, {col} AS score FROM _s)").to_arrow_table())
    out.append(template(table))
    flagged = scores.filter(scores.column("rep_flag"))
    if flagged.num_rows:
        texts = dict(zip(table.column("caption_id").to_pylist(), table.column("text").to_pylist()))
        [filters.repetition_cut(texts[c]) for c in flagged.column("caption_id").to_pylist()]
    con.unregister("_s")
    return out


REPEATS = 3   # best of 3: the VM is shared, and the minimum is the least disturbed run


def best_of(k: int, fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of the best of k runs. On a shared VM the wall time includes
    waiting for a core; CPU time is what one core spent, i.e. the per-core cost."""
    ts = []
    for _ in range(k):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        ts.append((time.perf_counter() - t0, time.process_time() - c0))
    return min(ts)


def run(texts, frs, label):
    n = len(texts)
    ids = [f"{i:08d}" for i in range(n)]
    cfgs = filters.make_configs(NAMES)
    table = pa.table({"caption_id": ids, "text": texts, "finish_reason": frs, "kind": ["self"] * n,
                      "image_id": [f"img{i:08d}" for i in range(n)]})
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.register("_c", table)
    def template_sql(t):
        con.register("_t", t)
        return con.sql("""WITH c AS (SELECT caption_id, image_id, kind, lower(trim(text)) AS t FROM _t)
            SELECT caption_id, n AS score FROM c
            JOIN (SELECT kind, t, count(DISTINCT image_id) AS n FROM c GROUP BY kind, t) USING (kind, t)""").to_arrow_table()

    impls = {
        "vectorized: Arrow + numpy scores, SQL thresholds (used)":
            (lambda t: filters.text_scores(t, cfgs), filters.template_counts),
        "all DuckDB SQL": (lambda t: filters.text_scores_sql(con, t, cfgs), template_sql),
    }
    res = {}
    for name, (scorer, template) in impls.items():
        vectorized(con, table.slice(0, 200), cfgs, scorer, template)      # warm-up
        res[name] = best_of(REPEATS, lambda: vectorized(con, table, cfgs, scorer, template))
    res["plain Python loop"] = best_of(REPEATS, lambda: python_loop(ids, texts, frs, cfgs))
    words = sum(len(t.split()) for t in texts) / n
    ext = external_rate(texts)
    base = res["plain Python loop"]
    print(f"\n{label}: {n} captions, mean {words:.0f} words — all text checks + thresholds, one core")
    print("| implementation | captions/s (wall) | captions per CPU-second | vs Python loop (CPU) |")
    print("|---|---|---|---|")
    for name, (wall, cpu) in res.items():
        print(f"| {name} | {n / wall:,.0f} | {n / cpu:,.0f} | {base[1] / cpu:.1f}x |")
    for name, rate in ext.items():
        print(f"| {name} | | {rate:,.0f} | {rate * base[1] / n:.2f}x |")
    used = n / res["vectorized: Arrow + numpy scores, SQL thresholds (used)"][1]
    record("bench_filters", f"all text filters, {label.split(' (')[0]}", used, "captions/CPU-s",
           "plain Python loop", base[1] / res["vectorized: Arrow + numpy scores, SQL thresholds (used)"][1])
    print(f"used implementation: {used:,.0f} captions per CPU-second "
          f"({'meets' if used >= 100_000 else 'BELOW'} the 100,000 bar)"
          + "".join(f"; {used / r:.0f}x {name.split(' (')[0]}" for name, r in ext.items()))


# ------------------------------------------------------------------------------ 1. the labelled set

PREVIOUS = {"thresholds": {"ngram.max_repeat": "0.5", "length.max_words": "400", "template.max_fraction": "0.05"},
            "params": {"ngram.n": "3"}}     # the defaults before they were chosen on the labelled set


def case_table(cases) -> pa.Table:
    n = len(cases)
    return pa.table({"caption_id": [f"{i:07d}" for i in range(n)], "text": [c.text for c in cases],
                     "finish_reason": [c.finish_reason for c in cases], "image_id": [c.image_id for c in cases],
                     "kind": ["self"] * n})


def ours(table, thresholds=None, params=None) -> dict[str, np.ndarray]:
    """filter → dropped? per caption, as run_filters decides."""
    j = filters.judge(table, filters.make_configs(filters.TEXT_FILTERS, thresholds, params))
    return {f: ~j.column(f"keep_{f}").to_numpy(zero_copy_only=False) for f in filters.TEXT_FILTERS}


def dj_ops():
    """Data-Juicer's nearest filters at their defaults, with the defects they target (None if not installed)."""
    try:
        from data_juicer.ops.filter.character_repetition_filter import CharacterRepetitionFilter
        from data_juicer.ops.filter.special_characters_filter import SpecialCharactersFilter
        from data_juicer.ops.filter.word_repetition_filter import WordRepetitionFilter
        from data_juicer.ops.filter.words_num_filter import WordsNumFilter
    except ImportError as e:
        print(f"(Data-Juicer not measured: {e})")
        return None
    return {"word_repetition_filter": (WordRepetitionFilter(), ("loop", "repeat")),
            "character_repetition_filter": (CharacterRepetitionFilter(), ("loop", "repeat")),
            "special_characters_filter": (SpecialCharactersFilter(), ("charset",)),
            "words_num_filter": (WordsNumFilter(), ("stub",))}


def dj_drop(op, texts) -> np.ndarray:
    samples = {"text": list(texts), "__dj__stats__": [{} for _ in texts]}
    samples = op.compute_stats_batched(samples)
    return ~np.array(list(op.process_batched(samples)), bool)


def dt_ops():
    """datatrove's nearest filters at their defaults (its English word tokenizer needs spacy)."""
    try:
        import spacy  # noqa: F401
        from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    except ImportError as e:
        print(f"(datatrove not measured: {e})")
        return None
    return {"GopherRepetitionFilter": (GopherRepetitionFilter(), ("loop", "repeat")),
            "GopherQualityFilter": (GopherQualityFilter(), ("stub", "charset"))}


def dt_drop(f, texts) -> np.ndarray:
    from datatrove.data import Document

    out = []
    for i, t in enumerate(texts):
        r = f.filter(Document(text=t, id=str(i)))
        out.append(not (r[0] if isinstance(r, tuple) else r))
    return np.array(out, bool)


def judged_row(name, drop, labels, targets) -> str:
    healthy = np.isin(labels, HEALTHY)
    recall = ", ".join(f"{t} {drop[labels == t].mean():.1%}" for t in targets)
    prec = (~healthy[drop]).mean() if drop.any() else float("nan")
    return (f"| {name} | {recall} | " + " | ".join(f"{drop[labels == h].mean():.1%}" for h in HEALTHY)
            + f" | {prec:.1%} | {int(drop.sum())} |")


def labelled(n_per_class: int):
    cases = labelled_captions(n_per_class)
    labels = np.array([c.label for c in cases])
    table = case_table(cases)
    words = {lab: np.mean([len(c.text.split()) for c in cases if c.label == lab]) for lab in HEALTHY}
    print(f"\nLabelled set: {len(cases)} captions — healthy short / long / very long ({n_per_class} each, mean "
          + " / ".join(f"{w:.0f}" for w in words.values()) + " words); defects: "
          + ", ".join(f"{k} {int((labels == k).sum())}" for k in DEFECTS))
    print("| filter | recall on its own defect | healthy short dropped | healthy long dropped | "
          "healthy very long dropped | precision | dropped |")
    print("|---|---|---|---|---|---|---|")
    now, before = ours(table), ours(table, PREVIOUS["thresholds"], PREVIOUS["params"])
    for f in filters.TEXT_FILTERS:
        own = [d for d, t in DEFECTS.items() if t == f]
        cfg = filters.make_configs([f])[f]
        print(judged_row(f"{f} ({', '.join(f'{k}={v}' for k, v in {**cfg.score, **cfg.threshold}.items())})",
                         now[f], labels, own))
    for f in ("ngram", "length", "template"):
        own = [d for d, t in DEFECTS.items() if t == f]
        print(judged_row(f"{f}, previous defaults", before[f], labels, own))
    texts = [c.text for c in cases]
    for tool, ops, drop_fn in (("Data-Juicer", dj_ops(), dj_drop), ("datatrove", dt_ops(), dt_drop)):
        for name, (op, targets) in (ops or {}).items():
            print(judged_row(f"{tool} {name}", drop_fn(op, texts), labels, targets))
    return cases, labels, table


def sweep(labels, table):
    """How to re-threshold: healthy dropped (worst length) / loops caught, per n-gram length and max_repeat."""
    grid = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
    healthy = [labels == h for h in HEALTHY]
    print("\nngram filter: worst healthy drop / loop recall, by n (rows) and max_repeat (columns)")
    print("| n | " + " | ".join(str(g) for g in grid) + " |")
    print("|---|" + "---|" * len(grid))
    for n in (3, 6, 8, 10, 12):
        cfgs = filters.make_configs(["ngram"], params={"ngram.n": str(n)})
        score = filters.judge(table, cfgs).column("ngram").to_numpy()
        cells = [f"{max((score[h] > g).mean() for h in healthy):.1%} / {(score[labels == 'loop'] > g).mean():.1%}"
                 for g in grid]
        print(f"| {n} | " + " | ".join(cells) + " |")


# ------------------------------------------------------------------------------------------ 2. speed

def external_rate(texts, k: int = 3000) -> dict[str, float]:
    """Captions per CPU-second of Data-Juicer's and datatrove's nearest filters, all of each tool's run in turn
    on the first k captions (their Python loops are slow; the rate does not depend on k)."""
    sub = texts[:k]
    out = {}
    for tool, ops, drop_fn in (("Data-Juicer (word rep. + char rep. + special chars + words num)", dj_ops(), dj_drop),
                               ("datatrove (Gopher repetition + Gopher quality)", dt_ops(), dt_drop)):
        if ops:
            _, cpu = best_of(1, lambda: [drop_fn(op, sub) for op, _ in ops.values()])
            out[tool] = len(sub) / cpu
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=30_000, help="captions per speed corpus")
    ap.add_argument("--labelled", type=int, default=300, help="captions per class in the labelled set")
    ap.add_argument("--small", action="store_true", help="a quick check that it runs (--n 3000 --labelled 60)")
    a = ap.parse_args()
    if a.small:
        a.n, a.labelled = 3000, 60
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    cases, labels, table = labelled(a.labelled)
    sweep(labels, table)
    for short, label in ((True, "short captions (synthetic-world recaptions)"), (False, "long captions (paper-length)")):
        texts, frs = make_captions(a.n, short=short)
        run(texts, frs, label)


if __name__ == "__main__":
    main()
