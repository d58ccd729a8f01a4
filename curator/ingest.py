"""Ingest: images + their original captions from a folder, a manifest, a local HF dataset, WebDataset
tars or the synthetic world, into the store as `images` rows and round-0 `captions` rows (kind original).

Every source becomes a stream of `Item`s; one pipeline validates, normalises and writes them in batches
(one Lance commit per table per batch). Bad input never stops the run and is never silent: each
rejected item is counted under a reason (and a few example uris are kept) in the run's counts.

Stored bytes (decided): an image that decodes cleanly as an 8-bit RGB PNG or JPEG is stored with its
ORIGINAL bytes (no re-encode: no quality loss, no size blow-up for JPEG corpora). Anything else — CMYK,
16-bit, grayscale, palette, alpha, WEBP/GIF/BMP/TIFF — is converted to RGB and stored as a PNG (alpha is
composited on white); the original mode/format are recorded in meta. image_id = sha256 of the stored
bytes, so the same picture under two names is one image (the second name is counted as a duplicate).
"""
from __future__ import annotations

import csv
import io
import json
import os
import tarfile
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from curator import schema
from curator.errors import InputError
from curator.store import Store, utcnow

DEFAULT_MAX_PIXELS = 40_000_000    # decode cap (≈ 6300×6300); larger headers are treated as decompression bombs
DEFAULT_BATCH = 2048               # rows per commit: fewer, larger commits (measured 5.7 s vs 9.4 s for 5k images at 512)
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
CAPTION_FILE_EXTS = {".jsonl", ".csv", ".parquet"}
_FILE_KEYS = ("file", "file_name", "filename", "path", "image", "url", "key")
_CAPTION_KEYS = ("caption", "text", "alt_text", "alt", "TEXT")
N_EXAMPLES = 5   # example uris kept per rejection reason

# Rejection reasons (stable strings: tests and users grep for them).
REASONS = {
    "missing_file": "the file does not exist",
    "unreadable": "the file could not be read (permissions or I/O error)",
    "empty_file": "the file has zero bytes",
    "not_an_image": "the bytes are not an image format Pillow can identify",
    "truncated": "the image data ends early",
    "corrupt": "the image data is damaged",
    "decompression_bomb": "the pixel count exceeds the cap",
    "bad_record": "a manifest/captions record could not be parsed",
    "bad_tar": "a tar shard could not be read",
}
CAPTION_REASONS = {
    "invalid_utf8": "the caption bytes are not valid UTF-8",
    "empty_caption": "the caption is empty or whitespace",
    "no_caption": "no caption was given for the image (image kept, no round-0 caption)",
}


@dataclass
class Item:
    """One input image as a source yields it: bytes (or a reason it has none), caption, metadata."""
    uri: str
    data: bytes | None = None
    reject: str | None = None                 # set by the source when the bytes could not be obtained
    detail: str = ""
    caption: str | bytes | None = None        # bytes when the source could not decode it yet
    meta: dict = field(default_factory=dict)
    split: str = "train"


class Rejected(Exception):
    """Raised by normalize_image with a REASONS key."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


# -------------------------------------------------------------------- image validation / normalisation
def normalize_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[bytes, int, int, str, dict]:
    """Validate image bytes; return (stored_bytes, width, height, format, meta_extra) or raise Rejected."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    ImageFile.LOAD_TRUNCATED_IMAGES = False   # a truncated file must fail, not decode as grey padding
    if not data:
        raise Rejected("empty_file")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns at MAX_IMAGE_PIXELS; we apply our cap on the header instead.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise Rejected("decompression_bomb", f"{w}x{h} = {w * h} pixels > cap {max_pixels}")
            fmt = im.format or "UNKNOWN"
            im.load()
    except Rejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise Rejected("decompression_bomb", str(e).split(".")[0]) from e
    except UnidentifiedImageError as e:
        raise Rejected("not_an_image", "unrecognised image format") from e
    except OSError as e:
        msg = str(e)
        raise Rejected("truncated" if "truncated" in msg or "broken data stream" in msg else "corrupt", msg) from e
    except (SyntaxError, ValueError, EOFError) as e:   # Pillow's decoders signal damaged data with these
        raise Rejected("corrupt", str(e) or type(e).__name__) from e
    if w == 0 or h == 0:
        raise Rejected("corrupt", f"zero size {w}x{h}")
    mode = im.mode
    if fmt in ("PNG", "JPEG") and mode == "RGB" and getattr(im, "n_frames", 1) == 1:
        return data, w, h, fmt, {}
    rgb = _to_rgb(im)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")   # PIL writes no timestamp chunk: same pixels → same bytes → same image_id
    extra = {"original_mode": mode, "original_format": fmt, "converted": "rgb_png"}
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        extra["alpha"] = "composited_on_white"
    if getattr(im, "n_frames", 1) > 1:
        extra["frames"] = im.n_frames
        extra["kept_frame"] = 0
    return buf.getvalue(), w, h, "PNG", extra


