"""The compute control: round 0 retrained on the original captions with more pretraining epochs. A
self-augment round whose gain this matches gained compute, not data (the report prints it beside the rounds)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

from pipelines.self_augment import LoopConfig, one_round
from pipelines.steps import StepRunner


def run_compute_control(store, work_dir: str | Path, sft_data: str, eval_json: str, cfg: LoopConfig,
                        epochs_factor: float = 2.0, log: Callable[[str], None] = print) -> dict:
    """Round 0 retrained on the original captions with `epochs_factor`× the pretraining epochs, as
    `round-0-<f>x-epochs` (the report puts it beside the rounds): a round whose gain this matches gained
    compute, not data. Resumable."""
    work = Path(work_dir).resolve()
    more = copy.deepcopy(cfg)
    more.train.epochs_pretrain = cfg.train.epochs_pretrain * epochs_factor
    run = StepRunner(store, "compute-control", {**more.as_dict(), "epochs_factor": epochs_factor,
                                                "sft": str(sft_data), "eval": str(eval_json), "work": str(work)}, log=log)
    name = f"round-0-{epochs_factor:g}x-epochs"
    # tagged in its pipeline's namespace only (compute-control-<id>/round-0-2x-epochs): a control is not a round
    return one_round(run, store, work, 0, None, sft_data, eval_json, more, policy="original", tag=name,
                     short_tag=False, recaption=False, name=name)
