"""Probe: retrain a generalist from scratch on one recorded build at `make demo`'s recipe, with a chosen seed and
stage-2 epochs, and grade it on the demo's eval set. Separates a round's data from its training noise (another
seed on the same build) and from its budget (more stage-2 epochs).

    python experiments/retrain_build.py --demo DEMO_OUT --build DEMO_OUT/builds/round-2-concat --out OUT \
        --seed 1 --epochs-pretrain 7

One process, one thread; prints one JSON line (also appended to OUT/../retrain_results.jsonl).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from curator.world.grade import grade_eval  # noqa: E402
from pipelines.demo import SIZES  # noqa: E402
from vila2_model.evaluate import predict  # noqa: E402
from vila2_model.train import train_vlm  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", required=True, help="a `make demo` output directory (world, foundation)")
    ap.add_argument("--build", required=True, help="a build directory of that demo's store")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs-pretrain", type=float, default=None, help="stage-2 epochs (default: the demo's)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    size = SIZES["default"]
    t = replace(size.train, epochs_pretrain=a.epochs_pretrain or size.train.epochs_pretrain)
    demo = Path(a.demo)
    t0 = time.time()
    paths = train_vlm(a.out, a.build, str(demo / "world" / "sft" / "data.json"), preset=size.preset, seed=a.seed,
                      epochs_align=t.epochs_align, epochs_pretrain=t.epochs_pretrain, epochs_sft=t.epochs_sft,
                      freeze_vision=t.freeze_vision, sft_in_pretrain=t.sft_in_pretrain,
                      init_from=str(demo / "foundation" / "vision"), progress=False)
    ev = demo / "world" / "eval" / "eval.json"
    items = json.loads(ev.read_text())
    m = grade_eval(predict(paths["sft"], ev, grounding_prompt=items[0]["grounding_prompt"]), items)
    row = {"cmd": " ".join(sys.argv), "build": a.build, "seed": a.seed, "epochs_pretrain": t.epochs_pretrain,
           "caption_p_x_r": m["caption_p_x_r"], "caption_precision": m["caption_precision"],
           "caption_recall": m["caption_recall"], "vqa_acc": m["vqa_acc"], "wall_s": round(time.time() - t0)}
    with open(Path(a.out).resolve().parent / "retrain_results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
