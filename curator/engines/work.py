"""What both engines share: the recaption work item, the job a worker runs, and batch load → generate → commit.

The local driver (curator.recaption) and the Ray driver (curator.engines.ray_engine) both import this module, so
neither imports the other. Image decoding happens here, once per image, resized to what the checkpoint's
processor expects; failures become `failures` rows with their reason and never stop the batch.
"""
from __future__ import annotations

import io
import json
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
    im = ImageOps.exif_transpose(im)   # loads frame 0; returns the image itself when upright
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

    if im.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8):   # turned by 90°: stored axes swapped
        tw, th = th, tw
    if w >= 2 * tw and h >= 2 * th:
        im.draft("RGB", (tw, th))


def _now():
    return datetime.now(timezone.utc)


def load_batch(store, job: Job, items: list[WorkItem]):
    """Decode + resize a batch. Returns (ok items, images, failure rows)."""
    fails, ok, images = [], [], []
    try:
        data = store.image_bytes([it.image_id for it in items])
    except Exception:  # a missing/unreadable row: fall back to one at a time to find the bad ones
        data = {}
        for it in items:
            try:
                data.update(store.image_bytes([it.image_id]))
            except Exception as e1:   # noqa: PERF203 — rare path
                fails.append(_failure(job, it, "load", e1))
    for it in items:
        if it.image_id not in data:
            continue
        try:
            images.append(decode_resize(data[it.image_id], job.image_size, job.max_pixels))
            ok.append(it)
        except Exception as e:  # corrupt bytes, unknown format: recorded with the reason, retried next run
            fails.append(_failure(job, it, "load", e))
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
             "sampling": sampling, "sample_idx": 0, "finish_reason": o.finish_reason, "n_tokens": int(o.n_tokens),
             "parent_caption_id": "", "transform": "", "run_id": job.run_id, "created_at": now}
            for it, o in zip(items, outs)]


def generate_and_write(store, engine, job: Job, items, images, fails) -> dict:
    """Generate one loaded batch and commit it (captions: one commit; failures: one commit)."""
    added = 0
    if items:
        try:
            outs = engine.generate(images, [it.prompt for it in items], job.sampling, job.batch_size)
        except Exception as e:  # the whole batch failed in the engine (e.g. OOM): record each image, go on
            fails = fails + [_failure(job, it, "generate", e) for it in items]
            outs = None
        if outs is not None:
            added = store.add_captions(caption_rows(job, items, outs), run_id=job.run_id)
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

        return VLLMEngine(model, **{k: v for k, v in kw.items() if k in VLLM_KEYS})
    raise InputError(f"unsupported engine {engine!r}", f"choose one of {', '.join(ENGINES)}", "e.g. --engine transformers")


VLLM_KEYS = ("dtype", "gpu_memory_utilization", "tensor_parallel_size", "max_model_len")
