"""What both engines share: the recaption work item, the job a worker runs, and batch load → generate → commit.

The local driver (curator.recaption) and the Ray driver (curator.engines.ray_engine) both import this module, so
neither imports the other. Image decoding happens here, once per image, resized to what the checkpoint's
processor expects; failures become `failures` rows with their reason and never stop the batch.

Several samples per image (`n` in the sampling dict, only when > 1): one work item per (image, sample_idx), one
engine request per image that returns n samples; a batch always holds all of an image's items, so one commit
lands all of an image's samples. One bad request never fails the batch: an engine returns an exception in that
request's place, and when an engine call fails as a whole the batch is split until the failing requests are
alone (each goes to `failures` with its reason, the rest lands).
"""
from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from curator.errors import InputError

ENGINES = ("transformers", "vllm", "ray")


@dataclass
class Sampling:
    max_new_tokens: int = 128   # captions longer than this end with finish_reason='length' (truncation filter)
    do_sample: bool = False     # greedy by default: reproducible, and engines agree on CPU
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0               # sampling seed AND the prompt-draw seed (which long prompt an image gets)


@dataclass
class WorkItem:
    image_id: str
    prompt_id: str
    prompt: str
    caption_id: str
    sample_idx: int = 0


@dataclass
class Job:
    """Everything a worker needs to turn WorkItems into caption rows (plain data: Ray ships it to actors)."""
    store_uri: str
    storage_options: dict | None
    model: str
    captioner: str
    round: int
    kind: str
    sampling: dict
    run_id: str
    batch_size: int
    image_size: tuple[int, int] | None   # (width, height) to resize to before the engine; None = as stored
    max_pixels: int | None = None        # for dynamic-resolution models (Qwen2-VL): cap width*height
    device: str = "cpu"
    counts: dict = field(default_factory=dict)


def model_input_size(ckpt: str) -> tuple[tuple[int, int] | None, int | None]:
    """(width, height) the checkpoint's image processor resizes to, or (None, max_pixels) for dynamic-resolution
    processors — read from preprocessor_config.json so images are resized once, before the engine."""
    p = Path(ckpt) / "preprocessor_config.json"
    if not p.is_file():
        p = Path(ckpt) / "processor_config.json"
    if not p.is_file():
        return None, None
    cfg = json.loads(p.read_text())
    cfg = cfg.get("image_processor", cfg)
    size = cfg.get("size") or {}
    if isinstance(size, int):
        return (size, size), None
    if "max_pixels" in cfg or "temporal_patch_size" in cfg or "Qwen" in str(cfg.get("image_processor_type", "")):
        # Qwen2-VL family: dynamic resolution; `size` holds pixel *areas* (shortest_edge = min_pixels,
        # longest_edge = max_pixels), so cap the area instead of forcing a square.
        return None, int(cfg.get("max_pixels") or size.get("longest_edge"))
    if "height" in size and "width" in size:
        return (int(size["width"]), int(size["height"])), None
    if "shortest_edge" in size:
        crop = cfg.get("crop_size") or {}
        if "height" in crop:
            return (int(crop["width"]), int(crop["height"])), None
        return (int(size["shortest_edge"]), int(size["shortest_edge"])), None
    return None, None


def decode_resize(data: bytes, image_size, max_pixels):
    """The pixels the model sees: frame 0, EXIF orientation applied, RGB, resized for the checkpoint — to
    image_size (width, height), or down to max_pixels keeping the aspect ratio. Ingest stores images upright
    with no EXIF orientation left in the bytes, so here the transpose is a no-op for them; it matters only
    for bytes that entered the store another way, and either way it happens exactly once. A large JPEG is
    decoded at a reduced scale (Image.draft: the decoder's DCT scaling to 1/2, 1/4 or 1/8, never below the
    target size), so a 24-megapixel photo never becomes 72 MB of pixels just to be shrunk to 448 px."""
    from PIL import Image, ImageOps

    im = Image.open(io.BytesIO(data))
    if im.format in ("JPEG", "MPO"):
        _draft(im, image_size, max_pixels)
    try:
        im = ImageOps.exif_transpose(im)   # loads frame 0; a copy when upright
    except (ValueError, TypeError, SyntaxError, struct.error):   # a damaged EXIF block: upright, as ingest read it
        im.load()
    im = im.convert("RGB") if im.mode != "RGB" else im
    if image_size and im.size != tuple(image_size):
        im = im.resize(tuple(image_size), Image.BICUBIC)
    elif max_pixels and im.width * im.height > max_pixels:
        s = (max_pixels / (im.width * im.height)) ** 0.5
        im = im.resize((max(28, int(im.width * s)), max(28, int(im.height * s))), Image.BICUBIC)
    return im


def _draft(im, image_size, max_pixels) -> None:
    """Ask the JPEG decoder for the smallest DCT scale still at least the target size (in stored orientation)."""
    w, h = im.size
    if image_size:
        tw, th = image_size
    elif max_pixels and w * h > max_pixels:
        s = (max_pixels / (w * h)) ** 0.5
        tw, th = max(28, int(w * s)), max(28, int(h * s))
    else:
        return
    from PIL import ExifTags

    try:
        turned = im.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)
    except (ValueError, TypeError, SyntaxError, struct.error):
        turned = False
    if turned:   # turned by 90°: the stored axes are swapped
        tw, th = th, tw
    if w >= 2 * tw and h >= 2 * th:
        im.draft("RGB", (tw, th))


def _now():
    return datetime.now(timezone.utc)


