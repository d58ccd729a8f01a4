"""A tiny real store for the inspect / show / diff tests: three images, rounds 0–2, kinds original/self/spatial,
a raw round-1 caption rejected for repetition with its derived repcut version, a rejected-then-kept verdict."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from PIL import Image, ImageDraw

from curator.schema import caption_key, config_hash, image_key, verdict_key
from curator.store import Store

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
CKPT1 = "c1" * 32          # round-0 SFT model (writes round-1 captions)
CKPT2 = "c2" * 32
SPATIAL = "5a" * 32
SAMPLING = json.dumps({"do_sample": False, "max_new_tokens": 64, "seed": 0}, sort_keys=True)


RGB = {"red": (220, 30, 30), "blue": (30, 70, 220), "green": (30, 160, 50)}
CELL = {"top left": (0, 0), "center": (1, 1), "bottom right": (2, 2)}

# Hand-written ground truth (the grader's format: shape, color, size, position per object).
TRUTH_A = {"objects": [{"shape": "square", "color": "red", "size": "large", "position": "center"}],
           "word": None, "word_position": None, "width": 48, "height": 48}
TRUTH_B = {"objects": [{"shape": "square", "color": "blue", "size": "small", "position": "top left"},
                       {"shape": "circle", "color": "green", "size": "large", "position": "bottom right"}],
           "word": None, "word_position": None, "width": 48, "height": 48}


def png(color, size=48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def scene_png(truth: dict, size: int = 48) -> bytes:
    """A picture of the truth: each object drawn in its 3×3 cell (large fills the cell, small half of it)."""
    im = Image.new("RGB", (size, size), (245, 245, 245))
    d = ImageDraw.Draw(im)
    c = size // 3
    for o in truth["objects"]:
        r, k = CELL[o["position"]]
        m = 2 if o["size"] == "large" else c // 4
        box = (k * c + m, r * c + m, (k + 1) * c - m, (r + 1) * c - m)
        (d.ellipse if o["shape"] == "circle" else d.rectangle)(box, fill=RGB[o["color"]])
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _cap(image_id, rnd, kind, text, minutes, captioner="source", prompt_id="", parent="", transform="",
         finish="eos", run_id=None):
    cid = caption_key(image_id, rnd, kind, captioner, prompt_id, 0, transform, parent)
    return {"caption_id": cid, "image_id": image_id, "round": rnd, "kind": kind, "text": text,
            "captioner": captioner, "prompt_id": prompt_id, "prompt": "Describe the image in details." if prompt_id else "",
            "sampling": SAMPLING if prompt_id else "", "sample_idx": 0,
            "finish_reason": "source" if rnd == 0 else finish, "n_tokens": None if rnd == 0 else len(text.split()),
            "parent_caption_id": parent, "transform": transform,
            "run_id": run_id or ("ingest-r0" if rnd == 0 else f"recaption-r{rnd}"),
            "created_at": T0 + timedelta(minutes=minutes)}


def _verdict(caption_id, flt, keep, score, reason, minutes, cfg):
    h = config_hash(cfg)
    return {"verdict_id": verdict_key(caption_id, flt, h), "caption_id": caption_id, "filter": flt, "score": score,
            "keep": keep, "reason": reason, "config": json.dumps(cfg, sort_keys=True), "config_hash": h,
            "run_id": f"filter-{minutes}", "created_at": T0 + timedelta(minutes=minutes)}


def build_store(path) -> tuple[Store, dict]:
    """Returns the store and {"A": image_id, "B": ..., "C": ..., "captions": {name: caption_id}}.

    A and B are synthetic (ground truth in meta), C a plain folder image without truth."""
    st = Store(str(path), create=True)
    imgs = [(scene_png(TRUTH_A), TRUTH_A, "synthetic"), (scene_png(TRUTH_B), TRUTH_B, "synthetic"),
            (png(RGB["green"]), {}, "folder")]
    rows, ids = [], {}
    for name, (data, meta, source) in zip("ABC", imgs):
        iid = image_key(data)
        ids[name] = iid
        rows.append({"image_id": iid, "uri": f"{name.lower()}.png", "source": source, "width": 48, "height": 48,
                     "format": "PNG", "split": "train", "meta": json.dumps(meta), "bytes": data,
                     "ingested_at": T0, "run_id": "ingest-r0"})
    assert st.add_images(rows, run_id="ingest-r0") == 3
    A, B, C = ids["A"], ids["B"], ids["C"]
    raw = _cap(A, 1, "self", "a red square. a red square. a red square.", 10, CKPT1, "long-1", finish="length")
    cut = _cap(A, 1, "self", "a red square.", 20, CKPT1, "long-1", parent=raw["caption_id"], transform="repcut",
               finish="derived", run_id="filter-20")
    caps = {
        "A0": _cap(A, 0, "original", "red thing stock photo", 0),
        "A1raw": raw, "A1": cut,
        "A2": _cap(A, 2, "self", "a large red square in the center of the image.", 30, CKPT2, "long-1"),
        "A2sp": _cap(A, 2, "spatial", "the red square is at the center.", 31, SPATIAL, "spatial-1"),
        "B0": _cap(B, 0, "original", "blue", 0),
        "B1": _cap(B, 1, "self", "a blue square on a white background.", 11, CKPT1, "long-1"),
        "B2": _cap(B, 2, "self", "a small blue square at the top left and a red circle.", 32, CKPT2, "long-1"),
        "C0": _cap(C, 0, "original", "green", 0),
        "C1": _cap(C, 1, "self", "a green square with a green square next to a green square.", 12, CKPT1, "long-2"),
    }
    assert st.add_captions(list(caps.values())) == len(caps)
    rep = {"max_repeat": 2}
    verdicts = [
        _verdict(raw["caption_id"], "repetition", False, 3.0, "repeated 3-gram", 20, rep),
        _verdict(cut["caption_id"], "repetition", True, 1.0, "", 21, rep),
        _verdict(caps["B1"]["caption_id"], "repetition", True, 1.0, "", 21, rep),
        # C1: rejected by the length filter, then re-scored with a looser threshold and kept (latest wins)
        _verdict(caps["C1"]["caption_id"], "length", False, 12.0, "too long", 21, {"max_words": 10}),
        _verdict(caps["C1"]["caption_id"], "length", True, 12.0, "", 22, {"max_words": 20}),
        _verdict(caps["C1"]["caption_id"], "repetition", False, 3.0, "repeated 3-gram", 22, rep),
    ]
    assert st.add_verdicts(verdicts) == len(verdicts)
    ids["captions"] = {k: v["caption_id"] for k, v in caps.items()}
    return st, ids


_FO_DIR: list[str] = []


def fiftyone_env(tmp_path_factory) -> str:
    """Point FiftyOne at a mongod database directory of this test session (set before fiftyone is imported;
    once per process, as FiftyOne reads it at import). An existing FIFTYONE_DATABASE_URI is respected."""
    if not _FO_DIR:
        # the tests install what they need the way `make test` does (idempotent; ~0.1 s when done)
        root = Path(__file__).resolve().parents[1]
        res = subprocess.run(["bash", str(root / "scripts" / "setup_inspect.sh"), sys.prefix], cwd=root,
                             capture_output=True, text=True)
        assert res.returncode == 0, f"scripts/setup_inspect.sh failed:\n{res.stdout}\n{res.stderr}"
        _FO_DIR.append(str(tmp_path_factory.getbasetemp() / "fiftyone-db"))
        os.environ["FIFTYONE_DATABASE_DIR"] = _FO_DIR[0]
        os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    return _FO_DIR[0]


def drop_datasets(fo, names) -> None:
    """Start from no such datasets (they persist in the database when it is not this session's own)."""
    for n in names:
        if fo.dataset_exists(n):
            fo.delete_dataset(n)
