"""The curator side of training and evaluation: run vila2_model on a build, register every checkpoint in the
store's `models` table with its lineage, and grade checkpoints on the synthetic world's held-out set.

vila2_model knows nothing of the store; this module is the only place the two meet for `curator train`,
`curator train-specialist` and `curator eval` (the pipelines call the same functions).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from curator.errors import InputError


@contextmanager
def _model_errors():
    """vila2_model raises ModelError (what — why — fix); the CLI prints CuratorErrors, so translate."""
    from vila2_model.errors import ModelError

    try:
        yield
    except ModelError as e:
        raise InputError(e.what, e.why, e.fix) from e


def resolve_build(store, data: str) -> tuple[str, str, int | None]:
    """`data` = a build_id from the builds table, or a training-set path. Returns (path, trained_on, round):
    trained_on is the build_id when the path is a registered build's output, else the path itself."""
    rows = store.sql("SELECT build_id, output_path, round FROM builds").to_pylist()
    for r in rows:
        if r["build_id"] == data:
            return r["output_path"], r["build_id"], r["round"]
    p = Path(data)
    if not p.exists():
        raise InputError(f"training data {data!r} not found", "it is neither a build_id in the builds table nor a path",
                         "run `curator builds` to list builds, or pass a build output directory")
    for r in rows:
        if Path(r["output_path"]).resolve() == p.resolve():
            return str(p), r["build_id"], r["round"]
    return str(p), str(p.resolve()), None


