"""Benchmark: what the store's one acceptance rule costs (curator.store.VIEWS) against the inline copies it
replaced, on the store of bench_build.py (N images × 4 caption versions, one verdict per round-3 caption),
in the same run, on one DuckDB connection:

- the rejected set: `rejected_captions` (latest verdict per caption × filter, ties to the drop, DISTINCT) vs
  the inline window the build used to carry (ties by verdict_id only, no DISTINCT);
- the concat policy's pick (latest accepted self caption per image, arg_max form) through each;
- `curator show`'s verdict lookup for one image: every verdict marked current by `latest_verdicts` with a
  constant id list vs the plain verdict rows (no rule at all).

Usage: python bench/bench_acceptance.py [--images 200000] [--root /tmp/curator_bench] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_build import make_store  # noqa: E402
from summary import record  # noqa: E402

INLINE = """(SELECT caption_id FROM verdicts
  QUALIFY row_number() OVER (PARTITION BY caption_id, filter ORDER BY created_at DESC, verdict_id DESC) = 1
      AND NOT keep)"""
VIEW = "(SELECT caption_id FROM rejected_captions)"
PICK = """SELECT count(*) AS n, count(DISTINCT caption_id) AS d FROM (
  SELECT image_id, arg_max(caption_id, (round, created_at, caption_id)) AS caption_id FROM captions
  WHERE kind = 'self' AND round <= 3 AND caption_id NOT IN {rejected} GROUP BY image_id)"""


def _time(con, q: str, repeats: int) -> tuple[float, list]:
    out, ts = None, []
    for _ in range(repeats):
        t = time.perf_counter()
        out = con.sql(q).fetchall()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200_000)
    ap.add_argument("--root", default="/tmp/curator_bench")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    store = make_store(os.path.join(a.root, f"store-{a.images}"), a.images)
    n_ver = store.table("verdicts").count_rows()
    con = store.connect()
    # one image's captions, for the show lookup
    ids = [r[0] for r in con.sql("SELECT caption_id FROM captions WHERE image_id = (SELECT min(image_id) FROM "
                                 "captions)").fetchall()]
    lit = ",".join(f"'{i}'" for i in ids)
    rows = []
    for label, base_q, ours_q in (
        ("rejected set (count)", f"SELECT count(*) FROM {INLINE}", "SELECT count(*) FROM rejected_captions"),
        ("concat pick, latest accepted per image", PICK.format(rejected=INLINE), PICK.format(rejected=VIEW)),
        ("show: verdicts of one image's captions",
         f"SELECT caption_id, filter, keep FROM verdicts WHERE caption_id IN ({lit})",
         f"SELECT caption_id, filter, keep, verdict_id IN (SELECT verdict_id FROM latest_verdicts WHERE caption_id "
         f"IN ({lit})) AS current FROM verdicts WHERE caption_id IN ({lit})"),
    ):
        tb, rb = _time(con, base_q, a.repeats)
        to, ro = _time(con, ours_q, a.repeats)
        if not label.startswith("show"):
            assert rb == ro, (label, rb, ro)   # no ties in this store: the two rules agree
        rows.append((label, tb, to))
    con.close()
    print(f"\nacceptance rule: {a.images:,} images, {n_ver:,} verdicts, median of {a.repeats} "
          f"(machine: {os.cpu_count()}-core CPU VM, no GPU)")
    print(f"{'query':<42} {'inline / plain s':>17} {'store view s':>13} {'ratio':>7}")
    for label, tb, to in rows:
        print(f"{label:<42} {tb:>17.3f} {to:>13.3f} {to / tb:>6.2f}×")
    label, tb, to = rows[1]
    record("bench_acceptance", f"{label}, {a.images:,} images", to, "s", "inline rule", to / tb)


if __name__ == "__main__":
    main()
