"""Probe: `make demo`'s loop (world, recipe, model, the grounding specialist) at another stage-2 budget, to see
whether the specialist round keeps its base round's caption P×R once the rounds are trained near their plateau.

    python experiments/specialist_budget.py --out OUT --seed 0 --epochs 16 --rounds 1 [--from DEMO_OUT]

--from copies a finished demo's world and vision foundation (same seed) instead of rebuilding them. One process,
`--threads` threads; the specialist gate is off (the specialist round is trained whatever its gain, so that it
can be graded). The demo's own summary is printed; the rows are in OUT/store (runs, metrics) and OUT/report.html.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pipelines.demo as demo  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=float, required=True, help="stage-2 epochs of every generalist round")
    ap.add_argument("--rounds", type=int, default=1, help="self-augment rounds before the specialists")
    ap.add_argument("--ft-epochs", type=float, default=None, help="specialist fine-tune epochs (default: the demo's)")
    ap.add_argument("--from", dest="src", default=None, help="a finished demo of the same seed to copy world and "
                                                             "foundation from")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    if a.src:
        for d in ("world", "foundation"):
            if not (out / d).exists():
                shutil.copytree(Path(a.src) / d, out / d)
    base = demo.SIZES["default"]
    ft = replace(base.finetune, min_skill_gain=None)
    if a.ft_epochs:
        ft = replace(ft, epochs=a.ft_epochs)
    demo.SIZES["probe"] = replace(base, rounds=a.rounds, train=replace(base.train, epochs_pretrain=a.epochs),
                                  finetune=ft)
    demo.PROCS = 1
    print(" ".join(sys.argv), flush=True)
    demo.run_demo(out, "probe", a.seed)


if __name__ == "__main__":
    main()
