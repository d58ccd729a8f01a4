"""Probe: where does round 0 stop reading the image, and does a visual foundation + gentle recipe keep it?

Measures the *image gap* after every stage: the answer loss with each sample's own image minus the loss with
the images shuffled across samples (nats/token; 0 = the model ignores the image). Variants:

  foundation   pipelines.foundation.build_foundation: large single objects first (--coarse-schedule), then the
               world's visual questions, on a separate image stream (the role pretrained SigLIP + LLM weights
               play for VILA); cached under --out by its arguments
  round 0      align -> pretrain -> SFT on the world, from the foundation, with the given recipe; --mix-vqa keeps
               visual QA in the round's data

    python bench/probe_foundation.py --name mix --threads 2 --coarse-images 1000 --coarse-epochs 6 \
        --coarse-schedule 0.45-0.6,0.3-0.45,0.2-0.3 --foundation-images 2000 --foundation-epochs 3 \
        --preset '{"image_size": 72, "vision": {"patch_size": 12}, "vision_pos_init": "sincos"}' --mix-vqa 1000 \
        --recipe '{"lr_pretrain": 1e-4, "lr_sft": 1e-3, "epochs_sft": 6, "train_vision_in_pretrain": false,
                   "sft_in_pretrain": 1.0}'

Until commit e54ba9a this probe built the foundation with its own copy of the sample generators (same questions
and fixed turn order, differently seeded coarse images); docs/LOG.md's "probe" foundation rows come from that.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import manifest_samples  # noqa: E402
from probe_round0 import merged_preset  # noqa: E402

from curator.grade import grade_alt_text, grade_eval  # noqa: E402
from curator.synthetic import WorldConfig, generate_world  # noqa: E402
from pipelines.foundation import FoundationArgs, build_foundation, coarse_samples, world_vqa_samples  # noqa: E402
from vila2_model.data import Sample, collate, encode_samples, load_conversations, texts_of  # noqa: E402
from vila2_model.evaluate import predict  # noqa: E402
from vila2_model.train import load_recipe, train_vlm  # noqa: E402


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
    world = out / ("world-" + hashlib.sha1(json.dumps([wcfg, a.n, a.eval], sort_keys=True).encode()).hexdigest()[:10])
    if not (world / "world.json").is_file():
        generate_world(world, n_pretrain=a.n, seed=0, cfg=cfg)
    pre = manifest_samples(world / "pretrain" / "manifest.jsonl")
    sft = load_conversations(world / "sft" / "data.json")
    preset = merged_preset(json.loads(a.preset))
    probe = world_vqa_samples(128, cfg, stream="gap-probe", shuffle_turns=False)
    fa = FoundationArgs(schedule=tuple(tuple(float(v) for v in r.split("-")) for r in a.coarse_schedule.split(","))
                        if a.coarse_images else (), coarse_images=a.coarse_images, coarse_epochs=a.coarse_epochs,
                        vqa_images=a.foundation_images, vqa_epochs=a.foundation_epochs, lr=a.foundation_lr)
    fkey = json.dumps([asdict(fa), preset], sort_keys=True, default=str)
    fbase = out / ("foundation-" + hashlib.sha1(fkey.encode()).hexdigest()[:10])
    t0 = time.time()
    fdir = Path(build_foundation(fbase, cfg, preset, texts_of(pre) + texts_of(sft), fa)).parent
    for k, sides in enumerate(fa.schedule):
        ck = str(fbase / f"coarse{k}" / "sft")
        own = coarse_samples(128, cfg, tuple(sides), "coarse-probe")
        print(f"after coarse phase {sides}: image gap on world VQA {image_gap(ck, probe):.3f} "
              f"(on its own kind: {image_gap(ck, own):.3f})", flush=True)
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
