"""The visual foundation: the from-scratch stand-in for VILA's pretrained SigLIP + LLM.

VILA never trains its vision tower from random weights: every round starts from pretrained SigLIP and Llama
and re-learns only the projector and the multimodal stages. Our tiny model has nothing pretrained, and measured
on this machine (docs/LOG.md) it does not learn to see the world's small objects from round-0 data at all. It
does learn from large objects, and what it learns there transfers to smaller ones. So the foundation is trained
once per (world config, preset, seed), coarse to fine, on a *separate* stream of synthetic images (never the
pretraining, SFT or eval images):

  phase k (one per schedule entry): one object per image whose side is a fraction of the image in the given
      range (large first), gray background; two turns: its color, then its shape
  last phase: the world's own kind of images (separate stream), every visual question of make_vqa in its order

Turn order is fixed by default. Measured (docs/LOG.md): with the same question always first the model forms the
visual pathway (image gap 0.158, held-out VQA color 0.64); with shuffled turns it did not within the same steps
(gap 0.008, color 0.14) — it must then also learn which question was asked before any reading pays off. The
round's own data (SFT VQA with random questions) teaches answering the question asked.

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
    shuffle_turns: bool = False      # measured worse (see the module docstring)
    seed: int = 0
    max_steps: int | None = None     # per phase; toy runs in tests


def coarse_samples(n: int, cfg: WorldConfig, sides: tuple, stream: str, seed: int = 0,
                   shuffle_turns: bool = False) -> list[Sample]:
    """One object per image, side drawn from `sides` (fractions of the image side); color + shape questions."""
    size, out = cfg.image_size, []
    for i in range(n):
        r = random.Random(f"{seed}-{stream}-{i}")
        side = max(4, int(size * r.uniform(*sides)))
        x, y = r.randrange(0, size - side + 1), r.randrange(0, size - side + 1)
        o = {"shape": r.choice(cfg.shapes), "color": r.choice(cfg.colors), "box": [x, y, x + side, y + side]}
        meta = {"width": size, "height": size, "background": r.randint(*cfg.background_gray), "objects": [o]}
        qa = [("What color is the object?", o["color"]), ("What shape is the object?", o["shape"])]
        if shuffle_turns:
            r.shuffle(qa)
        conv = []
        for k, (q, a) in enumerate(qa):
            conv += [{"from": "human", "value": ("<image>\n" if k == 0 else "") + q}, {"from": "gpt", "value": a}]
        out.append(Sample(Image.open(io.BytesIO(render(meta))).convert("RGB"), conv, f"{stream}-{i}"))
    return out


def world_vqa_samples(n: int, cfg: WorldConfig, stream: str = "foundation", seed: int = 0,
                      shuffle_turns: bool = True) -> list[Sample]:
    """The world's kind of images from a separate stream; every visual question (shuffled, or make_vqa's order)."""
    out = []
    for i in range(n):
        png, _, meta, rng = synthetic_item(i, seed, cfg, stream=stream)
        qa = make_vqa(rng, meta, cfg)
        if shuffle_turns:
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

    import json
    from dataclasses import asdict

    cfg, a, out = cfg or WorldConfig(), args or FoundationArgs(), Path(out_dir)
    # train_vlm resumes a phase by its arguments and sample count, not the samples' content: refuse to resume a
    # directory built with other foundation arguments or another world rather than reuse stale phases.
    key = json.dumps({"foundation": asdict(a), "world": asdict(cfg), "preset": preset}, sort_keys=True, default=str)
    kf = out / "foundation_args.json"
    if kf.is_file() and kf.read_text() != key:
        raise InputError(f"{out} holds a foundation built with other arguments",
                         "its phases would be reused although the data differ", "pass a new out_dir or delete it")
    out.mkdir(parents=True, exist_ok=True)
    kf.write_text(key)
    init = None
    phases = [(f"coarse{k}", coarse_samples(a.coarse_images, cfg, tuple(s), f"coarse{k}", a.seed, a.shuffle_turns),
               a.coarse_epochs) for k, s in enumerate(a.schedule)]
    phases.append(("world-vqa", world_vqa_samples(a.vqa_images, cfg, seed=a.seed, shuffle_turns=a.shuffle_turns),
                   a.vqa_epochs))
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
