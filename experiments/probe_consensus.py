"""Probe: a precision-first filter measured on the data before training on it. For a sample of pool images
with a round-1 greedy recaption in RUN's store, draw N sampled captions from round 0's SFT model (temperature
T), keep each greedy sentence only where at least k of the N samples contain the same sentence, and grade
every variant against the truth (precision, recall, P×R).

    python experiments/probe_consensus.py RUN [--n 4] [--temperature 0.7] [--images 200]
    # RUN = a loop directory of probe_budget.py, e.g. experiments/out/v2s0/e16
"""
from __future__ import annotations

import argparse
import io
import json
import random
import sys
from collections import Counter
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from curator.store import Store  # noqa: E402
from curator.world.grade import grade_captions  # noqa: E402
from vila2_model.generate import Generator  # noqa: E402

KEYS = ("precision", "recall", "p_x_r", "relation_precision", "object_precision", "length_words")


def sentences(text: str) -> list[str]:
    return [x.strip() for x in text.split(".") if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--images", type=int, default=200)
    a = ap.parse_args()
    torch.set_num_threads(1)
    run = Path(a.run)
    store = Store(str(run / "store"))
    rows = store.sql("SELECT c.image_id, c.text, c.prompt, i.meta FROM captions c JOIN images i USING (image_id) "
                     "WHERE c.round = 1 AND c.kind = 'self' AND c.transform = '' ORDER BY c.image_id").to_pylist()
    random.Random(0).shuffle(rows)
    rows = rows[:a.images]
    ids = [r["image_id"] for r in rows]
    data = store.image_bytes(ids)
    gen = Generator(str(run / "models" / "round-0" / "sft"))
    images = [Image.open(io.BytesIO(data[i])).convert("RGB") for i in ids]
    outs = gen.generate(images, [r["prompt"] for r in rows], max_new_tokens=128, do_sample=True,
                        temperature=a.temperature, top_p=1.0, seed=0, batch_size=64, n=a.n)
    items = [dict(json.loads(r["meta"]), id=r["image_id"]) for r in rows]

    def grade(texts: dict) -> dict:
        m = grade_captions(texts, items, prefix="")
        return {k: round(m[k], 3) for k in KEYS}

    print("greedy", grade({r["image_id"]: r["text"] for r in rows}))
    for k in range(1, a.n + 1):
        texts = {}
        for j, r in enumerate(rows):
            support = Counter(x for o in outs[j * a.n:(j + 1) * a.n] for x in set(sentences(o.text)))
            kept = list(dict.fromkeys(x for x in sentences(r["text"]) if support[x] >= k))
            texts[r["image_id"]] = ". ".join(kept) + ("." if kept else "")
        empty = sum(1 for t in texts.values() if not t)
        print(f"greedy, sentences in >= {k}/{a.n} samples", grade(texts), f"empty {empty}")
    print("one sample", grade({r["image_id"]: outs[j * a.n].text for j, r in enumerate(rows)}))


if __name__ == "__main__":
    main()
