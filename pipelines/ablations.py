"""The method's ablations on the synthetic world (VILA² Table 9 and the extra-epochs control):

- round-1 target: `original` (= round 0) vs `recaption` only vs `concat` (the loop's default);
- compute control: round 0 retrained with 3× the pretraining epochs on the original captions —
  if that matches round 1, the gain was compute, not data.

Runs after `run_self_augment` has finished round 1 (it reuses round 1's recaptions; nothing is regenerated).
Resumable like the loops; results are ordinary `models` rows (role generalist, no round tag).

    curator run ablations --out demo_out --size full   # on a finished `make demo FULL=1` directory
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

from curator.errors import InputError
from pipelines.self_augment import LoopConfig, one_round
from pipelines.steps import StepRunner

METRICS = ("caption_precision", "caption_recall", "caption_p_x_r", "caption_length_words", "vqa_acc")


def _metrics_of(store, round: int, trained_policy: str) -> dict:
    import json

    rows = store.sql(f"""
        SELECT m.metrics FROM models m
        JOIN models p ON p.model_id = m.parent_model_id AND p.stage = 'pretrain' AND p.round = m.round
        JOIN builds b ON b.build_id = p.trained_on
        WHERE m.stage = 'sft' AND m.role = 'generalist' AND m.round = {int(round)} AND b.policy = '{trained_policy}'
        ORDER BY m.created_at DESC LIMIT 1""").to_pylist()
    return json.loads(rows[0]["metrics"]) if rows else {}


def _metrics_by_id(store, model_id: str) -> dict:
    import json

    rows = store.sql(f"SELECT metrics FROM models WHERE model_id = '{model_id}'").to_pylist()
    return json.loads(rows[0]["metrics"]) if rows else {}


def run_ablations(store, work_dir: str | Path, sft_data: str, eval_json: str, cfg: LoopConfig,
                  epochs_factor: float = 3.0, log: Callable[[str], None] = print, control: bool = True) -> list[dict]:
    work = Path(work_dir).resolve()
    r0 = store.sql("SELECT model_id FROM models WHERE role = 'generalist' AND stage = 'sft' AND round = 0 "
                   "ORDER BY created_at LIMIT 1").to_pylist()
    n1 = store.sql("SELECT count(*) AS n FROM captions WHERE kind = 'self' AND round = 1").to_pylist()[0]["n"]
    if not r0 or not n1:
        raise InputError("ablations need a finished round 1", "no round-0 model or no round-1 recaptions in the store",
                         "run `curator run self-augment --rounds 1` (or make demo) first")
    run = StepRunner(store, "ablations", {**cfg.as_dict(), "epochs_factor": epochs_factor, "sft": str(sft_data),
                                          "eval": str(eval_json), "work": str(work)}, log=log)
    prev = {"models": {"sft": r0[0]["model_id"]}}
    # tagged in the pipeline's namespace only (ablations-<id>/ablation-…): never a short round-N tag
    rec = one_round(run, store, work, 1, prev, sft_data, eval_json, cfg, policy="recaption",
                    tag="ablation-r1-recaption", short_tag=False, recaption=False, name="ablation-r1-recaption")
    rows = [{"run": "round 0: original captions", "metrics": _metrics_by_id(store, r0[0]["model_id"])}]
    if control:   # round 0 again with more pretraining epochs: the gain a round must beat to be data, not compute
        more = copy.deepcopy(cfg)
        more.train.epochs_pretrain = cfg.train.epochs_pretrain * epochs_factor
        ctl = one_round(run, store, work, 0, None, sft_data, eval_json, more, policy="original",
                        tag=f"ablation-r0-{epochs_factor:g}x-epochs", short_tag=False, recaption=False,
                        name=f"ablation-r0-{epochs_factor:g}x-epochs")
        rows.append({"run": f"round 0: original, {epochs_factor:g}× pretraining epochs (compute control)",
                     "metrics": ctl["metrics"]})
    rows += [{"run": "round 1: recaption only", "metrics": rec["metrics"]},
             {"run": "round 1: original + recaption (concat)", "metrics": _metrics_of(store, 1, "concat")}]
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"{'run':<58}" + "".join(f"{k:>19}" for k in METRICS)
    lines = [head, "-" * len(head)]
    for r in rows:
        m = r["metrics"]
        lines.append(f"{r['run']:<58}" + "".join(
            f"{m[k]:>19.3f}" if isinstance(m.get(k), (int, float)) else f"{'—':>19}" for k in METRICS))
    return "\n".join(lines)


def run_ablations_on_demo(out: str | Path = "demo_out", size: str = "default", seed: int = 0,
                          epochs_factor: float = 3.0) -> str:
    """Run the ablations on a finished demo directory (`size` = the demo size it came from); returns the table."""
    from curator.store import Store
    from pipelines.demo import SIZES, loop_config

    out = Path(out).resolve()
    fnd = out / "foundation" / "vision"
    if not (out / "store").is_dir() or not (fnd / "config.json").is_file():
        raise InputError(f"{out} is not a finished demo directory", "it has no store or foundation",
                         "run `curator demo --out DIR` (or `make demo`) first")
    cfg = loop_config(SIZES[size], seed, str(fnd))
    w = out / "world"
    rows = run_ablations(Store(str(out / "store")), out, str(w / "sft" / "data.json"), str(w / "eval" / "eval.json"),
                         cfg, epochs_factor=epochs_factor)
    return format_table(rows)
