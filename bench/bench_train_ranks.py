"""Training throughput on 1 vs N data-parallel processes (DDP over gloo, and DeepSpeed ZeRO-2/3 on DeepSpeed's
CPU accelerator), the same global batch and data, in one run. Samples/s is the stage's own figure (its steps
only: process start, data encoding and checkpoint writing are left out; `wall s` has everything).

    python bench/bench_train_ranks.py                      # tiny preset, 512 toy samples, batch 32, nproc 1 and 2
    python bench/bench_train_ranks.py --preset small --n 256 --zero
    python bench/bench_train_ranks.py --preset tiny72 --threads 2   # the baseline: one process, both cores

Every process runs one thread (a second intra-op thread spins against other jobs on a shared 2-core machine
and was ~10x slower, see tests/conftest.py), so 2 processes use 2 cores where the baseline uses 1.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import torch
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from model_toy import caption, toy_items  # noqa: E402
from summary import record  # noqa: E402  (bench/ is sys.path[0])
from vila2_model.data import Sample  # noqa: E402
from vila2_model.train import train_vlm  # noqa: E402


def samples(n: int) -> list[Sample]:
    return [Sample(im, [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": caption(*t)}], str(k))
            for k, im, t in toy_items(n, seed=0, size=64)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--zero", action="store_true", help="also DeepSpeed ZeRO-2 and ZeRO-3 on N processes")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of the one-process baseline")
    a = ap.parse_args()
    data = samples(a.n)
    t1 = str(a.threads)
    runs = [(f"1 process, {t1} thread{'s' if a.threads > 1 else ''}", 1, None, t1),
            (f"{a.nproc} processes DDP, 1 thread each", a.nproc, None, "1")]
    if a.zero:
        for z in (2, 3):
            runs.append((f"{a.nproc} processes ZeRO-{z}", a.nproc,
                         {"zero_optimization": {"stage": z}, "optimizer": {"type": "AdamW", "params": {"torch_adam": True}},
                          "bf16": {"enabled": False}}, "1"))
    print(f"# {a.preset}, {a.n} samples, global batch {a.batch_size}, 1 pretraining epoch; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(f"{'run':<34} {'samples/s':>10} {'wall s':>8} {'ratio':>6}")
    base = None
    for name, n, ds, threads in runs:
        os.environ["OMP_NUM_THREADS"] = threads    # for the launched processes
        torch.set_num_threads(int(threads))         # for the one-process run, in this process
        with tempfile.TemporaryDirectory() as d:
            t = time.time()
            out = train_vlm(Path(d) / "r", data, data[:8], preset=a.preset, epochs_align=0, epochs_pretrain=1,
                            epochs_sft=0, batch_size=a.batch_size, nproc=n, deepspeed_config=ds, progress=False,
                            resume=False)
            wall = time.time() - t
            sps = json.loads((Path(out["pretrain"]) / "vila2_train.json").read_text())["samples_per_s"]
        base = base or sps
        print(f"{name:<34} {sps:>10.1f} {wall:>8.1f} {sps / base:>6.2f}")
        record("train_ranks", name, sps, "samples/s", "1 process", sps / base)


if __name__ == "__main__":
    main()
