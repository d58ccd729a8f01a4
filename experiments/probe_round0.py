"""Probe: round 0 on a synthetic world under one (world, preset, recipe) variant; prints one table row.

The question each run answers: do round-0 detailed captions beat the alt-text on held-out images
(caption precision × recall), and does the model read the image at all (distinct captions per image)?

    python experiments/probe_round0.py --name aligned --world '{"image_size": 72}' \
        --preset '{"image_size": 72, "vision": {"patch_size": 12}}' --recipe '{"epochs_sft": 8}'

--preset is a JSON object merged (one level deep) into the tiny preset; --world are WorldConfig fields;
--recipe are train_vlm arguments over the round0-cpu recipe. Results append to experiments/out/probe_round0.jsonl.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_train import manifest_samples  # noqa: E402

from curator.world.grade import grade_alt_text, grade_eval  # noqa: E402
from curator.world.synthetic import WorldConfig, generate_world  # noqa: E402
from vila2_model.data import load_conversations  # noqa: E402
from vila2_model.evaluate import predict  # noqa: E402
from vila2_model.presets import load_preset  # noqa: E402
from vila2_model.train import load_recipe, train_vlm  # noqa: E402


def merged_preset(over: dict, base: str = "tiny") -> dict:
    p = load_preset(base)
    for k, v in over.items():
        p[k] = {**p[k], **v} if isinstance(v, dict) and isinstance(p.get(k), dict) else v
    p["name"] = f"{base}+" + json.dumps(over, sort_keys=True) if over else base
    return p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--n", type=int, default=2000, help="pretraining images")
    ap.add_argument("--world", default="{}")
    ap.add_argument("--preset", default="{}")
    ap.add_argument("--base-preset", default="tiny")
    ap.add_argument("--recipe", default="{}")
    ap.add_argument("--eval", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mix-vqa", type=int, default=0, help="add N world-stream VQA samples to the SFT set")
    ap.add_argument("--out", default="experiments/out/probe_round0")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    wcfg = json.loads(a.world)
    cfg = WorldConfig(**{**wcfg, "n_eval": a.eval})
    world = Path(a.out) / ("world-" + hashlib.sha1(json.dumps([wcfg, a.n, a.eval], sort_keys=True).encode()).hexdigest()[:10])
    if not (world / "world.json").is_file():
        generate_world(world, n_pretrain=a.n, seed=0, cfg=cfg)
    pre = manifest_samples(world / "pretrain" / "manifest.jsonl")
    sft = load_conversations(world / "sft" / "data.json")
    if a.mix_vqa:
        from pipelines.foundation import world_vqa_samples
        sft = sft + world_vqa_samples(a.mix_vqa, cfg, stream="mix-vqa")
    recipe = {**load_recipe("round0-cpu"), **json.loads(a.recipe), "preset": merged_preset(json.loads(a.preset),
                                                                                          a.base_preset)}
    t0 = time.time()
    ck = train_vlm(Path(a.out) / a.name, pre, sft, progress=False, resume=False, **recipe)
    train_s = time.time() - t0
    items = json.loads((world / "eval" / "eval.json").read_text())
    pred = predict(ck["sft"], world / "eval" / "eval.json", grounding_prompt=None)
    m = grade_eval(pred, items)
    alt = grade_alt_text(items)
    caps = list(pred["captions"].values())
    row = {"name": a.name, "world": wcfg, "preset": json.loads(a.preset), "recipe": json.loads(a.recipe), "mix_vqa": a.mix_vqa,
           "n_pretrain": len(pre), "n_sft": len(sft), "train_s": round(train_s),
           "P": m["caption_precision"], "R": m["caption_recall"], "PxR": m["caption_p_x_r"],
           "alt_PxR": alt["caption_p_x_r"], "distinct": len(set(caps)) / len(caps),
           "vqa": {k[8:]: round(v, 3) for k, v in m.items() if k.startswith("vqa_acc_")},
           "vqa_acc": m.get("vqa_acc"), "examples": caps[:3]}
    with open(Path(a.out).parent / "probe_round0.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{'variant':<24}{'P':>7}{'R':>7}{'P×R':>7}{'alt P×R':>9}{'distinct':>10}{'VQA':>7}{'train s':>9}")
    print(f"{a.name:<24}{row['P']:>7.3f}{row['R']:>7.3f}{row['PxR']:>7.3f}{row['alt_PxR']:>9.3f}"
          f"{row['distinct']:>10.2f}{row['vqa_acc'] or 0:>7.3f}{train_s:>9.0f}")
    print("vqa per skill:", row["vqa"])
    for c in caps[:3]:
        print("  ", c[:160])


if __name__ == "__main__":
    main()
