"""Grade a store's captions of one kind and round against the synthetic world's truth (the image metadata):
were a round's training captions, or a specialist's outputs, right about the pool?

    python experiments/grade_store_captions.py --store DEMO_OUT/store --kind self --round 2 --kind grounding --round 3

Prints precision, recall, P×R, object precision and grounding IoU over a seeded sample of N images per pair.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from curator.store import Store  # noqa: E402
from curator.world.grade import grade_captions, grade_grounding  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--kind", action="append", required=True)
    ap.add_argument("--round", type=int, action="append", required=True)
    ap.add_argument("--n", type=int, default=400)
    a = ap.parse_args()
    if len(a.kind) != len(a.round):
        ap.error("give one --round per --kind")
    store = Store(a.store)
    for kind, rnd in zip(a.kind, a.round):
        rows = store.sql("SELECT c.image_id, c.text, i.meta FROM captions c JOIN images i USING (image_id) "
                         "WHERE c.kind = $kind AND c.round = $round AND c.sample_idx = 0 "
                         "ORDER BY c.image_id", params={"kind": kind, "round": rnd}).to_pylist()
        random.Random(0).shuffle(rows)
        rows = rows[:a.n]
        items = [dict(json.loads(r["meta"]), id=r["image_id"]) for r in rows]
        texts = {r["image_id"]: r["text"] for r in rows}
        g = grade_captions(texts, items, prefix="")
        iou = sum(grade_grounding(texts[it["id"]], it) for it in items) / max(1, len(items))
        print(json.dumps({"kind": kind, "round": rnd, "n": len(rows),
                          **{k: round(g[k], 3) for k in ("precision", "recall", "p_x_r", "object_precision")},
                          "grounding_iou": round(iou, 3)}))


if __name__ == "__main__":
    main()
