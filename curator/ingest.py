"""Ingest: images + their original captions from a folder, a manifest, a local HF dataset, WebDataset
tars or the synthetic world, into the store as `images` rows and round-0 `captions` rows (kind original).

Every source becomes a stream of `Item`s; one pipeline validates, normalises and writes them in batches
(one Lance commit per table per batch). Bad input never stops the run and is never silent: each
rejected item is counted under a reason (and a few example uris are kept) in the run's counts.

Stored bytes (decided): an image that decodes cleanly as an 8-bit RGB PNG or JPEG, upright (no EXIF
rotation to apply), is stored with its ORIGINAL bytes (no re-encode: no quality loss, no size blow-up for
JPEG corpora). Anything else — CMYK, 16-bit, grayscale, palette, alpha, WEBP/GIF/BMP/TIFF/AVIF, or a
photo whose EXIF orientation says "rotate me" — is converted to RGB and stored as a PNG (alpha is
composited on white; the EXIF rotation is applied to the pixels, and the PNG carries no EXIF, so no
reader can apply it twice); the original mode/format/orientation are recorded in meta. Animated and
multi-page files keep their first frame (meta: frames, kept_frame). Images are never stored resized:
the engine resizes for the model (curator.engines.work.decode_resize). image_id = sha256 of the stored
bytes, so the same picture under two names is one image (the second name is counted as a duplicate).
"""
from __future__ import annotations

import csv
import io
import json
import os
import struct
import tarfile
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from curator import schema
from curator.errors import InputError
from curator.store import Store, utcnow

# Decode cap: larger headers are treated as decompression bombs. 200 MP holds the largest phone sensors
# (16320×12240) and 600 MB of RGB; a bomb is a small file that claims far more.
DEFAULT_MAX_PIXELS = 200_000_000
DEFAULT_BATCH = 2048               # rows per commit: fewer, larger commits (measured 5.7 s vs 9.4 s for 5k images at 512)
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif", ".heic", ".heif"}
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
    im, fmt = open_checked(data, max_pixels)
    frames = getattr(im, "n_frames", 1)
    orientation = exif_orientation(im)
    if _keep_original_bytes(im, fmt, frames, orientation):
        extra = {} if fmt != "MPO" else {"original_format": "MPO", "frames": frames, "kept_frame": 0}
        return data, im.width, im.height, "JPEG" if fmt == "MPO" else fmt, extra
    extra = {"original_mode": im.mode, "original_format": fmt, "converted": "rgb_png"}
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        extra["alpha"] = "composited_on_white"
    if frames > 1:
        extra["frames"] = frames
        extra["kept_frame"] = 0
    if orientation != 1:
        from PIL import ImageOps

        extra["exif_orientation"] = orientation
        im = ImageOps.exif_transpose(im)
    rgb = _to_rgb(im)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")   # PIL writes no timestamp chunk: same pixels → same bytes → same image_id
    return buf.getvalue(), rgb.width, rgb.height, "PNG", extra


