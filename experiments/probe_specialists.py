"""Probe: how much fine-tuning does each specialist need to lift its own skill over the generalist it starts from?

Fine-tunes one specialist from a stage-2 checkpoint on its world task set (mixed with the round's caption build,
as the pipeline does) for each budget given, grades it on the held-out eval set, and prints its own metric
beside the base generalist's (SKILL_METRIC in pipelines/specialist_augment.py).

    python experiments/probe_specialists.py --out OUT --stage2 RUN/models/round-0/pretrain \
        --base RUN/models/round-0/sft --world RUN/../world --captions RUN/builds/round-0-original \
        --names spatial grounding ocr control --epochs 4 --sft --task-images 500

Rows are appended to OUT/results.jsonl with the command line and wall time.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from curator.world.grade import grade_eval  # noqa: E402
from pipelines.specialist_augment import SKILL_METRIC  # noqa: E402
from vila2_model.data import load_conversations  # noqa: E402
from vila2_model.evaluate import predict  # noqa: E402
from vila2_model.train import finetune_specialist  # noqa: E402


def grade(ckpt: str, eval_json: Path, limit: int | None) -> dict:
    items = json.loads(eval_json.read_text())[:limit]
    preds = predict(ckpt, eval_json, limit=limit, grounding_prompt=items[0]["grounding_prompt"])
    m = grade_eval(preds, items)
    g = list(preds["grounding"].values())
    m["grounding_sample"] = g[:2]
    return m


def write_tasks(world: Path, n: int, out: Path) -> Path:
    from curator.world.synthetic import TASKS, WorldConfig, _write_task

    info = json.loads((world / "world.json").read_text())
    cfg = WorldConfig(**info["config"])
    for t in TASKS:
        if not (out / t / "data.json").is_file():
            _write_task(out / t, t, n, info["seed"], cfg)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--stage2", required=True)
    ap.add_argument("--base", required=True, help="the generalist (SFT) the specialists are compared with")
    ap.add_argument("--world", required=True)
    ap.add_argument("--captions", required=True, help="the round's caption build (mixed into the task data)")
    ap.add_argument("--names", nargs="+", default=["spatial", "grounding", "ocr"])
    ap.add_argument("--epochs", type=float, nargs="+", default=[3.0])
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--mix", type=float, default=1.0)
    ap.add_argument("--sft", action="store_true", help="also mix the world's SFT set in (method: caption/SFT data)")
    ap.add_argument("--tasks", default=None, help="task sets dir (NAME/data.json) instead of the world's")
    ap.add_argument("--task-images", type=int, default=None,
                    help="write N-image task sets from the world's own task streams (its first images are the "
                         "world's task sets) into OUT/tasks<N> and use them")
    ap.add_argument("--freeze-vision", action="store_true", help="keep the vision tower frozen (as the loop does)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ev = Path(a.world) / "eval" / "eval.json"
    if a.task_images:
        a.tasks = str(write_tasks(Path(a.world), a.task_images, out / f"tasks{a.task_images}"))
    base_file = out / "base.json"
    if not base_file.is_file():
        base_file.write_text(json.dumps(grade(a.base, ev, a.limit)))
    base = json.loads(base_file.read_text())
    for name in a.names:
        for e in a.epochs:
            t0 = time.time()
            tasks = Path(a.tasks or Path(a.world) / "tasks")
            n_task = len(json.loads((tasks / ("spatial" if name == "control" else name) / "data.json").read_text()))
            d = out / f"{name}-e{e:g}-lr{a.lr:g}-mix{a.mix:g}-sft{int(a.sft)}-n{n_task}-fv{int(a.freeze_vision)}"
            sft = str(Path(a.world) / "sft" / "data.json") if a.sft else None
            if name == "control":
                # the same fine-tune without the task data: n_task caption samples in its place (+ the same
                # n_task × mix captions and the SFT set), so a specialist's gain over it is the task data's
                caps = load_conversations(a.captions)
                pick = torch.randperm(len(caps), generator=torch.Generator().manual_seed(1))[:n_task].tolist()
                finetune_specialist(d, a.stage2, [caps[i] for i in pick], a.captions, mix_ratio=a.mix,
                                    sft_data=sft, epochs=e, lr=a.lr, freeze_vision=a.freeze_vision, progress=False)
            else:
                finetune_specialist(d, a.stage2, str(tasks / name / "data.json"), a.captions, mix_ratio=a.mix,
                                    sft_data=sft, epochs=e, lr=a.lr, freeze_vision=a.freeze_vision, progress=False)
            m = grade(str(d), ev, a.limit)
            for k in (SKILL_METRIC.values() if name == "control" else [SKILL_METRIC[name]]):
                row = {"cmd": " ".join(sys.argv), "specialist": name, "epochs": e, "lr": a.lr, "mix": a.mix,
                       "sft": a.sft, "freeze_vision": a.freeze_vision, "n_task": n_task, "metric": k,
                       "base": base[k], "specialist_value": m[k],
                       "gain": round(m[k] - base[k], 4), "caption_p_x_r": m["caption_p_x_r"],
                       "base_caption_p_x_r": base["caption_p_x_r"], "wall_s": round(time.time() - t0),
                       "grounding_sample": m["grounding_sample"]}
                with open(out / "results.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
