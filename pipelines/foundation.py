"""The vision foundation: the from-scratch stand-in for VILA's pretrained SigLIP.

VILA never trains its vision tower from random weights: every round starts from pretrained SigLIP (+ LLM) and
re-learns the projector and the multimodal stages. Nothing here downloads weights, and measured on this machine
(docs/LOG.md) the tiny tower does not learn to see the world's small objects from the language-model loss within
a round's budget, nor from a coarse-to-fine VQA curriculum well enough to describe them. With dense per-token
supervision it does in about a minute, so the foundation is:

  vision tower + projector trained once per (world config, preset, seed) on a *separate* stream of world-like
  images (never the pretraining, SFT or eval images), with one classification target set per image token:
  the color, shape-or-word and size of the object whose box centre lies in that token's cell (0 = none), and
  the token's row and column (so the features keep where they come from; the LLM's rotary positions do not
  reach the values it reads).

The LLM stays random; each round's `train_vlm(init_from=foundation, freeze_vision=True)` trains projector and LLM
from there (align → pretrain → SFT). The labels are the world's ground truth — what a pretrained encoder brings
from its own, much larger, data.
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from curator.errors import InputError
from curator.world.synthetic import WorldConfig, config_dict, make_vqa, synthetic_item
from vila2_model.data import Sample


@dataclass
class FoundationArgs:
    n_images: int = 4000             # separate-stream images for the dense pretraining
    n_eval: int = 500                # held-out images for the per-head accuracy
    steps: int = 1200
    lr: float = 1e-3
    batch_size: int = 64
    feature_rms: float | None = 16.0  # image features rescaled to this RMS (measured: 0.06-1 ignored, 3.6 used, 14-44 best)
    seed: int = 0
    read_words: bool = False         # + a head for which word a token shows: a tower that can read (as SigLIP
                                     # reads printed text); without it the rendered word is one class, "a word"


def grid_of(preset: str | dict) -> int:
    from vila2_model.presets import load_preset
    from vila2_model.tokenizer import image_seq_length

    n = image_seq_length(load_preset(preset))
    g = int(round(n ** 0.5))
    if g * g != n:
        raise InputError(f"preset has {n} image tokens", "dense labels need a square token grid",
                         "use a preset whose image_size / patch_size is even")
    return g


def head_sizes(cfg: WorldConfig, grid: int, read_words: bool = False) -> dict[str, int]:
    heads = {"color": 1 + len(cfg.colors), "shape": 2 + len(cfg.shapes), "size": 3, "row": 1 + grid, "col": 1 + grid}
    return {**heads, "word": 1 + len(cfg.words)} if read_words else heads


def token_labels(meta: dict, grid: int, cfg: WorldConfig, read_words: bool = False) -> dict[str, list[int]]:
    """Class ids per image token (row-major grid×grid) for one image's ground truth. color: 1 + index (0 none);
    shape: 1 + index, len(shapes)+1 = a rendered word, 0 none; size: 1 small, 2 large; row/col: 1 + the token's
    own row/column; with `read_words`, word: 1 + the index of the word the token shows (0 none). An object
    belongs to the token whose cell holds its box centre."""
    n, cell = grid * grid, meta["width"] / grid
    lab = {"color": [0] * n, "shape": [0] * n, "size": [0] * n,
           "row": [1 + k // grid for k in range(n)], "col": [1 + k % grid for k in range(n)]}
    if read_words:
        lab["word"] = [0] * n

    def token(box):
        x0, y0, x1, y1 = box
        return min(grid - 1, int((y0 + y1) / 2 // cell)) * grid + min(grid - 1, int((x0 + x1) / 2 // cell))

    for o in meta["objects"]:
        k = token(o["box"])
        lab["color"][k] = 1 + cfg.colors.index(o["color"])
        lab["shape"][k] = 1 + cfg.shapes.index(o["shape"])
        lab["size"][k] = 1 if o["size"] == "small" else 2
    if meta.get("word_box") and lab["shape"][token(meta["word_box"])] == 0:
        lab["shape"][token(meta["word_box"])] = 1 + len(cfg.shapes)
    if read_words and meta.get("word_box"):
        lab["word"][token(meta["word_box"])] = 1 + cfg.words.index(meta["word"])
    return lab


def dense_set(n: int, cfg: WorldConfig, grid: int, stream: str, seed: int = 0, read_words: bool = False):
    import torch

    images, labs = [], {k: [] for k in head_sizes(cfg, grid, read_words)}
    for i in range(n):
        png, _, meta, _ = synthetic_item(i, seed, cfg, stream=stream)
        images.append(Image.open(io.BytesIO(png)).convert("RGB"))
        for k, v in token_labels(meta, grid, cfg, read_words).items():
            labs[k].append(v)
    return images, {k: torch.tensor(v, dtype=torch.long) for k, v in labs.items()}


def world_vqa_samples(n: int, cfg: WorldConfig, stream: str = "foundation", seed: int = 0,
                      shuffle_turns: bool = True) -> list[Sample]:
    """The world's kind of images from a separate stream with every visual question (probes mix these in)."""
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