def _to_rgb(im):
    from PIL import Image
    import numpy as np

    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im).astype(np.int64)
        # 16-bit data: keep the high byte (a plain convert("L") would clip everything above 255 to white).
        a = (a >> 8) if a.max(initial=0) > 255 else a
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min(initial=0)), float(a.max(initial=1))
        a = (a - lo) / (hi - lo or 1.0) * 255.0
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    return im.convert("RGB")


def decode_caption(c) -> tuple[str | None, str | None]:
    """(text, None) or (None, caption-reason)."""
    if c is None:
        return None, "no_caption"
    if isinstance(c, (bytes, bytearray)):
        try:
            c = bytes(c).decode("utf-8")
        except UnicodeDecodeError:
            return None, "invalid_utf8"
    if not isinstance(c, str):
        c = str(c)
    c = c.strip()
    if not c:
        return None, "empty_caption"
    return c, None


# -------------------------------------------------------------------- sources
def _read_file(path: str) -> Item:
    if not os.path.exists(path):
        return Item(uri=path, reject="missing_file")
    try:
        with open(path, "rb") as f:
            return Item(uri=path, data=f.read())
    except OSError as e:   # permission denied, EIO, a directory …
        return Item(uri=path, reject="unreadable", detail=str(e))


def _read_text_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def load_caption_table(path: str) -> dict[str, str | bytes]:
    """A captions file (jsonl/csv/parquet) → {file name: caption}. Keys are matched by relative path or base name."""
    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise InputError(f"captions file {path} not found", "the path does not exist", "check --captions")
    rows: list[dict] = []
    if ext == ".jsonl":
        rows = [r for r, _ in _iter_jsonl(path) if r is not None]
    elif ext == ".csv":
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
            rows = list(csv.DictReader(f))
    elif ext == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        raise InputError(f"unsupported captions file {path}", f"extension {ext!r}",
                         "use .jsonl, .csv or .parquet with columns file + caption")
    out: dict[str, str | bytes] = {}
    for r in rows:
        fk = next((k for k in _FILE_KEYS if k in r), None)
        ck = next((k for k in _CAPTION_KEYS if k in r), None)
        if fk is None or ck is None:
            raise InputError(f"captions file {path} lacks a file or caption column",
                             f"found columns {sorted(r)}", "name them 'file' and 'caption'")
        cap = r[ck]
        if isinstance(cap, str):
            try:   # csv read with surrogateescape: invalid UTF-8 comes back as lone surrogates
                cap.encode("utf-8")
            except UnicodeEncodeError:
                cap = cap.encode("utf-8", "surrogateescape")
        out[str(r[fk])] = cap
    return out