def batches_by_image(todo: list[WorkItem], batch_size: int) -> list[list[WorkItem]]:
    """Chunks of at most `batch_size` images; an image's sample items (consecutive in `todo`) stay together."""
    groups: list[list[WorkItem]] = []
    for it in todo:
        if groups and groups[-1][0].image_id == it.image_id:
            groups[-1].append(it)
        else:
            groups.append([it])
    return [[it for g in groups[k:k + batch_size] for it in g] for k in range(0, len(groups), batch_size)]


def load_batch(store, job: Job, items: list[WorkItem]):
    """Decode + resize a batch (each image once). Returns (ok items, one image per ok item, failure rows)."""
    fails, ok, images = [], [], []
    ids = list(dict.fromkeys(it.image_id for it in items))
    try:
        data = store.image_bytes(ids)
    except Exception:  # a missing/unreadable row: fall back to one at a time to find the bad ones
        data = {}
        for i in ids:
            try:
                data.update(store.image_bytes([i]))
            except Exception as e1:   # noqa: PERF203 — rare path
                fails += [_failure(job, it, "load", e1) for it in items if it.image_id == i][:1]
    decoded: dict = {}
    for it in items:
        if it.image_id not in data:
            continue
        if it.image_id not in decoded:
            try:
                decoded[it.image_id] = decode_resize(data[it.image_id], job.image_size, job.max_pixels)
            except Exception as e:  # corrupt bytes, unknown format: recorded with the reason, retried next run
                decoded[it.image_id] = None
                fails.append(_failure(job, it, "load", e))
        if decoded[it.image_id] is not None:
            images.append(decoded[it.image_id])
            ok.append(it)
    return ok, images, fails


def _failure(job: Job, it: WorkItem, stage: str, e: BaseException) -> dict:
    reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
    return {"run_id": job.run_id, "image_id": it.image_id, "round": job.round, "kind": job.kind,
            "stage": stage, "reason": reason, "created_at": _now()}


def caption_rows(job: Job, items: list[WorkItem], outs) -> list[dict]:
    sampling = json.dumps(job.sampling, sort_keys=True)
    now = _now()
    return [{"caption_id": it.caption_id, "image_id": it.image_id, "round": job.round, "kind": job.kind,
             "text": o.text, "captioner": job.captioner, "prompt_id": it.prompt_id, "prompt": it.prompt,
             "sampling": sampling, "sample_idx": int(it.sample_idx), "finish_reason": o.finish_reason,
             "n_tokens": int(o.n_tokens), "parent_caption_id": "", "transform": "", "run_id": job.run_id,
             "created_at": now}
            for it, o in zip(items, outs)]


def _requests(items: list[WorkItem]) -> list[list[int]]:
    """Item indices grouped into engine requests: one request per (image, prompt), its samples in one request."""
    reqs: dict = {}
    for k, it in enumerate(items):
        reqs.setdefault((it.image_id, it.prompt_id, it.prompt), []).append(k)
    return list(reqs.values())


def generate_isolated(engine, images: list, prompts: list[str], sampling: dict, batch_size: int) -> list:
    """engine.generate, with failures isolated to their requests: a list of n results per request (GenOut or
    the exception that request raised). A whole-call exception splits the requests in halves until each failing
    request is alone, so one bad request costs its own row, never the batch."""
    n = int(sampling.get("n", 1))
    try:
        flat = engine.generate(images, prompts, sampling, batch_size)
    except Exception as e:   # noqa: BLE001 — recorded per request below
        if len(images) == 1:
            return [[e] * n]
        h = len(images) // 2
        return (generate_isolated(engine, images[:h], prompts[:h], sampling, batch_size)
                + generate_isolated(engine, images[h:], prompts[h:], sampling, batch_size))
    return [list(flat[r * n:(r + 1) * n]) for r in range(len(images))]


def generate_and_write(store, engine, job: Job, items, images, fails) -> dict:
    """Generate one loaded batch and commit it (captions: one commit; failures: one commit)."""
    added = 0
    fails = list(fails)
    if items:
        groups = _requests(items)
        res = generate_isolated(engine, [images[g[0]] for g in groups], [items[g[0]].prompt for g in groups],
                                job.sampling, job.batch_size)
        done_items, outs = [], []
        for g, samples in zip(groups, res):
            bad = next((o for o in samples if isinstance(o, BaseException)), None)
            if bad is not None:   # the request failed: one failures row for the image, with the reason
                fails.append(_failure(job, items[g[0]], "generate", bad))
                continue
            for k in g:
                done_items.append(items[k])
                outs.append(samples[items[k].sample_idx])
        if done_items:
            added = store.add_captions(caption_rows(job, done_items, outs), run_id=job.run_id)
    if fails:
        store.add_failures(fails, run_id=job.run_id)
    return {"added": added, "failed": len(fails)}


def make_engine(engine: str, model: str, device: str, **kw):
    """Dispatch on the engine literal (ray is a driver around these, see engines/ray_engine.py)."""
    if engine == "transformers":
        from curator.engines.transformers_engine import TransformersEngine

        return TransformersEngine(model, device=device, dtype=kw.get("dtype"))
    if engine == "vllm":
        from curator.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model, device=device, **{k: v for k, v in kw.items() if k in VLLM_KEYS and v is not None})
    raise InputError(f"unsupported engine {engine!r}", f"choose one of {', '.join(ENGINES)}", "e.g. --engine transformers")


VLLM_KEYS = ("dtype", "gpu_memory_utilization", "tensor_parallel_size", "max_model_len", "kv_cache_bytes",
             "cpu_threads")