def build_foundation(out_dir: str | Path, cfg: WorldConfig | None = None, preset: str | dict = "tiny72",
                     tokenizer_texts: list[str] | None = None, args: FoundationArgs | None = None,
                     progress: bool = False) -> str:
    """Pretrain the vision tower on dense labels (resumable: a finished foundation with the same arguments is
    reused) and return its checkpoint dir, for `train_vlm(init_from=..., freeze_vision=True)`.
    `tokenizer_texts` should hold the world's text: the rounds keep the foundation's tokenizer."""
    from vila2_model.errors import ModelError
    from vila2_model.vision_pretrain import pretrain_vision

    cfg, a, out = cfg or WorldConfig(), args or FoundationArgs(), Path(out_dir)
    if a.n_images <= 0 or a.steps <= 0:
        raise InputError("the foundation has nothing to train on", f"n_images={a.n_images}, steps={a.steps}",
                         "set FoundationArgs.n_images and steps above 0")
    fargs = asdict(a)
    if not a.read_words:   # foundations built before the word head keep their key (and are reused)
        del fargs["read_words"]
    key = json.dumps({"foundation": fargs, "world": config_dict(cfg), "preset": preset,
                      "texts": len(tokenizer_texts or [])}, sort_keys=True, default=str)
    kf = out / "foundation_args.json"
    if kf.is_file() and kf.read_text() != key:
        raise InputError(f"{out} holds a foundation built with other arguments",
                         "reusing it would mix two worlds or recipes", "pass a new out_dir or delete it")
    g = grid_of(preset)
    images, labels = dense_set(a.n_images, cfg, g, "foundation-dense", a.seed, a.read_words)
    ev_images, ev_labels = (dense_set(a.n_eval, cfg, g, "foundation-dense-eval", a.seed, a.read_words) if a.n_eval
                            else (None, None))
    out.mkdir(parents=True, exist_ok=True)
    kf.write_text(key)
    try:
        pretrain_vision(out / "vision", images, labels, head_sizes(cfg, g, a.read_words), preset=preset,
                        tokenizer_texts=tokenizer_texts, eval_images=ev_images, eval_labels=ev_labels,
                        steps=a.steps, lr=a.lr, batch_size=a.batch_size, feature_rms=a.feature_rms, seed=a.seed,
                        progress=progress)
    except ModelError as e:
        raise InputError(e.what, e.why, e.fix) from e
    return str(out / "vision")


def world_texts(world_dir: str | Path) -> tuple[WorldConfig, list[str]]:
    """A generated world's config and its text (alt-texts, SFT and eval prompts) for the foundation's tokenizer."""
    from vila2_model.data import load_conversations, texts_of

    w = Path(world_dir)
    if not (w / "world.json").is_file():
        raise InputError(f"{w} is not a generated world", "it has no world.json",
                         "generate one with `curator world --out DIR`")
    info = json.loads((w / "world.json").read_text())
    cfg = WorldConfig(**info["config"])
    texts = [json.loads(line)["caption"] for line in (w / "pretrain" / "manifest.jsonl").open()]
    texts += texts_of(load_conversations(w / "sft" / "data.json"))
    for item in json.loads((w / "eval" / "eval.json").read_text()):
        texts += [v for k, v in item.items() if isinstance(v, str) and k.endswith("prompt")]
    return cfg, texts


def foundation_report(ckpt: str | Path) -> dict:
    """The foundation's held-out accuracy per head (tokens holding something) and its training time."""
    d = json.loads((Path(ckpt) / "vila2_vision_pretrain.json").read_text())
    return {"eval_accuracy": d["eval_accuracy"], "seconds": d["seconds"], "steps": d["steps"]}