def _iter_jsonl(path: str) -> Iterator[tuple[dict | None, str]]:
    """(record, "") per line, or (None, reason detail) for a line that is not valid UTF-8 JSON."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield None, f"line {n}: not valid UTF-8"
                continue
            except json.JSONDecodeError as e:
                yield None, f"line {n}: {e.msg}"
                continue
            if not isinstance(rec, dict):
                yield None, f"line {n}: not a JSON object"
                continue
            yield rec, ""


def iter_folder(folder: str, captions: str | None = None, split: str = "train") -> Iterator[Item]:
    """Images under `folder` (recursive, sorted). Captions: --captions file, else a sidecar <stem>.txt."""
    if not os.path.isdir(folder):
        raise InputError(f"folder {folder} not found", "ingest --folder needs a directory of images",
                         "check the path")
    table = load_caption_table(captions) if captions else {}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.abspath(os.path.join(root, name))
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTS:
                continue   # sidecars and other files; counted by the caller as ignored
            rel = os.path.relpath(path, folder)
            it = _read_file(path)
            it.uri, it.split = path, split
            if rel in table:
                it.caption = table[rel]
            elif name in table:
                it.caption = table[name]
            else:
                side = os.path.join(root, stem + ".txt")
                it.caption = _read_text_bytes(side) if os.path.exists(side) else None
            yield it


def count_ignored(folder: str) -> int:
    n = 0
    for root, _, files in os.walk(folder):
        stems = {os.path.splitext(f)[0] for f in files if os.path.splitext(f)[1].lower() in IMAGE_EXTS}
        for f in files:
            stem, ext = os.path.splitext(f)
            if ext.lower() not in IMAGE_EXTS and not (ext.lower() == ".txt" and stem in stems):
                n += 1
    return n


def iter_manifest(path: str, split: str = "train") -> Iterator[Item]:
    """A jsonl/parquet manifest: one record per image with a path (relative to the manifest) and a caption."""
    base = os.path.dirname(os.path.abspath(path))
    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise InputError(f"manifest {path} not found", "the path does not exist", "check --manifest")
    if ext == ".jsonl":
        records: Iterable = _iter_jsonl(path)
    elif ext == ".parquet":
        import pyarrow.parquet as pq

        records = ((r, "") for r in pq.read_table(path).to_pylist())
    else:
        raise InputError(f"unsupported manifest {path}", f"extension {ext!r}", "use .jsonl or .parquet")
    for rec, problem in records:
        if rec is None:
            yield Item(uri=f"{path}:{problem.split(':')[0]}", reject="bad_record", detail=problem)
            continue
        fk = next((k for k in _FILE_KEYS if k in rec), None)
        if fk is None:
            yield Item(uri=path, reject="bad_record", detail=f"record without a file key: {sorted(rec)}")
            continue
        p = str(rec[fk])
        full = p if os.path.isabs(p) else os.path.join(base, p)
        it = _read_file(full)
        ck = next((k for k in _CAPTION_KEYS if k in rec), None)
        it.caption = rec[ck] if ck else None
        it.meta = rec.get("meta") if isinstance(rec.get("meta"), dict) else {}
        it.split = str(rec.get("split") or split)
        yield it


def iter_hf(path: str, image_column: str = "image", caption_column: str | None = None,
            split: str = "train", hf_split: str | None = None) -> Iterator[Item]:
    """A Hugging Face dataset on local disk: a save_to_disk directory, or parquet/imagefolder files."""
    import datasets

    if not os.path.exists(path):
        raise InputError(f"dataset {path} not found", "--hf takes a local path (no hub access here)",
                         "save it with Dataset.save_to_disk(path) or point at its parquet files")
    if os.path.exists(os.path.join(path, "dataset_info.json")) or os.path.exists(os.path.join(path, "dataset_dict.json")) \
            or os.path.exists(os.path.join(path, "state.json")):
        ds = datasets.load_from_disk(path)
    elif any(f.endswith(".parquet") for _, _, fs in os.walk(path) for f in fs):
        ds = datasets.load_dataset("parquet", data_dir=path)
    else:
        ds = datasets.load_dataset("imagefolder", data_dir=path)
    if isinstance(ds, datasets.DatasetDict):
        name = hf_split or ("train" if "train" in ds else sorted(ds)[0])
        ds = ds[name]
    if image_column not in ds.column_names:
        raise InputError(f"dataset has no column {image_column!r}", f"columns: {ds.column_names}",
                         "pass --image-column")
    cap_col = caption_column or next((c for c in _CAPTION_KEYS if c in ds.column_names), None)
    if caption_column and caption_column not in ds.column_names:
        raise InputError(f"dataset has no column {caption_column!r}", f"columns: {ds.column_names}",
                         "pass --caption-column")
    if isinstance(ds.features.get(image_column), datasets.Image):
        ds = ds.cast_column(image_column, datasets.Image(decode=False))   # raw bytes: we validate them ourselves
    for i, rec in enumerate(ds):
        img = rec[image_column]
        uri = f"{path}#{i}"
        if isinstance(img, dict):
            data = img.get("bytes")
            if data is None and img.get("path"):
                it = _read_file(img["path"])
            else:
                it = Item(uri=uri, data=data, reject=None if data is not None else "missing_file")
            uri = img.get("path") or uri
        elif isinstance(img, (bytes, bytearray)):
            it = Item(uri=uri, data=bytes(img))
        else:
            it = Item(uri=uri, reject="not_an_image", detail=f"column value of type {type(img).__name__}")
        it.uri = uri if it.reject is None else (it.uri or uri)
        it.caption = rec.get(cap_col) if cap_col else None
        it.split = split
        yield it


def _tar_groups(tf) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) per sample, streaming: members of one sample are consecutive in a WebDataset
    tar (the convention img2dataset and the webdataset library rely on), so memory holds one sample."""
    key, group = None, {}
    for m in tf:
        if not m.isfile():
            continue
        base = os.path.basename(m.name)
        k = os.path.join(os.path.dirname(m.name), base.split(".", 1)[0])
        ext = base.split(".", 1)[1].lower() if "." in base else ""
        if k != key and group:
            yield key, group
            group = {}
        key = k
        group[ext] = tf.extractfile(m).read()
    if group:
        yield key, group


