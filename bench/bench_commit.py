"""Commit cost vs batch size: caption rows/s appended to a real Lance store at batch 1, 16, 256, 4096
(each batch = one insert-only merge commit, the way recaption writes). Why recaption commits per batch,
not per image, and why the store is compacted between rounds.

    .venv/bin/python bench/bench_commit.py
"""
from __future__ import annotations

import tempfile
import time

from curator import schema
from curator.store import Store
from summary import record  # noqa: E402  (bench/ is sys.path[0])


def rows(start: int, n: int) -> list[dict]:
    out = []
    for k in range(start, start + n):
        iid = schema.sha256_hex(str(k))
        out.append({"caption_id": schema.caption_key(iid, 1, "self", "c" * 64, "long-v1"), "image_id": iid, "round": 1,
                    "kind": "self", "text": f"A red circle number {k} is at the top left of the image. " * 4,
                    "captioner": "c" * 64, "prompt_id": "long-v1", "prompt": "Describe the image in details.",
                    "sampling": "{}", "sample_idx": 0, "finish_reason": "eos", "n_tokens": 60,
                    "parent_caption_id": "", "transform": "", "run_id": "bench"})
    return out


def main():
    plan = {1: 60, 16: 40, 256: 20, 4096: 5}   # batch size -> number of commits
    print("| batch size | commits | rows | seconds | rows/s | ms/commit |")
    print("|---|---|---|---|---|---|")
    per_row = {}
    for bs, commits in plan.items():
        store = Store(tempfile.mkdtemp(), create=True)
        batches = [rows(k * bs, bs) for k in range(commits)]
        t0 = time.perf_counter()
        for b in batches:
            store.add_captions(b, run_id="bench")
        dt = time.perf_counter() - t0
        n = bs * commits
        print(f"| {bs} | {commits} | {n} | {dt:.2f} | {n / dt:,.0f} | {1000 * dt / commits:.1f} |")
        per_row[bs] = n / dt
    record("bench_commit", "caption rows per second at 4,096 rows per commit", per_row[4096], "rows/s",
           "1 row per commit", per_row[4096] / per_row[1])


if __name__ == "__main__":
    main()