def train(store, out_dir: str | Path, data: str, sft: str, round: int | None = None, recipe: str | None = None,
          role: str = "generalist", parent_model_id: str = "", **overrides) -> dict:
    """Three stages on `data` (build_id or path) + the SFT set, then one `models` row per stage:
    align's parent is `parent_model_id` (e.g. the previous round's SFT model, for lineage), each later stage's
    parent is the stage before it. Returns {"models": {stage: model_id}, "paths": {stage: dir}}.

    Data parallel: `nproc=N` (an override or a recipe key) starts N training processes from here; this process
    alone touches the store. Under torchrun every rank calls this function: rank 0 reads the store, tells the
    other ranks the build's path, and registers the checkpoints; the others pass store=None."""
    from vila2_model.checkpoint import content_hash
    from vila2_model.distributed import broadcast, init_from_env
    from vila2_model.train import load_recipe, train_vlm

    with _model_errors():
        args = load_recipe(recipe) if recipe else {}
        args.update({k: v for k, v in overrides.items() if v is not None})
        r = init_from_env(args.get("device", "cpu"))   # a no-op unless torchrun started this process
        if r.main:
            path, trained_on, build_round = resolve_build(store, data)
            round = build_round if round is None else round
            if round is None:
                raise InputError("the round of this training run is unknown", f"{data} is not a registered build",
                                 "pass --round N")
            world = r.world if r.world > 1 else int(args.get("nproc", 1))
            global_batch = int(args.get("batch_size", 32))
            run_id = store.start_run("train", round, {
                "data": trained_on, "sft": str(sft), "recipe": recipe, "args": args, "out": str(out_dir),
                "data_parallel": {"processes": world, "global_batch": global_batch,
                                  "per_process_batch": -(-global_batch // world),
                                  "lr_schedule": "cosine per stage over its steps of the global batch, 3% warmup"}})
        path = broadcast(path if r.main else None, r)
        try:
            paths = train_vlm(out_dir, path, sft, **args)
        except BaseException as e:
            if r.main:
                store.finish_run(run_id, "failed", error=(str(e).splitlines() or [type(e).__name__])[0])
            raise
    if not r.main:
        return {"models": {}, "paths": {k: str(Path(v).resolve()) for k, v in paths.items()}, "run_id": None}
    if args.get("init_from"):
        preset = f"init:{args['init_from']}"
    elif args.get("vision_from") or args.get("llm_from"):
        preset = f"parts:{Path(str(args.get('vision_from'))).name}+{Path(str(args.get('llm_from'))).name}"
    else:
        preset = args.get("preset", "tiny")
    ids, prev, stages = {}, parent_model_id, {}
    for stage in ("align", "pretrain", "sft"):
        if stage not in paths:
            continue
        mid = content_hash(paths[stage])
        store.register_model({"model_id": mid, "round": round, "role": role, "stage": stage,
                              "path": str(Path(paths[stage]).resolve()), "preset": str(preset),
                              "trained_on": trained_on if stage != "sft" else str(Path(sft).resolve()),
                              "parent_model_id": prev or "", "run_id": run_id})
        meta = json.loads((Path(paths[stage]) / "vila2_train.json").read_text())
        stages[stage] = {k: meta.get(k) for k in ("steps", "samples", "samples_per_s", "schedule", "ranks",
                                                  "precision", "attention")}
        ids[stage], prev = mid, mid
    store.finish_run(run_id, "ok", {"models": ids, "stages": stages})
    return {"models": ids, "paths": {k: str(Path(v).resolve()) for k, v in paths.items()}, "run_id": run_id}


def train_specialist(store, out_dir: str | Path, stage2: str, task_data: str, role: str,
                     caption_data: str | None = None, round: int | None = None, mix_ratio: float = 1.0,
                     sft_data: str | None = None, **overrides) -> dict:
    """Fine-tune a specialist from a stage-2 checkpoint (model_id or path) on task data mixed with caption
    and SFT data, and register it (stage 'specialist', parent = the stage-2 model)."""
    from vila2_model.checkpoint import content_hash
    from vila2_model.train import finetune_specialist

    if sft_data and not Path(sft_data).exists():
        raise InputError(f"SFT data {sft_data} not found", "the path does not exist",
                         "pass the world's sft/data.json (or your SFT set)")
    with _model_errors():
        ckpt, parent = model_path(store, stage2)
        row = _model_row(store, parent)
        round = round if round is not None else (row or {}).get("round")
        run_id = store.start_run("train", round, {"specialist": role, "parent": parent, "task": str(task_data),
                                                  "captions": str(caption_data), "mix_ratio": mix_ratio,
                                                  "sft": str(sft_data) if sft_data else None,
                                                  "args": overrides})
        try:
            out = finetune_specialist(out_dir, ckpt, task_data, caption_data, mix_ratio=mix_ratio, sft_data=sft_data,
                                      **{k: v for k, v in overrides.items() if v is not None})
        except BaseException as e:
            store.finish_run(run_id, "failed", error=(str(e).splitlines() or [type(e).__name__])[0])
            raise
    mid = content_hash(out)
    store.register_model({"model_id": mid, "round": round, "role": role, "stage": "specialist",
                          "path": str(Path(out).resolve()), "preset": (row or {}).get("preset", ""),
                          "trained_on": str(Path(task_data).resolve()), "parent_model_id": parent, "run_id": run_id})
    store.finish_run(run_id, "ok", {"model_id": mid})
    return {"model_id": mid, "path": str(Path(out).resolve()), "run_id": run_id}


def _model_row(store, model_id: str) -> dict | None:
    """The latest registration of checkpoint model_id (a checkpoint may be registered for several rounds)."""
    rows = store.sql(f"SELECT * FROM models WHERE model_id = '{model_id}' ORDER BY created_at DESC, trained_on "
                     "LIMIT 1").to_pylist() if model_id.isalnum() else []
    return rows[0] if rows else None


def model_path(store, model: str) -> tuple[str, str]:
    """(checkpoint dir, model_id) for a model_id (or unique prefix) in the models table or a checkpoint path."""
    from vila2_model.checkpoint import content_hash

    p = Path(model)
    if (p / "config.json").is_file():
        return str(p), content_hash(p)
    if model.isalnum():
        # one row per checkpoint (registrations of one checkpoint share its id): its latest registered path
        rows = store.sql(f"SELECT model_id, arg_max(path, created_at) AS path FROM models "
                         f"WHERE model_id LIKE '{model}%' GROUP BY model_id").to_pylist()
        if len(rows) == 1:
            return rows[0]["path"], rows[0]["model_id"]
        if len(rows) > 1:
            raise InputError(f"model id prefix {model!r} is ambiguous", f"it matches {len(rows)} models",
                             "pass more characters of the model_id")
    raise InputError(f"model {model!r} not found", "it is neither a checkpoint directory nor a model_id in the store",
                     "run `curator models` to list registered models")


def evaluate(store, model: str, eval_json: str | Path, out_json: str | Path | None = None,
             limit: int | None = None, device: str = "cpu", grounding: bool = True) -> dict:
    """Generate with vila2_model.evaluate.predict, grade with curator.world.grade.grade_eval, add the alt-text
    baseline, store the metrics on the model's row (registering an unregistered checkpoint as role
    'external') and write a JSON file with metrics + predictions. Returns {"metrics", "alt_text", "json"}."""
    from curator.world.grade import grade_alt_text, grade_eval
    from vila2_model.evaluate import predict

    eval_json = Path(eval_json)
    if not eval_json.is_file():
        raise InputError(f"eval set {eval_json} not found", "evaluation needs the world's eval/eval.json",
                         "generate a world (`curator world --out DIR`) and pass DIR/eval/eval.json")
    with _model_errors():
        ckpt, model_id = model_path(store, model)
        row = _model_row(store, model_id)
        run_id = store.start_run("eval", (row or {}).get("round"), {"model_id": model_id, "eval": str(eval_json),
                                                                   "limit": limit})
        items = json.loads(eval_json.read_text())[:limit]
        preds = predict(ckpt, eval_json, limit=limit, device=device,
                        grounding_prompt=None if not grounding else
                        items[0].get("grounding_prompt") if items else None)
    metrics = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in grade_eval(preds, items).items()}
    alt = {k: round(v, 4) for k, v in grade_alt_text(items).items()}
    if row is None:
        store.register_model({"model_id": model_id, "round": None, "role": "external", "stage": "",
                              "path": str(Path(ckpt).resolve()), "preset": "", "trained_on": "",
                              "parent_model_id": "", "run_id": run_id})
    store.update_model_metrics(model_id, metrics)
    out = Path(out_json) if out_json else Path(ckpt) / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model_id": model_id, "eval": str(eval_json), "metrics": metrics,
                               "alt_text": alt, "predictions": preds}, indent=1))
    store.finish_run(run_id, "ok", {"metrics": metrics})
    return {"model_id": model_id, "metrics": metrics, "alt_text": alt, "json": str(out)}


def list_models(store) -> pa.Table:
    """Every registration (a checkpoint trained in two rounds is listed for both)."""
    return store.sql("SELECT model_id, round, role, stage, preset, parent_model_id, trained_on, metrics, path, "
                     "created_at FROM models ORDER BY created_at, model_id, round")
