"""One acceptance rule: the store's latest_verdicts / rejected_captions views decide "accepted", and build,
filters, report, show and inspect all agree on a store with tied and re-thresholded verdicts."""
from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pyarrow.parquet as pq
from PIL import Image

from curator import schema
from curator.build import build
from curator.filters import filter_report, run_filters
from curator.ingest import Item, ingest_items
from curator.inspect import sample_fields
from curator.report import collect
from curator.show import show

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
TEXTS = ["tiny cap",                                            # c0: length re-thresholded: drop, keep, drop
         "a red circle at the top left of the image",           # c1: hand verdicts drop then keep
         "a blue square at the bottom right of the image",      # c2: hand verdicts keep then drop
         "a green triangle in the middle of the image",         # c3: tie keep/drop (keep has the larger id)
         "a small red square left of a large blue circle",      # c4: tie keep/keep
         "the word OPEN written in black above a red circle"]   # c5: no hand verdicts


def _png(i: int) -> bytes:
    b = io.BytesIO()
    Image.new("RGB", (4, 4), (i * 40, 10, 10)).save(b, "PNG")
    return b.getvalue()


def _cap(image_id: str, text: str) -> dict:
    cid = schema.caption_key(image_id, 1, "self", "m", "p")
    return {"caption_id": cid, "image_id": image_id, "round": 1, "kind": "self", "text": text, "captioner": "m",
            "prompt_id": "p", "prompt": "", "sampling": "{}", "sample_idx": 0, "finish_reason": "eos", "n_tokens": 9,
            "parent_caption_id": "", "transform": "", "run_id": "t", "created_at": T0}


def _v(vid: str, caption_id: str, keep: bool, minutes: int, reason: str = "") -> dict:
    return {"verdict_id": vid, "caption_id": caption_id, "filter": "hand", "score": 0.0, "keep": keep,
            "reason": reason if not keep else "", "config": "{}", "config_hash": "h", "run_id": "t",
            "created_at": T0 + timedelta(minutes=minutes)}


def test_build_filters_report_show_and_inspect_agree(tmp_store, tmp_path):
    store = tmp_store
    ingest_items(store, [Item(uri=f"i{i}", data=_png(i), caption=f"alt {i}") for i in range(6)], "test")
    ids = [schema.image_key(_png(i)) for i in range(6)]
    caps = [_cap(i, t) for i, t in zip(ids, TEXTS)]
    store.add_captions(caps)
    c = [r["caption_id"] for r in caps]
    store.add_verdicts([
        _v("1" * 32, c[1], False, 1, "bad"), _v("2" * 32, c[1], True, 2),
        _v("3" * 32, c[2], True, 1), _v("4" * 32, c[2], False, 2, "worse"),
        _v("f" * 32, c[3], True, 1), _v("0" * 32, c[3], False, 1, "tied"),   # same instant: the drop wins
        _v("a" * 32, c[4], True, 1), _v("b" * 32, c[4], True, 1),
    ])
    # Real filter runs on every caption: length at 5 words (c0 dropped), re-thresholded at 2 (kept), back to 5.
    for min_words in (5, 2, 5):
        run_filters(store, 1, filters=["length"], thresholds={"length.min_words": min_words})
    expected_rejected = {c[0], c[2], c[3]}

    # the store's views
    rejected = set(store.sql("SELECT caption_id FROM rejected_captions").column("caption_id").to_pylist())
    assert rejected == expected_rejected
    latest = store.sql("SELECT caption_id, filter, verdict_id FROM latest_verdicts ORDER BY ALL").to_pylist()
    assert len(latest) == 6 + 4   # one length verdict per caption + one hand verdict for c1..c4
    assert {r["verdict_id"] for r in latest if r["caption_id"] in (c[3], c[4])} >= {"0" * 32, "b" * 32}

    # build: an accepted recaption is in the target, a rejected one falls back to the original
    b = build(store, 1, "recaption", "parquet", out=str(tmp_path / "b"))
    t = pq.read_table(tmp_path / "b" / "data-00000-of-00001.parquet").to_pylist()
    target = {r["image_id"]: r["conversations"][1]["value"] for r in t}
    build_rejected = {cap["caption_id"] for cap in caps if target[cap["image_id"]] != cap["text"]}
    assert build_rejected == expected_rejected and b.manifest["counts"]["fallback_to_original"] == 3

    # filters: the report's accepted count and its latest-verdict counts
    rep = filter_report(store, 1)
    assert (rep["captions"], rep["accepted"]) == (6, 3)
    assert sum(r["n"] for r in rep["by_reason"] if not r["keep"]) == 3   # c0 length, c2 hand, c3 hand

    # report: drops per round from the latest verdicts
    drops = collect(store, gallery_size=0).drops
    assert sum(d["n"] for d in drops) == 3 and {d["round"] for d in drops} == {1}

    # show and inspect (inspect's fields are computed from show's caption versions)
    for image_id, cap in zip(ids, caps):
        versions = show(store, image_id).captions
        selfcap = [v for v in versions if v.kind == "self"][0]
        assert selfcap.accepted == (cap["caption_id"] not in expected_rejected), cap["text"]
        img = {"image_id": image_id, "source": "test", "split": "train", "uri": "", "meta": "{}"}
        fields, tags = sample_fields(img, versions)
        assert (fields["r1_self_verdict"] == "accepted") == selfcap.accepted
        assert bool(tags) == (not selfcap.accepted)
    c3 = [v for v in show(store, ids[3]).captions if v.kind == "self"][0]
    assert [(v.keep, v.current) for v in c3.verdicts if v.filter == "hand"] == [(False, True), (True, False)]
    assert [v.reason for v in c3.rejected_by] == ["tied"]
    # the re-thresholded length verdicts of c0: three rows, the last one current and a drop
    c0 = [v for v in show(store, ids[0]).captions if v.kind == "self"][0]
    assert [(v.keep, v.current) for v in c0.verdicts] == [(False, False), (True, False), (False, True)]
    assert json.loads(store.sql("SELECT counts FROM builds").to_pylist()[0]["counts"])["rows"] == 6
