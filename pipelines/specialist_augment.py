"""Specialist augment (VILA² §2): fine-tune specialists from the self-augmented model's stage-2 checkpoint
on their task data mixed with caption and SFT data, let each recaption the pretraining pool with its own prompts
(kind = its name), build with the `concat-specialist-qa` policy (or `specialist-qa`), retrain the generalist
from scratch, evaluate.

A specialist is data, not code: a name, a task set (LLaVA JSON / Parquet / WebDataset) and a prompt set of
the same name in the prompts YAML (its recaption prompts + question pool for the build).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from curator.errors import InputError
from pipelines.self_augment import LoopConfig, evaluate_and_record, train_and_register
from pipelines.steps import StepRunner, tag_state


# Each built-in specialist's own skill on the world's eval set (a user specialist has none: reported as None).
SKILL_METRIC = {"spatial": "vqa_acc_spatial", "grounding": "grounding_iou", "ocr": "vqa_acc_ocr"}


@dataclass
class SpecialistArgs:
    """Fine-tuning recipe for every specialist (method: all parameters, task data mixed with caption/SFT data)."""
    epochs: float = 4.0
    lr: float = 1e-3
    mix_ratio: float = 1.0           # caption samples per task sample: keeps the specialist writing prose
    with_sft: bool = True            # the whole SFT set mixed in too: the specialist still answers questions
    max_steps: int | None = None
    start: str = "pretrain"          # the base round's checkpoint to start from: "pretrain" (stage 2, the method)
                                     # or "sft" (its generalist: it already answers; docs/results.md "make demo")
    min_skill_gain: float | None = None   # a specialist whose own skill (SKILL_METRIC) gains less than this over
                                     # the base round's generalist does not recaption: its outputs would teach the
                                     # generalist its mistakes. None: every specialist recaptions (the method)


START_STAGES = ("pretrain", "sft")
# SpecialistArgs fields added after runs were recorded: left out of the pipeline key at these values, so those
# runs resume as the same pipeline
_KEY_DEFAULTS = {"start": "pretrain", "min_skill_gain": None}


@dataclass
class SpecialistConfig:
    specialists: dict = field(default_factory=dict)   # name -> task data path
    policy: str = "concat-specialist-qa"   # specialist-qa (original caption first) lost caption P×R: docs/results.md
    loop: LoopConfig = field(default_factory=LoopConfig)       # training / recaption / eval recipe of the generalist
    finetune: SpecialistArgs = field(default_factory=SpecialistArgs)
    prompts_file: str | None = None                   # a user prompts YAML adding specialists (default: built-in)


def latest_generalist(store) -> dict:
    """The newest finished self-augment round: what the specialists start from. Read from the self-augment
    pipeline's recorded steps (not from `models`, where the specialist round's own generalist is also a
    registration), so rerunning specialist-augment finds the same base and
    resumes instead of stacking a new specialist round on top of its own output."""
    import re

    rows = store.sql(
        "SELECT round, config, counts FROM runs WHERE kind = 'step' AND status = 'ok' "
        "AND json_extract_string(config, '$.pipeline') LIKE 'self-augment-%' ORDER BY finished_at DESC").to_pylist()
    steps = {(json.loads(r["config"])["pipeline"], json.loads(r["config"])["step"]): json.loads(r["counts"])
             for r in rows}
    for r in rows:
        cfg = json.loads(r["config"])
        m = re.fullmatch(r"round-(\d+)/train", cfg["step"])
        out = json.loads(r["counts"])
        if not m or not {"pretrain", "sft"} <= set(out.get("models", {})):
            continue
        build = steps.get((cfg["pipeline"], f"round-{m.group(1)}/build"), {})
        return {"round": int(m.group(1)), "caption_data": build.get("path"),
                "stages": {st: {"model_id": out["models"][st], "path": out["paths"][st]} for st in ("pretrain", "sft")}}
    raise InputError("no finished self-augment round in the store", "specialists fine-tune from a self-augmented model",
                     "run `curator run self-augment` first")


def run_specialist_augment(store, work_dir: str | Path, sft_data: str, eval_json: str, cfg: SpecialistConfig,
                           log: Callable[[str], None] = print, retag: bool = False) -> dict:
    from curator.build import build, question_pools
    from curator.filters import run_filters
    from curator.prompts import load_prompts
    from curator.recaption import recaption_in_processes as recaption

    if cfg.finetune.start not in START_STAGES:
        raise InputError(f"unsupported specialist start {cfg.finetune.start!r}",
                         f"specialists start from the base round's {' or '.join(START_STAGES)} checkpoint",
                         "e.g. --ft-start pretrain")
    if not cfg.specialists:
        raise InputError("no specialists given", "specialist-augment needs at least one name=task-data pair",
                         "e.g. --specialists spatial,grounding,ocr --world demo_out/world")
    # A user prompts YAML adds specialists to the built-in ones: its sets recaption its specialists, its
    # question pools join the built-in pools in the specialist-qa build (curator.build.question_pools).
    builtin = load_prompts()
    user = load_prompts(cfg.prompts_file) if cfg.prompts_file else None
    pools = question_pools(cfg.prompts_file)
    for name, data in cfg.specialists.items():
        if name not in builtin.sets and not (user and name in user.sets):
            known = sorted(set(builtin.sets) | set(user.sets if user else ()))
            raise InputError(f"specialist {name!r} has no prompt set", f"known sets: {', '.join(known)}",
                             "add a set (and a question pool) of that name to your prompts YAML (--prompts-file)")
        if name not in pools:
            raise InputError(f"specialist {name!r} has no question pool", f"pools: {', '.join(sorted(pools))}",
                             "add a question_pools entry of that name to your prompts YAML (--prompts-file)")
        if not Path(data).exists():
            raise InputError(f"task data for specialist {name!r} not found: {data}", "the path does not exist",
                             f"pass --specialist-data {name}=PATH")
    work = Path(work_dir).resolve()
    base = latest_generalist(store)
    R = base["round"] + 1          # the specialists' captions and the retrained generalist form round R
    lc = cfg.loop
    run = StepRunner(store, "specialist-augment", {
        "specialists": cfg.specialists, "policy": cfg.policy, "loop": lc.as_dict(),
        "finetune": {k: v for k, v in cfg.finetune.__dict__.items() if k not in _KEY_DEFAULTS or v != _KEY_DEFAULTS[k]},
        # specialists of a frozen-tower generalist keep the tower frozen (runs recorded before did not: a new key)
        **({"specialist_tower": "frozen"} if lc.train.freeze_vision else {}),
        "base": base["stages"]["sft"]["model_id"], "sft": str(sft_data),
        "eval": str(eval_json), "work": str(work), "prompts_file": cfg.prompts_file}, log=log)
    stage2 = base["stages"][cfg.finetune.start]   # the method's stage-2 checkpoint, or the round's generalist
    caption_data = base["caption_data"]     # the base round's caption build: mixed into each specialist's data

    before = json.loads(store.sql(
        f"SELECT metrics FROM models WHERE model_id = '{base['stages']['sft']['model_id']}'").to_pylist()[0]["metrics"])
    spec_out, spec_eval, unused = {}, {}, {}
    for name, data in sorted(cfg.specialists.items()):
        def ft(name=name, data=data):
            from curator.training import train_specialist

            f = cfg.finetune
            return train_specialist(store, work / "models" / f"specialist-{name}", stage2["model_id"], data, role=name,
                                    caption_data=caption_data, round=R, mix_ratio=f.mix_ratio, seed=lc.seed,
                                    sft_data=str(sft_data) if f.with_sft else None,
                                    epochs=f.epochs, lr=f.lr, batch_size=lc.train.batch_size, max_steps=f.max_steps,
                                    # the tower stays as the generalist trained it: a pretrained (foundation) tower
                                    # the loop froze is not retrained at the fine-tune's learning rate
                                    freeze_vision=lc.train.freeze_vision, device=lc.train.device,
                                    nproc=lc.train.nproc if lc.train.nproc > 1 else None,
                                    progress=False)

        spec_out[name] = run.step(f"specialist/{name}/finetune", ft, round=R)
        # the specialist's own skill on the held-out set, against the base round's generalist (SKILL_METRIC)
        spec_eval[name] = run.step(f"specialist/{name}/eval", lambda name=name: evaluate_and_record(
            store, spec_out[name]["model_id"], eval_json, lc, work / "eval" / f"specialist-{name}.json"), round=R)
        gain = _skill_gain(name, before, spec_eval[name]["metrics"])
        if cfg.finetune.min_skill_gain is not None and gain is not None and gain < cfg.finetune.min_skill_gain:
            unused[name] = (f"{SKILL_METRIC[name]} {gain:+.3f} over round {base['round']}'s generalist, "
                            f"below the minimum gain {cfg.finetune.min_skill_gain:+.3f}")
            run.log(f"[specialist] {name} does not recaption: {unused[name]}")
            continue
        if gain is not None:
            run.log(f"[specialist] {name}: {SKILL_METRIC[name]} {gain:+.3f} over round {base['round']}'s generalist")
        r = lc.recaption
        run.step(f"specialist/{name}/recaption", lambda name=name: recaption(
            store, R, spec_out[name]["path"], workers=r.procs, prompts=name, kind=name, engine=r.engine,
            limit=r.limit, batch_size=r.batch_size, max_new_tokens=r.max_new_tokens, seed=lc.seed,
            device=lc.train.device,
            prompts_file=cfg.prompts_file if user and name in user.sets else None, progress=False), round=R)
        if lc.filters:
            run.step(f"specialist/{name}/filter", lambda name=name: run_filters(
                store, R, filters=[f for f in lc.filters if f != "template"], kind=name), round=R)

    def do_build():
        b = build(store, R, policy=cfg.policy, format=lc.format, seed=lc.seed, prompts_file=cfg.prompts_file,
                  out=str(work / "builds" / f"round-{R}-{cfg.policy}"), overwrite=True)
        return {"build_id": b.build_id, "path": str(Path(b.out_dir).resolve()), "rows": b.rows,
                "counts": b.manifest.get("counts", {})}

    skills = {n: {"metric": SKILL_METRIC.get(n), "base": before.get(SKILL_METRIC.get(n)),
                  "specialist": spec_eval[n]["metrics"].get(SKILL_METRIC.get(n)), "used": n not in unused}
              for n in spec_eval}
    res = {"round": R, "base_round": base["round"], "specialists": spec_out, "metrics_before": before,
           "specialist_skills": skills, "unused": unused}
    if len(unused) == len(cfg.specialists):
        # no specialist adds data: the round would retrain on the base round's data alone
        run.log(f"[specialist] no specialist lifted its own skill by {cfg.finetune.min_skill_gain:+.3f}: "
                f"round {R} is not trained")
        return {**res, "build": None, "models": None, "metrics": None, "ran": run.ran, "skipped": run.skipped}
    b = run.step(f"round-{R}/build", do_build, round=R)
    t = run.step(f"round-{R}/train", lambda: train_and_register(
        store, work, f"round-{R}-specialist", b["build_id"], sft_data, lc, R,
        parent=base["stages"]["sft"]["model_id"]), round=R)
    e = run.step(f"round-{R}/eval", lambda: evaluate_and_record(
        store, t["models"]["sft"], eval_json, lc, work / "eval" / f"round-{R}-specialist.json"), round=R)
    run.step(f"round-{R}/tag", lambda: tag_state(store, run.pipeline_id, f"round-{R}", retag=retag, log=run.log),
             round=R)
    return {**res, "build": b, "models": t["models"], "metrics": e["metrics"], "ran": run.ran, "skipped": run.skipped}


def _skill_gain(name: str, before: dict, after: dict) -> float | None:
    """A built-in specialist's gain on its own skill over the base generalist (None: no metric for it)."""
    k = SKILL_METRIC.get(name)
    a, b = before.get(k), after.get(k)
    return b - a if k and isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