def iter_webdataset(paths: list[str], split: str = "train") -> Iterator[Item]:
    """WebDataset shards as img2dataset writes them: <key>.jpg|png|webp + <key>.txt + <key>.json."""
    for shard in paths:
        if not os.path.exists(shard):
            yield Item(uri=shard, reject="missing_file")
            continue
        n = 0
        try:
            with tarfile.open(shard, "r:*") as tf:
                for key, g in _tar_groups(tf):
                    n += 1
                    yield _wds_item(shard, key, g, split)
        except (tarfile.TarError, OSError, EOFError) as e:
            # Samples before the damage have landed; the rest of the shard is one counted rejection.
            yield Item(uri=shard, reject="bad_tar", detail=f"after {n} samples: {e}")


def _wds_item(shard: str, key: str, g: dict[str, bytes], split: str) -> Item:
    img_ext = next((e for e in ("jpg", "jpeg", "png", "webp") if e in g), None)
    uri = f"{shard}#{key}"
    if img_ext is None:
        return Item(uri=uri, reject="missing_file", detail=f"no image member for key {key} (has {sorted(g)})")
    meta = {}
    if "json" in g:
        try:
            meta = json.loads(g["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            meta = {"json_unreadable": True}
    cap = g.get("txt")
    if cap is None and isinstance(meta, dict) and isinstance(meta.get("caption"), str):
        cap = meta["caption"]
    return Item(uri=uri, data=g[img_ext], caption=cap, meta={"wds": meta} if meta else {}, split=split)


def iter_synthetic_items(n: int, seed: int, split: str = "train") -> Iterator[Item]:
    try:
        from curator.world.synthetic import iter_synthetic
    except ImportError as e:
        raise InputError("the synthetic world is not available", f"curator.world.synthetic failed to import: {e}",
                         "ingest a folder or manifest instead, or update the checkout") from e
    for i, (png, alt, meta) in enumerate(iter_synthetic(n, seed)):
        yield Item(uri=f"synthetic://{seed}/{i}", data=png, caption=alt, meta=meta or {}, split=split)


# -------------------------------------------------------------------- the pipeline
@dataclass
class IngestReport:
    run_id: str
    source: str
    counts: dict

    def summary_lines(self) -> list[str]:
        c = self.counts
        lines = [f"ingest run {self.run_id} ({self.source})",
                 f"  items seen          {c['seen']}",
                 f"  images added        {c['images_added']}   (already in store: {c['images_existing']}, "
                 f"duplicate bytes in input: {c['duplicates_in_input']})",
                 f"  captions added      {c['captions_added']}   (already in store: {c['captions_existing']}"
                 + (f", from a duplicate's other name: {c['captions_from_duplicate_name']}"
                    if c.get("captions_from_duplicate_name") else "") + ")"]
        if c["converted"]:
            lines.append("  converted to RGB    " + ", ".join(f"{k}: {v}" for k, v in sorted(c["converted"].items())))
        if c.get("ignored_files"):
            lines.append(f"  ignored (not image) {c['ignored_files']}")
        lines.append(f"  rejected images     {sum(c['rejected'].values())}")
        for r, n in sorted(c["rejected"].items()):
            ex = c["examples"].get(r, [])
            lines.append(f"    {r:<20}{n:>6}  {REASONS.get(r, '')}" + (f"  e.g. {ex[0]}" if ex else ""))
        lines.append(f"  caption problems    {sum(c['caption_rejected'].values())}")
        for r, n in sorted(c["caption_rejected"].items()):
            ex = c["examples"].get(r, [])
            lines.append(f"    {r:<20}{n:>6}  {CAPTION_REASONS.get(r, '')}" + (f"  e.g. {ex[0]}" if ex else ""))
        return lines


def ingest_items(store: Store, items: Iterable[Item], source: str, config: dict | None = None,
                 batch_size: int = DEFAULT_BATCH, max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = False,
                 total: int | None = None, extra_counts: dict | None = None) -> IngestReport:
    """Validate, normalise and write items in batches. Returns the run's report (also stored in runs.counts)."""
    counts: dict = {"seen": 0, "images_added": 0, "images_existing": 0, "duplicates_in_input": 0,
                    "captions_added": 0, "captions_existing": 0, "rejected": {}, "caption_rejected": {},
                    "converted": {}, "examples": {}}
    counts.update(extra_counts or {})
    run_id = store.start_run("ingest", 0, dict(config or {}, source=source))
    seen_ids: set[str] = set()
    captioned: set[str] = set()
    imgs: list[dict] = []
    caps: list[dict] = []

    def note(bucket: str, reason: str, uri: str, detail: str = ""):
        counts[bucket][reason] = counts[bucket].get(reason, 0) + 1
        ex = counts["examples"].setdefault(reason, [])
        if len(ex) < N_EXAMPLES:
            ex.append(uri + (f" ({detail[:120]})" if detail else ""))

    def flush():
        if imgs:
            added = store.add_images(imgs, run_id)
            counts["images_added"] += added
            counts["images_existing"] += len(imgs) - added
        if caps:
            added = store.add_captions(caps, run_id)
            counts["captions_added"] += added
            counts["captions_existing"] += len(caps) - added
        imgs.clear()
        caps.clear()

    bar = _progress(progress, total)
    try:
        for it in items:
            counts["seen"] += 1
            if bar:
                bar[0].advance(bar[1])
            if it.reject:
                note("rejected", it.reject, it.uri, it.detail)
                continue
            try:
                data, w, h, fmt, extra = normalize_image(it.data, max_pixels)
            except Rejected as r:
                note("rejected", r.reason, it.uri, r.detail)
                continue
            image_id = schema.image_key(data)
            if extra:
                counts["converted"][extra["original_mode"]] = counts["converted"].get(extra["original_mode"], 0) + 1
            if image_id in seen_ids:
                # Same bytes under another name: one image. Its caption still counts if the first name had none.
                counts["duplicates_in_input"] += 1
                ex = counts["examples"].setdefault("duplicate", [])
                if len(ex) < N_EXAMPLES:
                    ex.append(it.uri)
                text, why = decode_caption(it.caption)
                if not why and image_id not in captioned:
                    captioned.add(image_id)
                    caps.append(original_caption_row(image_id, text, run_id))
                    counts["captions_from_duplicate_name"] = counts.get("captions_from_duplicate_name", 0) + 1
                continue
            seen_ids.add(image_id)
            meta = dict(it.meta or {})
            meta.update(extra)
            now = utcnow()
            imgs.append({"image_id": image_id, "uri": it.uri, "source": source, "width": w, "height": h,
                         "format": fmt, "split": it.split, "meta": json.dumps(meta, sort_keys=True, default=str),
                         "bytes": data, "ingested_at": now, "run_id": run_id})
            text, why = decode_caption(it.caption)
            if why:
                note("caption_rejected", why, it.uri)
            else:
                captioned.add(image_id)
                caps.append(original_caption_row(image_id, text, run_id, now))
            if len(imgs) >= batch_size:
                flush()
        flush()
    except BaseException as e:
        store.finish_run(run_id, status="failed", counts=counts, error=f"{type(e).__name__}: {e}")
        raise
    finally:
        if bar:
            bar[0].stop()
    store.finish_run(run_id, status="ok", counts=counts)
    return IngestReport(run_id, source, counts)


def original_caption_row(image_id: str, text: str, run_id: str, now=None) -> dict:
    return {"caption_id": schema.caption_key(image_id, 0, "original", "source", ""), "image_id": image_id,
            "round": 0, "kind": "original", "text": text, "captioner": "source", "prompt_id": "", "prompt": "",
            "sampling": "{}", "sample_idx": 0, "finish_reason": "source", "n_tokens": None,
            "parent_caption_id": "", "transform": "", "run_id": run_id, "created_at": now or utcnow()}


def _progress(enabled: bool, total: int | None):
    import sys

    if not enabled or not sys.stderr.isatty():   # a bar in a log file is noise; the summary says it all
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    p = Progress(TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True,
                 console=Console(stderr=True))
    p.start()
    return p, p.add_task("ingest", total=total)


# -------------------------------------------------------------------- one entry point per source
def ingest(store: Store, *, folder: str | None = None, captions: str | None = None, manifest: str | None = None,
           hf: str | None = None, image_column: str = "image", caption_column: str | None = None,
           webdataset: list[str] | None = None, synthetic: int | None = None, seed: int = 0,
           split: str = "train", batch_size: int = DEFAULT_BATCH, max_pixels: int = DEFAULT_MAX_PIXELS,
           progress: bool = False) -> IngestReport:
    """Ingest exactly one source kind. The CLI `curator ingest` is this function."""
    given = [k for k, v in (("folder", folder), ("manifest", manifest), ("hf", hf), ("webdataset", webdataset),
                            ("synthetic", synthetic)) if v]
    if len(given) != 1:
        raise InputError("ingest needs exactly one source", f"got {', '.join(given) or 'none'}",
                         "pass one of --folder, --manifest, --hf, --webdataset, --synthetic N")
    kind = given[0]
    common = dict(batch_size=batch_size, max_pixels=max_pixels, progress=progress)
    if kind == "folder":
        return ingest_items(store, iter_folder(folder, captions, split), "folder",
                            {"folder": os.path.abspath(folder), "captions": captions}, **common,
                            extra_counts={"ignored_files": count_ignored(folder)})
    if kind == "manifest":
        return ingest_items(store, iter_manifest(manifest, split), "manifest",
                            {"manifest": os.path.abspath(manifest)}, **common)
    if kind == "hf":
        return ingest_items(store, iter_hf(hf, image_column, caption_column, split), "hf",
                            {"hf": os.path.abspath(hf), "image_column": image_column}, **common)
    if kind == "webdataset":
        shards = expand_shards(webdataset)
        return ingest_items(store, iter_webdataset(shards, split), "webdataset", {"shards": shards}, **common)
    return ingest_items(store, iter_synthetic_items(int(synthetic), seed, split), "synthetic",
                        {"n": int(synthetic), "seed": seed}, total=int(synthetic), **common)


def expand_shards(paths: list[str]) -> list[str]:
    """Shard arguments: files, directories (all *.tar inside) or globs; sorted for a stable order."""
    import glob

    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(glob.glob(os.path.join(p, "*.tar")))
        elif any(ch in p for ch in "*?["):
            out += sorted(glob.glob(p))
        else:
            out.append(p)
    if not out:
        raise InputError("no WebDataset shards found", f"looked at {paths}", "pass .tar files or a folder of them")
    return out


