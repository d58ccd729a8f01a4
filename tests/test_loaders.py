"""A built set loads where users train: the LLaVA JSON the way LLaVA's LazySupervisedDataset reads it, the Parquet
with `datasets`, the WebDataset shards with `webdataset.WebDataset` and with `datasets`' webdataset loader.

One store holds what a user's collection looks like: photos stored as JPEG beside converted PNGs, some with
alt-text and some without, recaptions (one rejected) and a specialist output, so every build mixes image
formats and caption sources."""
from __future__ import annotations

import io
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curator import schema
from curator.build import build
from curator.ingest import Item, ingest_items

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
IMAGE_TOKEN = "<image>"   # LLaVA's DEFAULT_IMAGE_TOKEN


def _jpg(i: int) -> bytes:
    b = io.BytesIO()
    Image.new("RGB", (24, 16), (i * 40, 200, 10)).save(b, "JPEG", quality=90)
    return b.getvalue()


def _gray_png(i: int) -> bytes:   # stored converted (L → RGB PNG)
    b = io.BytesIO()
    Image.new("L", (12, 20), i * 30).save(b, "PNG")
    return b.getvalue()


def _cap(image_id, kind, text, minutes):
    return {"caption_id": schema.caption_key(image_id, 1, kind, "m", "p", 0), "image_id": image_id, "round": 1,
            "kind": kind, "text": text, "captioner": "m", "prompt_id": "p", "prompt": "", "sampling": "{}",
            "sample_idx": 0, "finish_reason": "eos", "n_tokens": 3, "parent_caption_id": "", "transform": "",
            "run_id": "t", "created_at": T0 + timedelta(minutes=minutes)}


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    from curator.store import Store

    d = tmp_path_factory.mktemp("loaders")
    store = Store(str(d / "store"), create=True)
    items = [Item(uri=f"photo{i}.jpg", data=_jpg(i), caption=f"alt {i}" if i < 2 else None) for i in range(4)]
    items += [Item(uri=f"scan{i}.png", data=_gray_png(i + 1), caption=None) for i in range(3)]
    ingest_items(store, items, "test")
    ids = store.sql("SELECT uri, image_id FROM images").to_pylist()
    by_uri = {r["uri"]: r["image_id"] for r in ids}
    caps = [_cap(iid, "self", f"a long description of {uri}", 1) for uri, iid in by_uri.items() if uri != "scan2.png"]
    caps.append(_cap(by_uri["scan2.png"], "spatial", "the patch is in the center.", 1))
    store.add_captions(caps)
    rejected = next(c for c in caps if c["image_id"] == by_uri["photo3.jpg"])
    store.add_verdicts([{"verdict_id": schema.verdict_key(rejected["caption_id"], "length", "x"),
                         "caption_id": rejected["caption_id"], "filter": "length", "score": 1.0, "keep": False,
                         "reason": "too short", "config": "{}", "config_hash": "x", "run_id": "t",
                         "created_at": T0 + timedelta(minutes=2)}])
    out = {}
    for policy in ("concat", "concat-specialist-qa"):
        for fmt in ("llava", "parquet", "webdataset"):
            out[policy, fmt] = build(store, 1, policy, fmt, out=str(d / f"{policy}-{fmt}"), rows_per_shard=4)
    stored = {r["image_id"]: r["bytes"] for r in store.sql("SELECT image_id, bytes FROM images").to_pylist()}
    return out, stored


def _pixels(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"))


def llava_lazy_dataset(data_path: str, image_folder: str) -> list[tuple[Image.Image, list[dict]]]:
    """What LLaVA's LazySupervisedDataset does with --data_path and --image_folder, and what its
    preprocess_multimodal expects of the conversation (asserted here rather than silently misread)."""
    with open(data_path, encoding="utf-8") as f:
        records = json.load(f)
    out = []
    for rec in records:
        assert not os.path.isabs(rec["image"]), rec["image"]   # relative to --image_folder
        image = Image.open(os.path.join(image_folder, rec["image"])).convert("RGB")
        conv = rec["conversations"]
        assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2), conv
        assert conv[0]["value"].count(IMAGE_TOKEN) == 1 and conv[0]["value"].startswith(IMAGE_TOKEN), conv[0]
        assert sum(t["value"].count(IMAGE_TOKEN) for t in conv) == 1, conv
        out.append((image, conv))
    return out


@pytest.mark.parametrize("policy", ["concat", "concat-specialist-qa"])
def test_llava_json_loads_like_llava(builds, policy):
    res, stored = builds
    out = res[policy, "llava"].out_dir
    samples = llava_lazy_dataset(os.path.join(out, "data.json"), image_folder=out)
    records = json.loads(Path(out, "data.json").read_text())
    # 7 images: photo3's recaption was rejected and it has no original; scan2 has a specialist output only
    assert len(samples) == {"concat": 5, "concat-specialist-qa": 6}[policy]
    for (image, conv), rec in zip(samples, records):
        assert np.array_equal(_pixels(image), _pixels(Image.open(io.BytesIO(stored[rec["id"]]))))
        assert Path(out, rec["image"]).read_bytes() == stored[rec["id"]]   # the stored bytes, not re-encoded
    if policy == "concat-specialist-qa":   # the QA-only sample: <image> then the question, in the first turn
        qa_only = [conv for _, conv in samples if conv[0]["value"] != IMAGE_TOKEN]
        assert len(qa_only) == 1 and qa_only[0][0]["value"].startswith(IMAGE_TOKEN + "\n")
        assert qa_only[0][1] == {"from": "gpt", "value": "the patch is in the center."}


def test_parquet_loads_with_datasets(builds):
    import datasets

    res, stored = builds
    out = res["concat", "parquet"].out_dir
    files = sorted(str(p) for p in Path(out).glob("data-*.parquet"))
    ds = datasets.load_dataset("parquet", data_files={"train": files}, split="train")
    assert ds.num_rows == 5 and ds.column_names == ["id", "image_id", "image", "conversations"]
    ds = ds.cast_column("image", datasets.Image())   # bytes → PIL images, decoded lazily
    for row in ds:
        assert np.array_equal(_pixels(row["image"]), _pixels(Image.open(io.BytesIO(stored[row["image_id"]]))))
        assert row["conversations"][0] == {"from": "human", "value": IMAGE_TOKEN}
    sources = res["concat", "parquet"].manifest["counts"]["sources"]
    assert sources == {"original+recaption": 2, "recaption": 3}


def test_webdataset_shards_stream_with_webdataset_and_datasets(builds):
    import datasets
    import webdataset as wds

    res, stored = builds
    out = res["concat", "webdataset"].out_dir
    shards = sorted(str(p) for p in Path(out).glob("shard-*.tar"))
    assert len(shards) == 2   # 5 rows, 4 per shard
    stream = wds.WebDataset(shards, shardshuffle=False).decode("pil").to_tuple("__key__", "png", "json")
    seen = list(stream)
    assert len(seen) == 5
    llava = {r["id"]: r for r in json.loads(Path(res["concat", "llava"].out_dir, "data.json").read_text())}
    for key, image, meta in seen:
        assert meta["conversations"] == llava[meta["id"]]["conversations"]
        assert np.array_equal(_pixels(image), _pixels(Image.open(io.BytesIO(stored[meta["id"]]))))
    # JPEG photos and PNG scans in one build: every sample has the same members, as `datasets` requires.
    ds = datasets.load_dataset("webdataset", data_files={"train": shards}, split="train")
    assert ds.num_rows == 5 and sorted(ds.column_names) == ["__key__", "__url__", "json", "png"]
    assert {r["json"]["id"] for r in ds} == set(llava)
