"""Recaption a round's pretraining images with a checkpoint: exactly-once, batch by batch.

Exactly-once comes from the keys, not from bookkeeping: every (image, round, kind, captioner, prompt draw)
has one deterministic caption_id, the prompt draw is a hash of (seed, image_id), and each batch is ONE
commit of insert-only rows. A run killed mid-way loses at most the batch it had not committed; the rerun
selects the same images, finds their caption_ids present, skips them (and says how many), and does the rest.
Two processes on disjoint shards (`shard=(i, n)`, a hash of image_id) write disjoint keys; the store's
insert-only merge retries a commit that lost a race, so both land.

Images are decoded and resized to the model's input size here, before the engine, in a prefetch thread
that overlaps the next batch's decode with the current batch's generation (decode/resize is often the
bottleneck, not the model). Load or generate failures go to the `failures` table with the reason; those
images have no caption, so the next run selects them again (retried, never silently skipped).
"""
from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

from curator import schema
from curator.errors import InputError
from curator.engines.work import (ENGINES, Job, Sampling, WorkItem, batches_by_image, generate_and_write, load_batch,
                                  make_engine, model_input_size)
from curator.prompts import load_prompts


def shard_of(image_id: str, n: int) -> int:
    """Stable shard of an image: a hash of its id, so shards do not depend on order or on the selection."""
    return int(hashlib.sha256(image_id.encode()).hexdigest()[:15], 16) % n


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return (0, 1)
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise InputError(f"bad --shard {text!r}", "expected i/n with integers", "e.g. --shard 0/2") from None
    if n < 1 or not 0 <= i < n:
        raise InputError(f"bad --shard {text!r}", f"need 0 <= i < n, got i={i}, n={n}", "e.g. --shard 1/2")
    return (i, n)


def select_work(store, round: int, model_hash: str, prompts: str, kind: str, where: str | None,
                limit: int | None, shard: tuple[int, int], seed: int, prompts_file=None, n_samples: int = 1):
    """(work items to do, skipped count, selected count, retried count). Deterministic for the same arguments.
    With n_samples > 1 an image has n_samples items (sample_idx 0..n-1); counts are in items (captions), not images."""
    book = load_prompts(prompts_file)
    book.prompt_set(prompts)   # fail early on an unknown set
    cond = where or "split = 'train'"
    try:
        ids = store.sql(f"SELECT image_id FROM images WHERE {cond} ORDER BY image_id").column("image_id").to_pylist()
    except InputError as e:
        raise InputError(f"--where {cond!r} failed", e.why,
                         "it is a SQL condition over the images table, e.g. \"split = 'train' AND source = 'folder'\"; "
                         "reach captions with EXISTS (SELECT 1 FROM captions c WHERE c.image_id = images.image_id …)") from None
    i, n = shard
    if n > 1:
        ids = [x for x in ids if shard_of(x, n) == i]
    if limit is not None:
        ids = ids[:limit]
    items = []
    for image_id in ids:
        p = book.draw(prompts, image_id, seed)
        items += [WorkItem(image_id, p.id, p.text, schema.caption_key(image_id, round, kind, model_hash, p.id, j), j)
                  for j in range(n_samples)]
    con = store.connect()
    try:
        done = set(r[0] for r in con.sql(
            "SELECT caption_id FROM captions WHERE round = $r AND kind = $k AND captioner = $c AND transform = ''",
            params={"r": int(round), "k": kind, "c": model_hash}).fetchall())
        failed_before = set(r[0] for r in con.sql(
            "SELECT DISTINCT image_id FROM failures WHERE round = $r AND kind = $k",
            params={"r": int(round), "k": kind}).fetchall())
    finally:
        con.close()
    todo = [it for it in items if it.caption_id not in done]
    retried = len({it.image_id for it in todo if it.image_id in failed_before})
    return todo, len(items) - len(todo), len(items), retried


