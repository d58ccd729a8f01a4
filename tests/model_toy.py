"""A toy image world for the model tests (independent of curator.world.synthetic, so the model library is tested alone):
one colored shape in one quadrant; the caption states color, shape and quadrant; QA turns ask for each."""
from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle")
QUADS = {"top left": (0, 0), "top right": (1, 0), "bottom left": (0, 1), "bottom right": (1, 1)}


def toy_image(color: str, shape: str, quad: str, size: int = 32) -> Image.Image:
    im = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(im)
    qx, qy = QUADS[quad]
    h = size // 2
    box = (qx * h + 2, qy * h + 2, qx * h + h - 3, qy * h + h - 3)
    (d.rectangle if shape == "square" else d.ellipse)(box, fill=COLORS[color])
    return im


def toy_items(n: int, seed: int = 0, size: int = 32):
    rng = random.Random(seed)
    for k in range(n):
        c, s, q = rng.choice(list(COLORS)), rng.choice(SHAPES), rng.choice(list(QUADS))
        yield k, toy_image(c, s, q, size), (c, s, q)


def caption(c: str, s: str, q: str) -> str:
    return f"a {c} {s} at the {q} ."


def write_llava(out_dir: Path, n: int, seed: int = 0, size: int = 32, kind: str = "caption") -> Path:
    """kind: caption (pretraining: human turn is "<image>" alone), sft (an instruction + detailed answer),
    qa (multi-turn: caption, then QA turns)."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for k, im, (c, s, q) in toy_items(n, seed, size):
        name = f"images/{seed}_{k:05d}.png"
        im.save(out_dir / name)
        if kind == "caption":
            conv = [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": caption(c, s, q)}]
        elif kind == "sft":
            conv = [{"from": "human", "value": "<image>\nDescribe the image in details."},
                    {"from": "gpt", "value": caption(c, s, q)}]
        else:
            conv = [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": caption(c, s, q)},
                    {"from": "human", "value": "What color is the shape?"}, {"from": "gpt", "value": c},
                    {"from": "human", "value": "Where is it? Give the box."},
                    {"from": "gpt", "value": "[120,080,450,400]"}]
        rows.append({"id": f"{seed}_{k}", "image": name, "conversations": conv})
    (out_dir / "data.json").write_text(json.dumps(rows))
    return out_dir
