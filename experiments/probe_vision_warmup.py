"""Probe: does a vision warm-up ("stage 0", the role SigLIP plays for VILA) let round 0 read the image?

Stage 0 trains the tiny model from scratch on short visual QA (color / shape / size / count / position / OCR)
about a separate stream of synthetic images — never the pretraining, SFT or eval images. Round 0 then runs the
usual align → pretrain (alt-text) → SFT recipe starting from that checkpoint (`train_vlm(init_from=...)`),
and is compared with round 0 from random weights on the same held-out images. Prints a table.

    python experiments/probe_vision_warmup.py --n 4000 --warmup-images 3000 --warmup-epochs 4
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_train import manifest_samples  # noqa: E402

from curator.world.grade import grade_alt_text, grade_captions  # noqa: E402
from curator.world.synthetic import WorldConfig, generate_world, make_vqa, synthetic_item  # noqa: E402
from vila2_model.data import Sample, load_conversations, texts_of  # noqa: E402
from vila2_model.generate import Generator  # noqa: E402
from vila2_model.train import train_vlm  # noqa: E402


def warmup_samples(n: int, seed: int, cfg: WorldConfig) -> list[Sample]:
    out = []
    for i in range(n):
        png, _, meta, rng = synthetic_item(i, seed, cfg, stream="vision-warmup")
        qa = make_vqa(rng, meta, cfg)
        conv = []
        for k, q in enumerate(rng.sample(qa, min(3, len(qa)))):
            conv += [{"from": "human", "value": ("<image>\n" if k == 0 else "") + q["question"]},
                     {"from": "gpt", "value": q["answer"]}]
        out.append(Sample(Image.open(io.BytesIO(png)).convert("RGB"), conv, f"w{i}"))
    return out


def evaluate(ckpt: str, items: list, world: Path) -> dict:
    g = Generator(ckpt)
    ims = [Image.open(world / "eval" / it["image"]).convert("RGB") for it in items]
    outs = g.generate(ims, ["Describe the image in details."] * len(ims), max_new_tokens=128)
    m = grade_captions({it["id"]: o.text for it, o in zip(items, outs)}, items)
    return {"P": m["caption_precision"], "R": m["caption_recall"], "PxR": m["caption_p_x_r"],
            "distinct": len({o.text for o in outs}) / len(outs), "example": outs[0].text[:120]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="experiments/out/vision_warmup")
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--warmup-images", type=int, default=3000)
    ap.add_argument("--warmup-epochs", type=float, default=4.0)
    ap.add_argument("--eval", type=int, default=100)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--freeze-vision-in-pretrain", action="store_true",
                    help="keep the warmed-up vision tower frozen in stage 2 (as VILA keeps SigLIP frozen)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    world = out / "world"
    cfg = WorldConfig(n_eval=a.eval)
    if not (world / "world.json").is_file():
        generate_world(world, n_pretrain=a.n, seed=0, cfg=cfg)
    pre = manifest_samples(world / "pretrain" / "manifest.jsonl")
    sft = load_conversations(world / "sft" / "data.json")
    items = json.loads((world / "eval" / "eval.json").read_text())
    rows = [("alt-text", {**{k: v for k, v in zip(("P", "R", "PxR"), [grade_alt_text(items)[f"caption_{k}"]
                                                                      for k in ("precision", "recall", "p_x_r")])},
                          "distinct": float("nan"), "seconds": 0.0})]
    t0 = time.time()
    warm = warmup_samples(a.warmup_images, 0, cfg)
    w = train_vlm(out / "stage0", [], warm, epochs_align=0, epochs_pretrain=0, epochs_sft=a.warmup_epochs,
                  tokenizer_texts=texts_of(pre) + texts_of(sft), progress=False, resume=False)
    t_w = time.time() - t0
    t0 = time.time()
    r = train_vlm(out / "round0-warm", pre, sft, init_from=w["sft"], progress=False, resume=False,
                  train_vision_in_pretrain=not a.freeze_vision_in_pretrain)
    rows.append(("round 0 from the stage-0 checkpoint", {**evaluate(r["sft"], items, world),
                                                        "seconds": t_w + time.time() - t0}))
    if not a.skip_baseline:
        t0 = time.time()
        b = train_vlm(out / "round0-scratch", pre, sft, progress=False, resume=False)
        rows.append(("round 0 from random weights", {**evaluate(b["sft"], items, world), "seconds": time.time() - t0}))
    print(f"{'captions on ' + str(len(items)) + ' held-out images':<40}{'precision':>10}{'recall':>8}{'P×R':>8}"
          f"{'distinct':>10}{'train s':>9}")
    for name, m in rows:
        print(f"{name:<40}{m['P']:>10.3f}{m['R']:>8.3f}{m['PxR']:>8.3f}{m['distinct']:>10.2f}{m['seconds']:>9.0f}")
    for name, m in rows[1:]:
        print(f"  {name}: {m['example']!r}")


if __name__ == "__main__":
    main()
