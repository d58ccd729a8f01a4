"""Probe: can the from-scratch tiny VLM read an object's color at all, and how big must the object be?

The simplest visual task there is — one object per image, "What color is the object?" → one of 8 colors —
trained with a plain AdamW loop (lr 1e-3, batch 32) on four image kinds, graded on 128 held-out images:

  fill        the whole image painted in the object's color          (strongest possible signal)
  square36    a 36 px square (half the image side) at a random place, white background
  world       the synthetic world's own single-object images (objects 11-30% of the side, gray background)
  curriculum  `square36` for the first --curriculum steps, then `world`  (coarse -> fine)

Chance is 1/8. Prints a table; results append to experiments/out/probe_visual_signal.jsonl.

    python experiments/probe_visual_signal.py --steps 400 --threads 2
"""
from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_round0 import merged_preset  # noqa: E402

from curator.world.synthetic import COLOR_RGB, WorldConfig, synthetic_item  # noqa: E402
from vila2_model.data import Sample, collate, encode_samples  # noqa: E402
from vila2_model.model import build_model  # noqa: E402
from vila2_model.tokenizer import build_processor  # noqa: E402

Q = "What color is the object?"


def images(kind: str, n: int, stream: str, size: int) -> list[tuple[Image.Image, str]]:
    cfg = WorldConfig(image_size=size, min_objects=1, max_objects=1, word_prob=0.0)
    out = []
    for i in range(n):
        png, _, meta, _ = synthetic_item(i, 0, cfg, stream=stream)
        color = meta["objects"][0]["color"]
        if kind == "world":
            im = Image.open(io.BytesIO(png)).convert("RGB")
        elif kind == "fill":
            im = Image.new("RGB", (size, size), tuple(COLOR_RGB[color]))
        else:  # square36
            side = size // 2
            r = random.Random(f"{stream}-{i}")
            x, y = r.randrange(0, size - side), r.randrange(0, size - side)
            im = Image.new("RGB", (size, size), (255, 255, 255))
            ImageDraw.Draw(im).rectangle([x, y, x + side - 1, y + side - 1], fill=tuple(COLOR_RGB[color]))
        out.append((im, color))
    return out


def as_samples(pairs) -> list[Sample]:
    return [Sample(im, [{"from": "human", "value": "<image>\n" + Q}, {"from": "gpt", "value": c}], str(k))
            for k, (im, c) in enumerate(pairs)]


def accuracy(model, proc, enc, n: int) -> float:
    """Greedy first answer token == the color's first token, teacher-forced (one forward pass)."""
    ok = 0
    model.eval()
    with torch.no_grad():
        for k in range(0, n, 32):
            idx = list(range(k, min(n, k + 32)))
            b = collate(enc, idx, proc.tokenizer.pad_token_id)
            lab = b.pop("labels")[:, 1:]
            lg = model(**b).logits[:, :-1]
            first = (lab != -100).float().argmax(1)
            rows = torch.arange(len(idx))
            ok += int((lg[rows, first].argmax(-1) == lab[rows, first]).sum())
    model.train()
    return ok / n


def run(kind: str, steps: int, curriculum: int, size: int, preset: dict, seed: int = 0) -> dict:
    train_kind = "world" if kind == "curriculum" else kind
    tr = as_samples(images(train_kind, 1000, "train", size))
    te = as_samples(images(train_kind, 128, "test", size))
    proc = build_processor([Q] + list(COLOR_RGB), None, preset)
    enc, enc_te = encode_samples(proc, tr), encode_samples(proc, te)
    enc_warm = encode_samples(proc, as_samples(images("square36", 1000, "warm", size))) if curriculum else None
    model = build_model(preset, proc, seed=seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    curve, learned_at, t0 = [], None, time.time()
    for step in range(steps):
        idx = random.Random(seed * 100003 + step).sample(range(1000), 32)
        b = collate(enc_warm if step < curriculum else enc, idx, proc.tokenizer.pad_token_id)
        lab = b.pop("labels")[:, 1:]
        lg = model(**b).logits[:, :-1]
        keep = lab != -100
        loss = torch.nn.functional.cross_entropy(lg[keep], lab[keep])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0:
            acc = accuracy(model, proc, enc_te, len(te))
            curve.append((step + 1, round(acc, 3)))
            if learned_at is None and acc >= 0.8:
                learned_at = step + 1
    return {"kind": kind, "steps": steps, "curriculum_steps": curriculum, "final_acc": curve[-1][1],
            "learned_at": learned_at, "curve": curve, "seconds": round(time.time() - t0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--curriculum", type=int, default=100, help="square36 steps before the world images")
    ap.add_argument("--kinds", default="fill,square36,world,curriculum")
    ap.add_argument("--size", type=int, default=72)
    ap.add_argument("--preset", default='{"image_size": 72, "vision": {"patch_size": 12}, "vision_pos_init": "sincos"}')
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    preset = merged_preset(json.loads(a.preset))
    rows = []
    for kind in a.kinds.split(","):
        r = run(kind, a.steps, a.curriculum if kind == "curriculum" else 0, a.size, preset)
        rows.append(r)
        with open(Path("experiments/out/probe_visual_signal.jsonl"), "a") as f:
            f.write(json.dumps({**r, "preset": json.loads(a.preset)}) + "\n")
        print(f"{kind}: acc {r['final_acc']:.3f} curve {r['curve']}", flush=True)
    print(f"\n{'images':<12}{'steps':>7}{'held-out color acc':>20}{'acc>=0.8 at step':>18}{'s':>6}   (chance 0.125)")
    for r in rows:
        print(f"{r['kind']:<12}{r['steps']:>7}{r['final_acc']:>20.3f}{str(r['learned_at'] or '-'):>18}{r['seconds']:>6}")


if __name__ == "__main__":
    main()
