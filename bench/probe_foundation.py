"""Probe: where does round 0 stop reading the image, and does a visual foundation + gentle recipe keep it?

Measures the *image gap* after every stage: the answer loss with each sample's own image minus the loss with
the images shuffled across samples (nats/token; 0 = the model ignores the image). Variants:

  foundation   tiny model trained from scratch on dense visual QA about a separate image stream (the role
               pretrained SigLIP + LLM weights play for VILA; every round starts from it)
  round 0      align -> pretrain -> SFT on the world, from the foundation, with the given recipe

    python bench/probe_foundation.py --name gentle --recipe '{"lr_pretrain": 1e-4, "lr_sft": 2e-4}'
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
from bench_train import manifest_samples  # noqa: E402
from probe_round0 import merged_preset  # noqa: E402

from curator.grade import grade_alt_text, grade_eval  # noqa: E402
from curator.synthetic import WorldConfig, generate_world, make_vqa, synthetic_item  # noqa: E402
from vila2_model.data import Sample, collate, encode_samples, load_conversations, texts_of  # noqa: E402
from vila2_model.evaluate import predict  # noqa: E402
from vila2_model.train import load_recipe, train_vlm  # noqa: E402


def vqa_samples(n: int, cfg: WorldConfig, stream: str = "foundation") -> list[Sample]:
    out = []
    for i in range(n):
        png, _, meta, rng = synthetic_item(i, 0, cfg, stream=stream)
        conv = []
        for k, q in enumerate(make_vqa(rng, meta, cfg)):
            conv += [{"from": "human", "value": ("<image>\n" if k == 0 else "") + q["question"]},
                     {"from": "gpt", "value": q["answer"]}]
        out.append(Sample(Image.open(io.BytesIO(png)).convert("RGB"), conv, f"f{i}"))
    return out


def coarse_samples(n: int, cfg: WorldConfig, stream: str = "coarse", sides: tuple = (0.45, 0.6)) -> list[Sample]:
    """Coarse visual warm-up: one large object (45-60% of the side) per image, color and shape questions.
    A from-scratch tiny ViT does not pick up the world's small objects, but it does pick up large ones, and
    what it learns there transfers (bench/probe_visual_signal.py)."""
    import random as _r

    from curator.synthetic import render
    out = []
    size = cfg.image_size
    for i in range(n):
        r = _r.Random(f"{stream}-{i}")
        side = max(4, int(size * r.uniform(*sides)))
        x, y = r.randrange(0, size - side + 1), r.randrange(0, size - side + 1)
        o = {"shape": r.choice(cfg.shapes), "color": r.choice(cfg.colors), "box": [x, y, x + side, y + side]}
        meta = {"width": size, "height": size, "background": r.randint(*cfg.background_gray), "objects": [o]}
        conv = [{"from": "human", "value": "<image>\nWhat color is the object?"}, {"from": "gpt", "value": o["color"]},
                {"from": "human", "value": "What shape is the object?"}, {"from": "gpt", "value": o["shape"]}]
        out.append(Sample(Image.open(io.BytesIO(render(meta))).convert("RGB"), conv, f"c{i}"))
    return out


def image_gap(ckpt: str, samples: list[Sample]) -> float:
    from transformers import AutoModelForImageTextToText, AutoProcessor
    proc = AutoProcessor.from_pretrained(ckpt)
    m = AutoModelForImageTextToText.from_pretrained(ckpt).eval()
    enc = encode_samples(proc, samples)
    n = len(samples)
    shuf = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()

    def loss(perm):
        tot, cnt = 0.0, 0
        for k in range(0, n, 32):
            idx = list(range(k, min(n, k + 32)))
            b = collate(enc, idx, proc.tokenizer.pad_token_id)
            b["pixel_values"] = enc.pixel_values[[perm[i] for i in idx]]
            lab = b.pop("labels")[:, 1:]
            with torch.no_grad():
                lg = m(**b).logits[:, :-1]
            keep = lab != -100
            tot += torch.nn.functional.cross_entropy(lg[keep].float(), lab[keep], reduction="sum").item()
            cnt += int(keep.sum())
        return tot / cnt
    return loss(shuf) - loss(list(range(n)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--world", default='{"image_size": 72}')
    ap.add_argument("--preset", default='{"image_size": 72, "vision": {"patch_size": 12}}')
    ap.add_argument("--foundation-images", type=int, default=3000)
    ap.add_argument("--foundation-epochs", type=float, default=4.0)
    ap.add_argument("--foundation-lr", type=float, default=1e-3)
    ap.add_argument("--coarse-images", type=int, default=0, help="coarse warm-up images before the world VQA")
    ap.add_argument("--coarse-epochs", type=float, default=4.0)
    ap.add_argument("--coarse-schedule", default="0.45-0.6",
                    help="comma-separated object side ranges (fractions of the image side), trained in order")
    ap.add_argument("--recipe", default="{}")
    ap.add_argument("--foundation-only", action="store_true")
    ap.add_argument("--product", action="store_true",
                    help="build the foundation with pipelines.foundation.build_foundation (shuffled turns)")
    ap.add_argument("--mix-vqa", type=int, default=0,
                    help="add this many foundation-stream world VQA samples to the round's SFT set (VILA's SFT blend)")
    ap.add_argument("--eval", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/out/probe_foundation")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    wcfg = json.loads(a.world)
    cfg = WorldConfig(**{**wcfg, "n_eval": a.eval})
    import hashlib
    world = out / ("world-" + hashlib.sha1(json.dumps([wcfg, a.n, a.eval], sort_keys=True).encode()).hexdigest()[:10])
    if not (world / "world.json").is_file():
        generate_world(world, n_pretrain=a.n, seed=0, cfg=cfg)
    pre = manifest_samples(world / "pretrain" / "manifest.jsonl")
    sft = load_conversations(world / "sft" / "data.json")
    preset = merged_preset(json.loads(a.preset))
    probe = vqa_samples(128, cfg, stream="gap-probe")
    fdir = out / (f"foundation-{a.foundation_images}-{a.foundation_epochs}-{a.foundation_lr}-c{a.coarse_images}-"
                  f"{a.coarse_epochs}-{a.coarse_schedule}-{hashlib.sha1(a.preset.encode()).hexdigest()[:6]}")
    t0 = time.time()
    if a.product:
        from pipelines.foundation import FoundationArgs, build_foundation
        fa = FoundationArgs(schedule=tuple(tuple(float(v) for v in r.split("-")) for r in a.coarse_schedule.split(",")),
                            coarse_images=a.coarse_images, coarse_epochs=a.coarse_epochs,
                            vqa_images=a.foundation_images, vqa_epochs=a.foundation_epochs, lr=a.foundation_lr)
        fdir = Path(build_foundation(out / "product-foundation", cfg, preset, texts_of(pre) + texts_of(sft), fa)).parent
    if not (fdir / "sft" / "vila2_train.json").is_file():
        init = None
        for k, rng_s in enumerate(a.coarse_schedule.split(",") if a.coarse_images else []):
            sides = tuple(float(v) for v in rng_s.split("-"))
            cs = coarse_samples(a.coarse_images, cfg, stream=f"coarse{k}", sides=sides)
            c = train_vlm(fdir / f"coarse{k}", [], cs, preset=preset, epochs_align=0, epochs_pretrain=0,
                          epochs_sft=a.coarse_epochs, lr_sft=a.foundation_lr, init_from=init,
                          tokenizer_texts=texts_of(pre) + texts_of(sft) + texts_of(cs), progress=False)
            init = c["sft"]
            print(f"coarse warm-up {sides}: {time.time() - t0:.0f} s, image gap on world VQA "
                  f"{image_gap(init, probe):.3f} (on its own kind: "
                  f"{image_gap(init, coarse_samples(128, cfg, 'coarse-probe', sides)):.3f})", flush=True)
        fs = vqa_samples(a.foundation_images, cfg)
        train_vlm(fdir, [], fs, preset=preset, epochs_align=0, epochs_pretrain=0, epochs_sft=a.foundation_epochs,
                  lr_sft=a.foundation_lr, tokenizer_texts=texts_of(pre) + texts_of(sft), progress=False, resume=True,
                  init_from=init)
    t_f = time.time() - t0
    print(f"foundation: {t_f:.0f} s, image gap {image_gap(str(fdir / 'sft'), probe):.3f}", flush=True)
    items = json.loads((world / "eval" / "eval.json").read_text())
    fm = grade_eval(predict(fdir / "sft", world / "eval" / "eval.json", grounding_prompt=None, max_new_tokens=8), items)
    print("foundation VQA on the eval set:", round(fm.get("vqa_acc") or 0, 3),
          {k[8:]: round(v, 3) for k, v in fm.items() if k.startswith("vqa_acc_")}, flush=True)
    if a.foundation_only:
        return
    recipe = {**load_recipe("round0-cpu"), **json.loads(a.recipe)}
    recipe.pop("preset", None)
    t0 = time.time()
    if a.mix_vqa:
        from pipelines.foundation import world_vqa_samples
        sft = sft + world_vqa_samples(a.mix_vqa, cfg, stream="round-vqa")
    ck = train_vlm(out / a.name, pre, sft, init_from=fdir / "sft", progress=False, resume=False, **recipe)
    t_r = time.time() - t0
    gaps = {s: round(image_gap(c, probe), 3) for s, c in ck.items()}
    print(f"round 0: {t_r:.0f} s, image gap per stage {gaps}", flush=True)
    items = json.loads((world / "eval" / "eval.json").read_text())
    pred = predict(ck["sft"], world / "eval" / "eval.json", grounding_prompt=None)
    m = grade_eval(pred, items)
    caps = list(pred["captions"].values())
    row = {"name": a.name, "recipe": json.loads(a.recipe), "foundation_s": round(t_f), "round0_s": round(t_r),
           "gaps": gaps, "P": m["caption_precision"], "R": m["caption_recall"], "PxR": m["caption_p_x_r"],
           "alt_PxR": grade_alt_text(items)["caption_p_x_r"], "distinct": len(set(caps)) / len(caps),
           "vqa_acc": m.get("vqa_acc"), "vqa": {k[8:]: round(v, 3) for k, v in m.items() if k.startswith("vqa_acc_")}}
    with open(out.parent / "probe_foundation.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=1))
    for c in caps[:4]:
        print("  ", c[:200])


if __name__ == "__main__":
    main()
