"""Text filters: captions/s per core, vectorized (DuckDB SQL, threads=1) vs a plain Python loop of the
same checks (repetition, n-gram loop, length, truncation, charset, template collapse, thresholds), same run.

    .venv/bin/python bench/bench_filters.py [--n 200000]
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


def make_captions(n: int, seed: int = 0, short: bool = False):
    """Synthetic-world-like recaptions of ~40-120 words; a few % degenerate (loops, repeats, cut, odd bytes)."""
    rng = random.Random(seed)
    texts, frs = [], []
    for i in range(n):
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


CHECKS = {   # check -> (SQL over _c, Python per caption)
    "length": ("SELECT len(list_filter(string_split(lower(text), ' '), lambda x: x <> '')) FROM _c",
               lambda t, fr: len(filters.words(t))),
    "truncation": ("SELECT finish_reason = 'length' FROM _c", lambda t, fr: fr == "length"),
    "charset": (f"SELECT regexp_matches(text, '{filters.CHARSETS_SQL['latin']}') FROM _c",
                lambda t, fr: filters.bad_char_fraction(t) > 0),
    "repetition": ("SELECT len(list_distinct(s)) < len(s) FROM (SELECT list_filter(list_transform("
                   "string_split(lower(text), '.'), lambda x: trim(x)), lambda x: x <> '') AS s FROM _c)",
                   lambda t, fr: filters.repetition_cut(t)[1] > 0),
    "ngram (DuckDB list lambdas)": (f"SELECT {filters._ngram_sql(3)} FROM (SELECT list_filter(string_split("
                                    f"lower(text), ' '), lambda x: x <> '') AS w FROM _c)",
                                    lambda t, fr: filters.ngram_repeat(t, 3)),
    "ngram (Arrow + numpy, used)": (None, lambda t, fr: filters.ngram_repeat(t, 3)),
}
SKIP_IN_TOTAL = {"ngram (DuckDB list lambdas)"}   # the production path uses the Arrow version


def run(texts, frs, n_label):
    table = pa.table({"caption_id": [f"{i:08d}" for i in range(len(texts))], "text": texts, "finish_reason": frs})
    con = duckdb.connect()
    con.execute("SET threads = 1")   # per core
    con.register("_c", table)
    n = len(texts)
    rows = []
    tot_v = tot_p = 0.0
    for name, (q, fn) in CHECKS.items():
        if q is None:
            t0 = time.perf_counter()
            filters.ngram_repeat_arrow(table.column("text"), 3)
            tv = time.perf_counter() - t0
        else:
            con.sql(q.replace("FROM _c", "FROM (SELECT * FROM _c LIMIT 100)")).to_arrow_table()   # warm-up
            t0 = time.perf_counter()
            con.sql(q).to_arrow_table()
            tv = time.perf_counter() - t0
        t0 = time.perf_counter()
        for t, fr in zip(texts, frs):
            fn(t, fr)
        tp = time.perf_counter() - t0
        rows.append((name, n / tv, n / tp))
        if name not in SKIP_IN_TOTAL:
            tot_v += tv
            tot_p += tp
    # template collapse: the production group-by + join (filters._template) vs a Counter
    t0 = time.perf_counter()
    con.sql("""WITH c AS (SELECT caption_id, lower(trim(text)) AS t FROM _c)
               SELECT c.caption_id, g.n FROM c JOIN (SELECT t, count(*) AS n FROM c GROUP BY t) g USING (t)""").to_arrow_table()
    tv = time.perf_counter() - t0
    t0 = time.perf_counter()
    c = Counter(t.strip().lower() for t in texts)
    [c[t.strip().lower()] for t in texts]
    tp = time.perf_counter() - t0
    rows.append(("template", n / tv, n / tp))
    tot_v += tv
    tot_p += tp
    rows.append(("all text checks", n / tot_v, n / tot_p))
    words = sum(len(t.split()) for t in texts) / n
    print(f"\n{n_label}: {n} captions, mean {words:.0f} words; captions/s on one core")
    print("| check | vectorized (one core) | Python loop | ratio |")
    print("|---|---|---|---|")
    for name, v, p in rows:
        print(f"| {name} | {v:,.0f} | {p:,.0f} | {v / p:.1f}x |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    a = ap.parse_args()
    texts, frs = make_captions(a.n, short=True)
    run(texts, frs, "short captions (synthetic-world recaptions)")
    texts, frs = make_captions(a.n)
    run(texts, frs, "long captions (paper-length, ~100+ words)")


if __name__ == "__main__":
    main()