def recaption(store, round: int, model: str, prompts: str = "vila2", kind: str = "self",
              engine: str = "transformers", where: str | None = None, limit: int | None = None,
              shard: tuple[int, int] = (0, 1), batch_size: int = 32, max_new_tokens: int = 128,
              do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
              device: str = "cpu", image_size: int | None = None, prompts_file: str | None = None,
              address: str | None = None, num_workers: int = 1, worker_engine: str | None = None,
              dtype: str | None = None, n: int = 1,
              progress: bool = True, on_batch=None) -> dict:
    """Append round `round` captions of kind `kind` written by checkpoint `model`. Returns counts:
    selected, skipped (already captioned), added, failed, retried (failed before, tried again), images_per_s.
    `engine` is a name (the engine is loaded here and closed at the end) or a loaded engine object such as
    curator.engines.vllm_engine.VLLMEngine (reused across calls; its owner closes it).
    n > 1 (with do_sample) writes n sampled captions per image, sample_idx 0..n-1, each its own caption_id."""
    from vila2_model.checkpoint import content_hash
    from vila2_model.errors import ModelError

    given = None if isinstance(engine, str) else engine   # an engine object already loaded by the caller
    engine = engine if given is None else given.name
    if engine not in ENGINES:
        raise InputError(f"unsupported engine {engine!r}", f"choose one of {', '.join(ENGINES)}", "e.g. --engine transformers")
    if round < 1:
        raise InputError(f"--round {round} cannot be recaptioned", "round 0 holds the original captions",
                         "recaption round 1 or later")
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size} must be ≥ 1", "", "e.g. --batch-size 32")
    if n < 1 or (n > 1 and not do_sample):
        raise InputError(f"--n {n} is not a number of samples", "n ≥ 1 captions per image; n > 1 needs sampling "
                         "(greedy decoding gives the same caption n times)", "e.g. --n 4 --sample --temperature 0.8")
    try:
        captioner = content_hash(model)
    except ModelError as e:
        raise InputError(e.what, e.why, e.fix) from None
    sampling = asdict(Sampling(max_new_tokens, do_sample, temperature, top_p, seed))
    if n > 1:
        sampling["n"] = n   # absent for one caption per image, so those rows read as before
    todo, skipped, selected, retried = select_work(store, round, captioner, prompts, kind, where, limit, shard,
                                                   seed, prompts_file, n_samples=n)
    size, max_pixels = model_input_size(model)
    if image_size:
        size, max_pixels = (image_size, image_size), None
    config = {"model": str(model), "captioner": captioner, "prompts": prompts, "kind": kind, "engine": engine,
              "worker_engine": worker_engine,
              "where": where, "limit": limit, "shard": list(shard), "batch_size": batch_size,
              "sampling": sampling, "image_size": size, "device": device, "address": address,
              "prompts_file": str(prompts_file) if prompts_file else None}
    run_id = store.start_run("recaption", round, config)
    job = Job(store.uri, store.storage_options, str(model), captioner, round, kind, sampling, run_id, batch_size,
              size, max_pixels, device)
    counts = {"selected": selected, "skipped": skipped, "todo": len(todo), "added": 0, "failed": 0,
              "retried": retried, "run_id": run_id, "captioner": captioner}
    t0 = time.perf_counter()
    try:
        if todo and engine == "ray":
            from curator.engines.ray_engine import run_ray

            c = run_ray(job, todo, address=address, num_workers=num_workers, progress=progress,
                        worker_engine=worker_engine)
            counts["actors"] = c["actors"]
            counts["added"] += c["added"]
            counts["failed"] += c["failed"]
        elif todo and given is not None:
            _run_local(store, given, job, todo, counts, progress, on_batch)
        elif todo:
            t_load = time.perf_counter()
            eng = make_engine(engine, model, device, dtype=dtype)
            counts["load_seconds"] = float(f"{time.perf_counter() - t_load:.3f}")
            try:
                _run_local(store, eng, job, todo, counts, progress, on_batch)
            finally:
                getattr(eng, "close", lambda: None)()
    except BaseException as e:
        counts["seconds"] = float(f"{time.perf_counter() - t0:.3f}")
        store.finish_run(run_id, "failed", counts, error=(str(e).splitlines() or [type(e).__name__])[0])
        raise
    counts["seconds"] = float(f"{time.perf_counter() - t0:.3f}")
    counts["images_per_s"] = float(f"{counts['added'] / counts['seconds']:.2f}") if counts["seconds"] > 0 else 0.0
    store.finish_run(run_id, "ok", counts)
    return counts


