"""Probe: can the tiny vision tower learn to see the world's objects under *dense* supervision?

Stand-in for a pretrained SigLIP: train vision tower + projector with a per-image-token classifier (color,
shape-or-word-or-none, size of the object whose box centre falls in that token's cell) on a separate stream of
world images. Prints held-out per-token accuracy as it trains, then saves an HF checkpoint (LLM untouched,
random) that a round can start from with `init_from`.

    python experiments/probe_dense_vision.py --steps 600 --preset '{"image_size": 72, "vision": {"patch_size": 12}}'
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
from probe_round0 import merged_preset  # noqa: E402

from curator.world.synthetic import WorldConfig, synthetic_item  # noqa: E402
from vila2_model.model import build_model  # noqa: E402
from vila2_model.tokenizer import build_processor, image_seq_length  # noqa: E402


def labels(meta: dict, g: int, cfg: WorldConfig) -> tuple[list, list, list]:
    """Per token cell (row-major g×g): color index (0 = none), shape index (0 none, last = word), size (0 none)."""
    n = g * g
    col, shp, siz = [0] * n, [0] * n, [0] * n
    cell = meta["width"] / g
    for o in meta["objects"]:
        x0, y0, x1, y1 = o["box"]
        k = min(g - 1, int(((y0 + y1) / 2) // cell)) * g + min(g - 1, int(((x0 + x1) / 2) // cell))
        col[k] = 1 + cfg.colors.index(o["color"])
        shp[k] = 1 + cfg.shapes.index(o["shape"])
        siz[k] = 1 if o["size"] == "small" else 2
    if meta.get("word_box"):
        x0, y0, x1, y1 = meta["word_box"]
        k = min(g - 1, int(((y0 + y1) / 2) // cell)) * g + min(g - 1, int(((x0 + x1) / 2) // cell))
        if shp[k] == 0:
            shp[k] = 1 + len(cfg.shapes)
    return col, shp, siz


def make_set(n: int, cfg: WorldConfig, processor, g: int, stream: str, seed: int = 0):
    imgs, cols, shps, sizs = [], [], [], []
    for i in range(n):
        png, _, meta, _ = synthetic_item(i, seed, cfg, stream=stream)
        imgs.append(Image.open(io.BytesIO(png)).convert("RGB"))
        c, s, z = labels(meta, g, cfg)
        cols.append(c), shps.append(s), sizs.append(z)
    px = processor.image_processor(images=imgs, return_tensors="pt")["pixel_values"]
    return px, torch.tensor(cols), torch.tensor(shps), torch.tensor(sizs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="{}")
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--world-texts", default="", help="a world dir whose text builds the tokenizer")
    ap.add_argument("--out", default="experiments/out/probe_dense_vision/ckpt")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = WorldConfig()
    p = merged_preset(json.loads(a.preset))
    g = int(round(image_seq_length(p) ** 0.5))
    texts = []
    if a.world_texts:
        from vila2_model.data import load_conversations, texts_of
        w = Path(a.world_texts)
        texts = [json.loads(line)["caption"] for line in (w / "pretrain" / "manifest.jsonl").open()] \
            + texts_of(load_conversations(w / "sft" / "data.json"))
    processor = build_processor(texts or ["a red circle"], None, p)
    model = build_model(p, processor, seed=0)
    H = model.config.text_config.hidden_size
    heads = torch.nn.ModuleDict({"color": torch.nn.Linear(H, 1 + len(cfg.colors)),
                                 "shape": torch.nn.Linear(H, 2 + len(cfg.shapes)),
                                 "size": torch.nn.Linear(H, 3)})
    t0 = time.time()
    tr = make_set(a.n, cfg, processor, g, "dense")
    ev = make_set(500, cfg, processor, g, "dense-eval")
    print(f"data {time.time() - t0:.0f}s; grid {g}x{g}; pixel shape {tuple(tr[0].shape)}")
    m = model.model
    params = list(m.vision_tower.parameters()) + list(m.multi_modal_projector.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)

    def forward(px):
        f = m.get_image_features(pixel_values=px, vision_feature_layer=-1,
                                 vision_feature_select_strategy="default").pooler_output
        return {k: h(f) for k, h in heads.items()}

    def evaluate():
        m.eval()
        with torch.no_grad():
            out = forward(ev[0])
        m.train()
        res = {}
        obj = ev[1] > 0
        for k, y in zip(("color", "shape", "size"), ev[1:]):
            pred = out[k].argmax(-1)
            res[k] = round(((pred == y) & obj).sum().item() / obj.sum().item(), 3)
        res["none"] = round(((out["shape"].argmax(-1) == 0) == (ev[2] == 0)).float().mean().item(), 3)
        return res

    t0 = time.time()
    for step in range(a.steps + 1):
        if step % 100 == 0:
            print(f"step {step:5d} {time.time() - t0:6.0f}s held-out {evaluate()}", flush=True)
        if step == a.steps:
            break
        idx = torch.randint(0, a.n, (a.batch,), generator=gen)
        lr = a.lr * min(1.0, (step + 1) / 30) * 0.5 * (1 + torch.cos(torch.tensor(step / a.steps * 3.14159)).item())
        for gr in opt.param_groups:
            gr["lr"] = lr
        out = forward(tr[0][idx])
        loss = sum(torch.nn.functional.cross_entropy(out[k].reshape(-1, out[k].shape[-1]), y[idx].reshape(-1))
                   for k, y in zip(("color", "shape", "size"), tr[1:]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    Path(a.out).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(a.out)
    processor.save_pretrained(a.out)
    print(f"saved {a.out} ({time.time() - t0:.0f}s training)")


if __name__ == "__main__":
    main()
