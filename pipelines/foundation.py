"""The visual foundation: the from-scratch stand-in for VILA's pretrained SigLIP + LLM.

VILA never trains its vision tower from random weights: every round starts from pretrained SigLIP and Llama
and re-learns only the projector and the multimodal stages. Our tiny model has nothing pretrained, and measured
on this machine (docs/LOG.md) it does not learn to see the world's small objects from round-0 data at all. It
does learn from large objects, and what it learns there transfers to smaller ones. So the foundation is trained
once per (world config, preset, seed), coarse to fine, on a *separate* stream of synthetic images (never the
pretraining, SFT or eval images):

  phase k (one per schedule entry): one object per image whose side is a fraction of the image in the given
      range (large first), gray background; two turns: its color, its shape
  last phase: the world's own kind of images (separate stream), every visual question of make_vqa, turns shuffled

Each round's `train_vlm(init_from=foundation)` then re-runs align → pretrain → SFT from it.
"""
from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from curator.errors import InputError
from curator.synthetic import WorldConfig, make_vqa, render, synthetic_item
from vila2_model.data import Sample


@dataclass
class FoundationArgs:
    schedule: tuple = ((0.45, 0.6), (0.3, 0.45), (0.2, 0.3))   # object side / image side per coarse phase
    coarse_images: int = 1000        # images per coarse phase
    coarse_epochs: float = 6.0
    vqa_images: int = 2000           # world-like images in the last phase
    vqa_epochs: float = 3.0
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    max_steps: int | None = None     # per phase; toy runs in tests


def coarse_samples(n: int, cfg: WorldConfig, sides: tuple, stream: str, seed: int = 0) -> list[Sample]:
    """One object per image, side drawn from `sides` (fractions of the image side); color + shape questions."""
    size, out = cfg.image_size, []
    for i in range(n):
        r = random.Random(f"{seed}-{stream}-{i}")
        side = max(4, int(size * r.uniform(*sides)))
        x, y = r.randrange(0, size - side + 1), r.randrange(0, size - side + 1)
        o = {"shape": r.choice(cfg.shapes), "color": r.choice(cfg.colors), "box": [x, y, x + side, y + side]}
        meta = {"width": size, "height": size, "background": r.randint(*cfg.background_gray), "objects": [o]}
        qa = [("What color is the object?", o["color"]), ("What shape is the object?", o["shape"])]
        r.shuffle(qa)
        conv = []
        for k, (q, a) in enumerate(qa):
            conv += [{"from": "human", "value": ("<image>\n" if k == 0 else "") + q}, {"from": "gpt", "value": a}]
        out.append(Sample(Image.open(io.BytesIO(render(meta))).convert("RGB"), conv, f"{stream}-{i}"))
    return out


def world_vqa_samples(n: int, cfg: WorldConfig, stream: str = "foundation", seed: int = 0) -> list[Sample]:
    """The world's kind of images from a separate stream; every visual question, in shuffled order."""
    out = []
    for i in range(n):
        png, _, meta, rng = synthetic_item(i, seed, cfg, stream=stream)
        qa = make_vqa(rng, meta, cfg)
        rng.shuffle(qa)
        conv = []
        for k, q in enumerate(qa):
            conv += [{"from": "human", "value": ("<image>\n" if k == 0 else "") + q["question"]},
                     {"from": "gpt", "value": q["answer"]}]
        out.append(Sample(Image.open(io.BytesIO(png)).convert("RGB"), conv, f"{stream}-{i}"))
    return out


def build_foundation(out_dir: str | Path, cfg: WorldConfig | None = None, preset: str | dict = "tiny",
                     tokenizer_texts: list[str] | None = None, args: FoundationArgs | None = None,
                     progress: bool = False) -> str:
    """Train the foundation (resumable: a finished phase with the same arguments is reused). Returns the final
    checkpoint dir, to pass as `train_vlm(init_from=...)`. `tokenizer_texts` should hold the world's text (the
    rounds reuse the foundation's tokenizer)."""
    from vila2_model.data import texts_of
    from vila2_model.train import train_vlm

    cfg, a, out = cfg or WorldConfig(), args or FoundationArgs(), Path(out_dir)
    init = None
    phases = [(f"coarse{k}", coarse_samples(a.coarse_images, cfg, tuple(s), f"coarse{k}", a.seed), a.coarse_epochs)
              for k, s in enumerate(a.schedule)]
    phases.append(("world-vqa", world_vqa_samples(a.vqa_images, cfg, seed=a.seed), a.vqa_epochs))
    texts = list(tokenizer_texts or []) + [t for _, s, _ in phases for t in texts_of(s)]
    for name, samples, epochs in phases:
        if not samples or epochs <= 0:
            continue
        ck = train_vlm(out / name, [], samples, preset=preset, seed=a.seed, epochs_align=0, epochs_pretrain=0,
                       epochs_sft=epochs, lr_sft=a.lr, batch_size=a.batch_size, max_steps=a.max_steps,
                       tokenizer_texts=texts if init is None else None, init_from=init, progress=progress)
        init = ck["sft"]
    if init is None:
        raise InputError("the foundation has nothing to train on", "every phase has 0 images or 0 epochs",
                         "set FoundationArgs.coarse_images / vqa_images and their epochs above 0")
    return init