def open_checked(data: bytes, max_pixels: int):
    """Open and fully decode frame 0 (a truncated file must fail here, not later); (image, format) or Rejected."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    ImageFile.LOAD_TRUNCATED_IMAGES = False   # a truncated file must fail, not decode as grey padding
    if not data:
        raise Rejected("empty_file")
    if Image.MAX_IMAGE_PIXELS and max_pixels > 2 * Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = -(-max_pixels // 2)   # Pillow refuses above twice its limit; ours decides
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns at MAX_IMAGE_PIXELS; we apply our cap on the header instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise Rejected("decompression_bomb", f"{w}x{h} = {w * h} pixels > cap {max_pixels}")
            im.load()
    except Rejected:
        raise
    except Image.DecompressionBombError as e:
        raise Rejected("decompression_bomb", str(e).split(".")[0]) from e
    except UnidentifiedImageError as e:
        raise Rejected("not_an_image", _unidentified_detail(data)) from e
    except OSError as e:
        msg = str(e)
        raise Rejected("truncated" if "truncated" in msg or "broken data stream" in msg else "corrupt", msg) from e
    except (SyntaxError, ValueError, EOFError) as e:   # Pillow's decoders signal damaged data with these
        raise Rejected("corrupt", str(e) or type(e).__name__) from e
    if w == 0 or h == 0:
        raise Rejected("corrupt", f"zero size {w}x{h}")
    return im, im.format or "UNKNOWN"


def _unidentified_detail(data: bytes) -> str:
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftyphevc"):
        return "HEIC/HEIF: Pillow needs the pillow-heif plugin (pip install pillow-heif), or convert to JPEG"
    return "unrecognised image format"


def exif_orientation(im) -> int:
    """The EXIF orientation tag (1-8); 1 when absent or invalid."""
    from PIL import ExifTags

    try:   # 1 = upright; 2-8 = mirror and/or rotate before display
        o = int(im.getexif().get(ExifTags.Base.Orientation, 1))
    except (ValueError, TypeError, SyntaxError, OSError, struct.error):   # a damaged EXIF block: upright
        return 1
    return o if 1 <= o <= 8 else 1


def _keep_original_bytes(im, fmt: str, frames: int, orientation: int) -> bool:
    """Clean 8-bit RGB PNG/JPEG, upright, one frame. MPO (a JPEG with extra frames, as many cameras write)
    counts as JPEG: its bytes are a valid JPEG whose primary picture is frame 0."""
    if im.mode != "RGB" or orientation != 1:
        return False
    return (fmt in ("PNG", "JPEG") and frames == 1) or fmt == "MPO"


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
    out: dict[str, str | bytes] = {}
    for r in _caption_records(path):
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


def _caption_records(path: str) -> list[dict]:
    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise InputError(f"captions file {path} not found", "the path does not exist", "check --captions")
    if ext == ".jsonl":
        return [r for r, _ in _iter_jsonl(path) if r is not None]
    if ext == ".csv":
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
            return list(csv.DictReader(f))
    if ext == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise InputError(f"unsupported captions file {path}", f"extension {ext!r}",
                     "use .jsonl, .csv or .parquet with columns file + caption")


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


def scan_folder(folder: str) -> tuple[int, int]:
    """(image files, ignored files) under folder: the progress bar's total and the summary's "ignored"
    (files that are neither images nor an image's <stem>.txt sidecar)."""
    n_images = n_ignored = 0
    for root, _, files in os.walk(folder):
        stems = {os.path.splitext(f)[0] for f in files if os.path.splitext(f)[1].lower() in IMAGE_EXTS}
        for f in files:
            stem, ext = os.path.splitext(f)
            if ext.lower() in IMAGE_EXTS:
                n_images += 1
            elif not (ext.lower() == ".txt" and stem in stems):
                n_ignored += 1
    return n_images, n_ignored


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
    yield from iter_hf_dataset(load_hf(path, hf_split, image_column), path, image_column, caption_column, split)


def iter_hf_dataset(ds, path: str, image_column: str = "image", caption_column: str | None = None,
                    split: str = "train") -> Iterator[Item]:
    """Items from a loaded dataset (see load_hf); uris are the image's path, else `path#row`."""
    if image_column not in ds.column_names:
        raise InputError(f"dataset has no column {image_column!r}", f"columns: {ds.column_names}",
                         "pass --image-column")
    if caption_column and caption_column not in ds.column_names:
        raise InputError(f"dataset has no column {caption_column!r}", f"columns: {ds.column_names}",
                         "pass --caption-column")
    cap_col = caption_column or next((c for c in _CAPTION_KEYS if c in ds.column_names), None)
    for i, rec in enumerate(ds):
        it = _hf_image_item(rec[image_column], f"{path}#{i}")
        it.caption = rec.get(cap_col) if cap_col else None
        it.split = split
        yield it


def load_hf(path: str, hf_split: str | None = None, image_column: str = "image"):
    """The dataset at a local path (one split), its image column left undecoded: we validate the bytes."""
    import datasets

    if not os.path.exists(path):
        raise InputError(f"dataset {path} not found", "--hf takes a local path (no hub access here)",
                         "save it with Dataset.save_to_disk(path) or point at its parquet files")
    if any(os.path.exists(os.path.join(path, f)) for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
        ds = datasets.load_from_disk(path)
    elif any(f.endswith(".parquet") for _, _, fs in os.walk(path) for f in fs):
        ds = datasets.load_dataset("parquet", data_dir=path)
    else:
        ds = datasets.load_dataset("imagefolder", data_dir=path)
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[hf_split or ("train" if "train" in ds else sorted(ds)[0])]
    if isinstance(ds.features.get(image_column), datasets.Image):
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
    return ds


def _hf_image_item(img, uri: str) -> Item:
    """An image cell ({bytes, path} from datasets.Image, or raw bytes) → Item."""
    if isinstance(img, (bytes, bytearray)):
        return Item(uri=uri, data=bytes(img))
    if not isinstance(img, dict):
        return Item(uri=uri, reject="not_an_image", detail=f"column value of type {type(img).__name__}")
    if img.get("bytes") is None and img.get("path"):
        it = _read_file(img["path"])
    else:
        it = Item(uri=uri, data=img.get("bytes"), reject=None if img.get("bytes") is not None else "missing_file")
    if it.reject is None:
        it.uri = img.get("path") or uri
    return it


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
        uncaptioned = c["caption_rejected"].get("no_caption", 0)
        if uncaptioned:
            lines.append(f"  without a caption   {uncaptioned}   (kept; `curator recaption` writes their captions)")
        if c["converted"]:
            lines.append("  stored as RGB PNG   " + ", ".join(f"{k}: {v}" for k, v in sorted(c["converted"].items())))
        if c.get("ignored_files"):
            lines.append(f"  ignored (not image) {c['ignored_files']}")
        lines += self._reasons("rejected images", c["rejected"], REASONS)
        problems = {r: n for r, n in c["caption_rejected"].items() if r != "no_caption"}
        lines += self._reasons("caption problems", problems, CAPTION_REASONS)
        return lines

    def _reasons(self, title: str, by_reason: dict, explain: dict) -> list[str]:
        lines = [f"  {title:<20}{sum(by_reason.values())}"]
        for r, n in sorted(by_reason.items()):
            ex = self.counts["examples"].get(r, [])
            lines.append(f"    {r:<20}{n:>6}  {explain.get(r, '')}" + (f"  e.g. {ex[0]}" if ex else ""))
        return lines


def ingest_items(store: Store, items: Iterable[Item], source: str, config: dict | None = None,
                 batch_size: int = DEFAULT_BATCH, max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = False,
                 total: int | None = None, extra_counts: dict | None = None) -> IngestReport:
    """Validate, normalise and write items in batches. Returns the run's report (also stored in runs.counts)."""
    run_id = store.start_run("ingest", 0, dict(config or {}, source=source))
    run = _Run(store, run_id, source, batch_size, max_pixels, extra_counts)
    try:
        for it in _with_progress(items, progress, total):
            run.take(it)
        run.flush()
    except BaseException as e:
        store.finish_run(run_id, status="failed", counts=run.counts, error=f"{type(e).__name__}: {e}")
        raise
    store.finish_run(run_id, status="ok", counts=run.counts)
    return IngestReport(run_id, source, run.counts)


class _Run:
    """One ingest run: its counts, the batch not yet committed, and the image ids seen and captioned."""

    def __init__(self, store: Store, run_id: str, source: str, batch_size: int, max_pixels: int,
                 extra_counts: dict | None):
        self.store, self.run_id, self.source = store, run_id, source
        self.batch_size, self.max_pixels = batch_size, max_pixels
        self.counts: dict = {"seen": 0, "images_added": 0, "images_existing": 0, "duplicates_in_input": 0,
                             "captions_added": 0, "captions_existing": 0, "rejected": {}, "caption_rejected": {},
                             "converted": {}, "examples": {}}
        self.counts.update(extra_counts or {})
        self.seen_ids: set[str] = set()
        self.captioned: set[str] = set()
        self.imgs: list[dict] = []
        self.caps: list[dict] = []

    def take(self, it: Item) -> None:
        """One item: rejected with its reason, another name for an image already seen, or a new image."""
        self.counts["seen"] += 1
        if it.reject:
            return self.note("rejected", it.reject, it.uri, it.detail)
        try:
            data, w, h, fmt, extra = normalize_image(it.data, self.max_pixels)
        except Rejected as r:
            return self.note("rejected", r.reason, it.uri, r.detail)
        if "converted" in extra:
            key = "EXIF rotation" if "exif_orientation" in extra else extra["original_mode"]
            self.counts["converted"][key] = self.counts["converted"].get(key, 0) + 1
        image_id = schema.image_key(data)
        if image_id in self.seen_ids:
            return self.take_duplicate(it, image_id)
        self.seen_ids.add(image_id)
        now = utcnow()
        self.imgs.append({"image_id": image_id, "uri": it.uri, "source": self.source, "width": w, "height": h,
                          "format": fmt, "split": it.split,
                          "meta": json.dumps({**(it.meta or {}), **extra}, sort_keys=True, default=str),
                          "bytes": data, "ingested_at": now, "run_id": self.run_id})
        text, why = decode_caption(it.caption)
        if why:
            self.note("caption_rejected", why, it.uri)
        else:
            self.captioned.add(image_id)
            self.caps.append(original_caption_row(image_id, text, self.run_id, now))
        if len(self.imgs) >= self.batch_size:
            self.flush()

    def take_duplicate(self, it: Item, image_id: str) -> None:
        """Same bytes under another name: one image. Its caption still counts if the first name had none."""
        self.counts["duplicates_in_input"] += 1
        ex = self.counts["examples"].setdefault("duplicate", [])
        if len(ex) < N_EXAMPLES:
            ex.append(it.uri)
        text, why = decode_caption(it.caption)
        if not why and image_id not in self.captioned:
            self.captioned.add(image_id)
            self.caps.append(original_caption_row(image_id, text, self.run_id))
            self.counts["captions_from_duplicate_name"] = self.counts.get("captions_from_duplicate_name", 0) + 1

    def note(self, bucket: str, reason: str, uri: str, detail: str = "") -> None:
        self.counts[bucket][reason] = self.counts[bucket].get(reason, 0) + 1
        ex = self.counts["examples"].setdefault(reason, [])
        if len(ex) < N_EXAMPLES:
            ex.append(uri + (f" ({detail[:120]})" if detail else ""))

    def flush(self) -> None:
        """Commit the pending batch: one commit per table; rows whose key exists are skipped (and counted)."""
        if self.imgs:
            added = self.store.add_images(self.imgs, self.run_id)
            self.counts["images_added"] += added
            self.counts["images_existing"] += len(self.imgs) - added
        if self.caps:
            added = self.store.add_captions(self.caps, self.run_id)
            self.counts["captions_added"] += added
            self.counts["captions_existing"] += len(self.caps) - added
        self.imgs.clear()
        self.caps.clear()


def original_caption_row(image_id: str, text: str, run_id: str, now=None) -> dict:
    return {"caption_id": schema.caption_key(image_id, 0, "original", "source", ""), "image_id": image_id,
            "round": 0, "kind": "original", "text": text, "captioner": "source", "prompt_id": "", "prompt": "",
            "sampling": "{}", "sample_idx": 0, "finish_reason": "source", "n_tokens": None,
            "parent_caption_id": "", "transform": "", "run_id": run_id, "created_at": now or utcnow()}


def _with_progress(items: Iterable[Item], enabled: bool, total: int | None) -> Iterable[Item]:
    """A tqdm bar on stderr (count, rate, and an ETA when the total is known); none when stderr is not a
    terminal: a bar in a log file is noise, and the summary says it all."""
    import sys

    if not enabled or not sys.stderr.isatty():
        return items
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc="ingest", unit="img", leave=False)


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
    _check_source(folder=folder, captions=captions, manifest=manifest, hf=hf, synthetic=synthetic,
                  batch_size=batch_size, max_pixels=max_pixels)
    common = dict(batch_size=batch_size, max_pixels=max_pixels, progress=progress)
    if kind == "folder":
        n_images, n_ignored = scan_folder(folder)
        return ingest_items(store, iter_folder(folder, captions, split), "folder",
                            {"folder": os.path.abspath(folder), "captions": captions}, total=n_images,
                            extra_counts={"ignored_files": n_ignored}, **common)
    if kind == "manifest":
        return ingest_items(store, iter_manifest(manifest, split), "manifest",
                            {"manifest": os.path.abspath(manifest)}, total=_manifest_length(manifest), **common)
    if kind == "hf":
        ds = load_hf(hf, image_column=image_column)
        return ingest_items(store, iter_hf_dataset(ds, hf, image_column, caption_column, split), "hf",
                            {"hf": os.path.abspath(hf), "image_column": image_column}, total=len(ds), **common)
    if kind == "webdataset":   # streamed: no total (counting samples would read every shard twice)
        shards = expand_shards(webdataset)
        return ingest_items(store, iter_webdataset(shards, split), "webdataset", {"shards": shards}, **common)
    return ingest_items(store, iter_synthetic_items(int(synthetic), seed, split), "synthetic",
                        {"n": int(synthetic), "seed": seed}, total=int(synthetic), **common)


def _check_source(*, folder, captions, manifest, hf, synthetic, batch_size, max_pixels) -> None:
    """Refuse a missing path or an impossible number before a run is recorded (the store stays as it was)."""
    for flag, path, want in (("--folder", folder, "dir"), ("--captions", captions, "file"),
                             ("--manifest", manifest, "file"), ("--hf", hf, "any")):
        if path is None:
            continue
        if not os.path.exists(path):
            raise InputError(f"{flag} {path} not found", "the path does not exist", f"check {flag}")
        if want == "dir" and not os.path.isdir(path):
            raise InputError(f"{flag} {path} is not a directory", f"{flag} takes a folder of images",
                             "pass the folder, or use --manifest for a list of files")
        if want == "file" and os.path.isdir(path):
            raise InputError(f"{flag} {path} is a directory", f"{flag} takes a file (.jsonl, .csv or .parquet)",
                             "pass the file inside it")
    for flag, value in (("--synthetic", synthetic), ("--batch-size", batch_size), ("--max-pixels", max_pixels)):
        if value is not None and int(value) < (0 if flag == "--synthetic" else 1):
            raise InputError(f"{flag} {value} is out of range", "it counts images or pixels",
                             f"pass a positive {flag}")


def _manifest_length(path: str) -> int | None:
    """Records in a manifest (the progress bar's total), or None when that is not cheap to know."""
    if not os.path.isfile(path):
        return None
    if path.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def expand_shards(paths: list[str]) -> list[str]:
    """Shard arguments: files, directories (all *.tar inside) or globs; sorted for a stable order."""
    import glob

    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(glob.glob(os.path.join(p, "*.tar")))
        elif any(ch in p for ch in "*?["):
            out += sorted(glob.glob(p))
        elif not os.path.isfile(p):
            raise InputError(f"WebDataset shard {p} not found", "the path does not exist",
                             "pass .tar files, a folder of them, or a glob like 'shards/*.tar'")
        else:
            out.append(p)
    if not out:
        raise InputError("no WebDataset shards found", f"looked at {paths}", "pass .tar files or a folder of them")
    return out


