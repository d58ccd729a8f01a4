"""Text filters: captions/s per core for the whole set of text checks (repetition, n-gram loop, length,
truncation, charset, template collapse) plus thresholds → keep/reason, three ways on the same data, same run:

  * vectorized, as run_filters runs it: Arrow compute + numpy scores (filters.text_scores, filters.
    template_counts), keep/reason in DuckDB SQL;
  * all-DuckDB: the same scores as SQL (filters.text_scores_sql, a GROUP BY for templates), same thresholds;
  * a plain Python loop of the same checks (filters.score_text, a Counter, filters.keep_py).

One core each (DuckDB threads=1, Arrow cpu_count=1), best of 3 runs. Short (synthetic-world) and long
(paper-length) captions.

    .venv/bin/python bench/bench_filters.py [--n 30000]
"""
from __future__ import annotations

import argparse
import random
import time
from collections import Counter

import duckdb
import pyarrow as pa

from curator import filters

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
    max_count = max(5, int(0.05 * len(texts)))
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
    base = res["plain Python loop"]
    print(f"\n{label}: {n} captions, mean {words:.0f} words — all text checks + thresholds, one core")
    print("| implementation | captions/s (wall) | captions per CPU-second | vs Python loop (CPU) |")
    print("|---|---|---|---|")
    for name, (wall, cpu) in res.items():
        print(f"| {name} | {n / wall:,.0f} | {n / cpu:,.0f} | {base[1] / cpu:.1f}x |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=30_000)
    a = ap.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    texts, frs = make_captions(a.n, short=True)
    run(texts, frs, "short captions (synthetic-world recaptions)")
    texts, frs = make_captions(a.n)
    run(texts, frs, "long captions (paper-length)")


if __name__ == "__main__":
    main()
