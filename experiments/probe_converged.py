"""Probe: is the loop's gain data or compute once each round is trained longer?

The `--full` demo's ablation found round 0 trained with 3× the pretraining epochs (P×R 0.406) beats round 1
(0.295) and round 2 (0.373): the per-round recipe is undertrained. This probe reruns the comparison with every
round at `--epochs` pretraining epochs, on a finished demo directory's world and foundation, in a new store:

    python experiments/probe_converged.py --demo demo_out --out experiments/out/converged --epochs 6 --what loop
    python experiments/probe_converged.py --demo demo_out --out experiments/out/converged-ctl --epochs 12 --what control

`loop` = round 0 + one self-augment round (concat); `control` = round 0 only. Prints P×R per round.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from curator.ingest import ingest  # noqa: E402
from curator.store import Store  # noqa: E402
from pipelines.demo import _RECIPE, SIZES, loop_config  # noqa: E402
from pipelines.self_augment import run_self_augment  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=float, required=True)
    ap.add_argument("--what", choices=("loop", "control"), required=True)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    demo, out = Path(a.demo).resolve(), Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "foundation").exists():
        shutil.copytree(demo / "foundation", out / "foundation")
    w = demo / "world"
    store = Store(str(out / "store"), create=True)
    ingest(store, manifest=str(w / "pretrain" / "manifest.jsonl"))
    # the recorded runs used the trend run's recipe (one SFT copy in stage 2), the `full` size of that time
    cfg = loop_config(replace(SIZES["full"], train=_RECIPE), 0, str(out / "foundation" / "vision"))
    cfg = replace(cfg, rounds=1 if a.what == "loop" else 0, min_gain=None,
                  train=replace(cfg.train, epochs_pretrain=a.epochs))
    res = run_self_augment(store, out, str(w / "sft" / "data.json"), str(w / "eval" / "eval.json"), cfg)
    rows = [{"what": a.what, "epochs_pretrain": a.epochs, "round": r["round"],
             **{k: r["metrics"].get(k) for k in ("caption_precision", "caption_recall", "caption_p_x_r",
                                                  "caption_length_words", "vqa_acc")}} for r in res["rounds"]]
    with open(out.parent / "probe_converged.jsonl", "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
