"""One line per benchmark headline for `make bench`'s table (bench/run_all.py).

A benchmark calls `record(...)` next to the table it prints; when BENCH_SUMMARY names a file (run_all sets it),
the line is appended there as JSON. `ratio` is value ÷ the baseline's value in the same unit, both
measured in the same run.
"""
from __future__ import annotations

import json
import os


def record(bench: str, measure: str, value: float, unit: str, baseline: str = "", ratio: float | None = None) -> None:
    path = os.environ.get("BENCH_SUMMARY")
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"bench": bench, "measure": measure, "value": value, "unit": unit,
                            "baseline": baseline, "ratio": ratio}) + "\n")
