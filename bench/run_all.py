"""`make bench`: run every benchmark in bench/ (each prints its own table), then one table of their headlines.

    python bench/run_all.py            # the benchmarks' default sizes (tens of minutes on 2 cores)
    python bench/run_all.py --small    # small sizes: a check that every benchmark runs (minutes)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Small sizes per benchmark (--small); the default run uses each benchmark's own defaults.
SMALL = {
    "bench_ingest.py": ["--n", "500"],
    "bench_build.py": ["--sizes", "2000,8000"],
    "bench_acceptance.py": ["--images", "20000"],
    "bench_sql.py": ["--images", "20000"],
    "bench_generate.py": ["--images", "16", "--naive-images", "4", "--repeats", "1"],
    "bench_recaption.py": ["--n", "16"],
    "bench_train.py": ["--presets", "micro", "--steps", "2"],
    "bench_filters.py": ["--small"],
    "bench_vllm.py": ["--small"],
    "bench_decode.py": ["--megapixels", "4", "--repeats", "1"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="small sizes: check that every benchmark runs")
    ap.add_argument("--only", default="", help="comma list of benchmark file names to run")
    a = ap.parse_args()
    benches = sorted(p.name for p in HERE.glob("bench_*.py"))
    if a.only:
        benches = [b for b in benches if b in a.only.split(",")]
    summary = Path(tempfile.mkstemp(suffix=".jsonl")[1])
    env = dict(os.environ, BENCH_SUMMARY=str(summary))
    status = {}
    for b in benches:
        print(f"\n=== {b}", flush=True)
        t = time.perf_counter()
        r = subprocess.run([sys.executable, str(HERE / b)] + (SMALL.get(b, []) if a.small else []), env=env)
        status[b] = ("ok" if r.returncode == 0 else f"exit {r.returncode}", time.perf_counter() - t)
    rows = [json.loads(line) for line in summary.read_text().splitlines() if line.strip()]
    summary.unlink()
    print(f"\n=== summary ({os.cpu_count()}-core machine; ratios against a baseline measured in the same run)")
    print(f"| benchmark | measure | value | unit | baseline | ratio |\n|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else ""
        print(f"| {r['bench']} | {r['measure']} | {r['value']:,.4g} | {r['unit']} | {r['baseline']} | {ratio} |")
    for b, (st, sec) in status.items():
        if st != "ok" or not any(r["bench"] == b.removesuffix(".py") for r in rows):
            print(f"| {b.removesuffix('.py')} | {st}, {sec:.0f} s | | | | |")
    return 0 if all(st == "ok" for st, _ in status.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