def recaption_in_processes(store, round: int, model: str, workers: int = 1, **kw) -> dict:
    """recaption() split over `workers` local processes, shard i of `workers` each (what `curator recaption
    --shard i/N` does from N shells), one compute thread each: on CPU, N single-thread processes generate
    faster than one process with N threads. Returns the shards' summed counts (run_ids: one per shard).
    A failed shard fails the call once the others have finished; what they wrote stays, and a rerun does
    only what is left (select_work)."""
    if workers <= 1:
        return recaption(store, round, model, **kw)
    if kw.get("engine", "transformers") != "transformers" or kw.get("shard", (0, 1)) != (0, 1):
        raise InputError("local recaption processes split the transformers engine's work only",
                         f"got engine {kw.get('engine')!r}, shard {kw.get('shard', (0, 1))}",
                         "use workers=1 with another engine or an explicit shard")
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        futs = [ex.submit(_shard_in_process, store.uri, store.storage_options, round, str(model), (i, workers), kw)
                for i in range(workers)]
        outs, errors = [], []
        for f in futs:
            try:
                outs.append(f.result())
            except Exception as e:   # noqa: BLE001 — the first shard's error is raised below, after all finish
                errors.append(e)
    if errors:
        raise errors[0]
    counts = {k: sum(o[k] for o in outs) for k in ("selected", "skipped", "todo", "added", "failed", "retried")}
    counts.update(run_ids=[o["run_id"] for o in outs], run_id=outs[0]["run_id"], captioner=outs[0]["captioner"],
                  workers=workers, seconds=float(f"{time.perf_counter() - t0:.3f}"))
    counts["images_per_s"] = float(f"{counts['added'] / counts['seconds']:.2f}") if counts["seconds"] > 0 else 0.0
    return counts


def _shard_in_process(uri: str, storage_options, round: int, model: str, shard: tuple[int, int], kw: dict) -> dict:
    import torch

    from curator.store import Store

    torch.set_num_threads(1)
    return recaption(Store(uri, storage_options=storage_options), round, model, shard=shard,
                     **{**kw, "progress": False})


def _run_local(store, eng, job: Job, todo: list[WorkItem], counts: dict, progress: bool, on_batch) -> None:
    from tqdm.auto import tqdm

    batches = batches_by_image(todo, job.batch_size)
    bar = tqdm(total=len(todo), desc=f"recaption round {job.round}", unit="img", disable=not progress)
    # Prefetch: decode/resize batch k+1 in a thread while batch k generates (torch releases the GIL).
    with ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(load_batch, store, job, batches[0])
        for k in range(len(batches)):
            items, images, fails = fut.result()
            if k + 1 < len(batches):
                fut = pool.submit(load_batch, store, job, batches[k + 1])
            c = generate_and_write(store, eng, job, items, images, fails)
            counts["added"] += c["added"]
            counts["failed"] += c["failed"]
            bar.update(len(batches[k]))
            if on_batch:
                on_batch(k, c)
    bar.close()


def format_summary(counts: dict) -> str:
    lines = [f"run {counts['run_id']}  captioner {counts['captioner'][:12]}",
             f"  selected {counts['selected']}  already captioned (skipped) {counts['skipped']}  to do {counts['todo']}",
             f"  added {counts['added']}  failed {counts['failed']} (recorded in `failures`, retried next run)"]
    if counts.get("retried"):
        lines.append(f"  retried {counts['retried']} image(s) that failed in an earlier run")
    if "seconds" in counts:
        load = f" (model load {counts['load_seconds']:.1f} s)" if "load_seconds" in counts else ""
        lines.append(f"  {counts['seconds']:.1f} s{load}, {counts.get('images_per_s', 0):.2f} images/s")
    return "\n".join(lines)
