"""Benchmark: `curator sql` "latest accepted caption per image" over the 1M-image store of
bench_build.py (4M caption rows, 1M verdicts), against the same query on a plain DuckDB connection over
the same Lance datasets (the baseline: no read-only guard, no CLI) — in the same run. Two ways to write
the query are timed: a window carrying the text (A), and arg_max over ids then a semi-join for text (B).

Usage: python bench/bench_sql.py [--images 1000000] [--root /tmp/curator_bench]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_build import make_store  # noqa: E402
from summary import record  # noqa: E402  (bench/ is sys.path[0])

_REJECTED = """
WITH rejected AS (
  SELECT caption_id FROM verdicts
  QUALIFY row_number() OVER (PARTITION BY caption_id, filter ORDER BY created_at DESC, verdict_id DESC) = 1
      AND NOT keep
),"""
# Form A: one window over the caption rows, text carried along.
WINDOW = _REJECTED + """
latest AS (
  SELECT image_id, caption_id, round, text FROM captions
  WHERE kind = 'self' AND caption_id NOT IN (SELECT caption_id FROM rejected)
  QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY round DESC, created_at DESC, caption_id DESC) = 1
)
"""
# Form B: pick the winning caption_id per image without the text, then fetch only the winners' text.
ARGMAX = _REJECTED + """
pick AS (
  SELECT image_id, arg_max(caption_id, (round, created_at, caption_id)) AS caption_id FROM captions
  WHERE kind = 'self' AND caption_id NOT IN (SELECT caption_id FROM rejected)
  GROUP BY image_id
),
latest AS (SELECT image_id, caption_id, round, text FROM captions SEMI JOIN pick USING (caption_id))
"""
SUMMARY = "SELECT round, count(*) AS images, avg(length(text))::INT AS avg_chars FROM latest GROUP BY round ORDER BY round"
FULL = "SELECT image_id, round, text FROM latest"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1_000_000)
    ap.add_argument("--root", default="/tmp/curator_bench")
    args = ap.parse_args()
    path = os.path.join(args.root, f"store-{args.images}")
    store = make_store(path, args.images)
    n_caps = store.table("captions").count_rows()

    rows = []
    for label, q in (("A window, summary", WINDOW + SUMMARY), ("A window, 1 row/image", WINDOW + FULL),
                     ("B arg_max ids, summary", ARGMAX + SUMMARY), ("B arg_max ids, 1 row/image", ARGMAX + FULL)):
        con = store.connect()
        t = time.perf_counter()
        base = con.sql(q).to_arrow_table()
        t_base = time.perf_counter() - t
        con.close()
        t = time.perf_counter()
        got = store.sql(q)
        t_api = time.perf_counter() - t
        assert got.num_rows == base.num_rows
        rows.append((label, got.num_rows, t_base, t_api))
        if label.endswith("summary"):
            summary = got.to_pylist()

    out = os.path.join(args.root, "latest.parquet")
    cli = os.path.join(os.path.dirname(sys.executable), "curator")
    t = time.perf_counter()
    subprocess.run([cli, "--store", path, "sql", ARGMAX + FULL, "--out", out], check=True, capture_output=True)
    t_cli = time.perf_counter() - t
    os.remove(out)

    print(f"\nlatest accepted self caption per image: {args.images:,} images, {n_caps:,} caption rows "
          f"(machine: {os.cpu_count()}-core CPU VM, no GPU)")
    print(f"{'query form':<28} {'rows':>9} {'plain DuckDB s':>15} {'Store.sql s':>12} {'ratio':>7}")
    for label, n, tb, ta in rows:
        print(f"{label:<28} {n:>9,} {tb:>15.2f} {ta:>12.2f} {ta / tb:>6.2f}×")
    label, n, tb, ta = rows[-1]
    record("bench_sql", f"latest accepted caption, {args.images:,} images ({label})", ta, "s", "plain DuckDB", ta / tb)
    print(f"`curator sql <form B, 1 row/image> --out latest.parquet` end to end (process start included): {t_cli:.2f} s")
    print("rounds picked:", ", ".join(f"round {r['round']}: {r['images']:,}" for r in summary))


if __name__ == "__main__":
    main()
