"""Probe: the converged comparison — round 0's held-out P×R against its training budget, then self-augment
rounds at a budget B where round 0 has (nearly) plateaued, with the recaptions graded against the truth.

    # round-0 budget sweep (one store per budget; a budget = stage-2 pretraining epochs)
    python experiments/probe_budget.py --out experiments/out/b0 --seed 0 sweep --epochs 2 4 8 16
    # loop at budget B (reuses the sweep's round-0 checkpoint at B through train_vlm's resume)
    python experiments/probe_budget.py --out experiments/out/b0 --seed 0 loop --epochs 8 --rounds 2

World knobs: --n-pretrain, --n-eval, --world '{"sft_fraction": 0.2, ...}' (WorldConfig fields).
Every result row is appended to OUT/results.jsonl with the command line, seed and wall time.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from curator.ingest import ingest  # noqa: E402
from curator.store import Store  # noqa: E402
from curator.world.grade import grade_captions  # noqa: E402
from curator.world.synthetic import WorldConfig, config_dict, generate_world  # noqa: E402
from pipelines.foundation import FoundationArgs, build_foundation, world_texts  # noqa: E402
from pipelines.self_augment import LoopConfig, RecaptionArgs, run_self_augment  # noqa: E402

KEYS = ("caption_precision", "caption_recall", "caption_p_x_r", "caption_length_words", "caption_distinct_rate",
        "vqa_acc", "vqa_acc_spatial", "vqa_acc_ocr", "vqa_acc_name", "grounding_iou")


def make_world(out: Path, a) -> tuple[Path, WorldConfig]:
    wcfg = WorldConfig(n_eval=a.n_eval, **json.loads(a.world))
    w = out / "world"
    key = json.dumps({"n": a.n_pretrain, "seed": a.seed, "cfg": config_dict(wcfg)}, sort_keys=True, default=str)
    marker = w / ".complete"
    if not (marker.is_file() and marker.read_text() == key):
        generate_world(w, n_pretrain=a.n_pretrain, seed=a.seed, cfg=wcfg)
        marker.write_text(key)
    return w, wcfg


def recaption_quality(store, k: int, kind: str = "self", n: int = 300) -> dict:
    """Round k's recaptions graded against each image's truth (a seeded sample of n images)."""
    rows = store.sql(f"SELECT c.image_id, c.text, i.meta FROM captions c JOIN images i USING (image_id) "
                     f"WHERE c.kind = '{kind}' AND c.round = {int(k)} ORDER BY c.image_id").to_pylist()
    random.Random(0).shuffle(rows)
    items, texts = [], {}
    for r in rows[:n]:
        it = dict(json.loads(r["meta"]), id=r["image_id"])
        items.append(it)
        texts[r["image_id"]] = r["text"]
    return _quality(texts, items)


def alt_quality(store, n: int = 300) -> dict:
    rows = store.sql("SELECT c.image_id, c.text, i.meta FROM captions c JOIN images i USING (image_id) "
                     "WHERE c.kind = 'original' ORDER BY c.image_id").to_pylist()
    random.Random(0).shuffle(rows)
    items = [dict(json.loads(r["meta"]), id=r["image_id"]) for r in rows[:n]]
    return _quality({r["image_id"]: r["text"] for r in rows[:n]}, items)


def _quality(texts: dict, items: list) -> dict:
    """Training captions graded against the truth: precision, recall, P×R (keys recap_*)."""
    if not items:
        return {}
    g = grade_captions(texts, items, prefix="")
    return {f"recap_{m}": round(g[m], 4) for m in ("precision", "recall", "p_x_r")}


def run_one(out: Path, w: Path, fnd: str, a, epochs: float, rounds: int, policy: str = "concat") -> list[dict]:
    d = out / f"e{epochs:g}" if policy == "concat" else out / f"e{epochs:g}-{policy}"
    d.mkdir(parents=True, exist_ok=True)
    store = Store(str(d / "store"), create=True)
    if not store.sql("SELECT count(*) AS n FROM images").to_pylist()[0]["n"]:
        ingest(store, manifest=str(w / "pretrain" / "manifest.jsonl"))
    recipe = json.loads(a.recipe)
    from pipelines.demo import _RECIPE

    train = replace(_RECIPE, init_from=fnd, epochs_pretrain=epochs, **recipe)
    cfg = LoopConfig(rounds=rounds, seed=a.seed, policy=policy, min_gain=None, train=train, recaption=RecaptionArgs())
    t0 = time.time()
    res = run_self_augment(store, d, str(w / "sft" / "data.json"), str(w / "eval" / "eval.json"), cfg)
    rows = []
    for r in res["rounds"]:
        q = alt_quality(store) if r["round"] == 0 else recaption_quality(store, r["round"])
        rows.append({"cmd": " ".join(sys.argv), "seed": a.seed, "epochs_pretrain": epochs, "policy": policy,
                     "round": r["round"], "model": r["models"]["sft"], "wall_s": round(time.time() - t0),
                     **{k: r["metrics"].get(k) for k in KEYS if k in r["metrics"]}, **q})
    with open(out / "results.jsonl", "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    for r in rows:
        print(json.dumps(r), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-pretrain", type=int, default=1000)
    ap.add_argument("--n-eval", type=int, default=200)
    ap.add_argument("--world", default="{}", help="WorldConfig overrides as JSON")
    ap.add_argument("--recipe", default="{}", help="TrainArgs overrides as JSON")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--foundation", default=None, help="reuse this foundation checkpoint (same WorldConfig)")
    ap.add_argument("--foundation-args", default="{}", help="FoundationArgs overrides as JSON (e.g. read_words)")
    ap.add_argument("--preset", default="tiny72", help="model preset (name or .json) the foundation builds")
    ap.add_argument("what", choices=("sweep", "loop", "ablate"))
    ap.add_argument("--epochs", type=float, nargs="+", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--policy", default="concat")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    w, wcfg = make_world(out, a)
    _, texts = world_texts(w)
    fargs = FoundationArgs(seed=a.seed, **json.loads(a.foundation_args))
    fnd = a.foundation or build_foundation(out / "foundation", wcfg, a.preset, texts, fargs)
    for e in a.epochs:
        run_one(out, w, fnd, a, e, 0 if a.what == "sweep" else a.rounds, a.policy)
        if a.what == "ablate":
            ablate(out, w, fnd, a, e)


def ablate(out: Path, w: Path, fnd: str, a, epochs: float) -> None:
    """Recaption-only round 1 beside the concat round 1 (pipelines/ablations.py), in the loop's store."""
    from pipelines.ablations import run_ablations
    from pipelines.demo import _RECIPE

    d = out / f"e{epochs:g}"
    store = Store(str(d / "store"))
    train = replace(_RECIPE, init_from=fnd, epochs_pretrain=epochs, **json.loads(a.recipe))
    cfg = LoopConfig(rounds=1, seed=a.seed, min_gain=None, train=train, recaption=RecaptionArgs())
    rows = run_ablations(store, d, str(w / "sft" / "data.json"), str(w / "eval" / "eval.json"), cfg, epochs_factor=2.0,
                         control=False)   # the 2× control is the sweep's round 0 at 2× the epochs
    with open(out / "results.jsonl", "a") as f:
        for r in rows:
            row = {"cmd": " ".join(sys.argv), "seed": a.seed, "epochs_pretrain": epochs, "ablation": r["run"],
                   **{k: r["metrics"].get(k) for k in KEYS if k in r["metrics"]}}
            f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
