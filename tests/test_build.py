"""`curator build`: every policy checked row by row on a hand-made store, the three formats, manifests
and byte-identical rebuilds, datasets.load_dataset on the Parquet output, custom SQL through the CLI."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from datetime import datetime, timedelta, timezone

import pyarrow.parquet as pq
import pytest
from conftest import run_cli
from PIL import Image

from curator import schema
from curator.build import build, build_from_manifest, policy_sql
from curator.errors import InputError, ReadOnlyError, StoreError
from curator.ingest import Item, ingest_items
from curator.prompts import question_pool

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _png(i: int) -> bytes:
    b = io.BytesIO()
    Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(b, "PNG")
    return b.getvalue()


def _cap(image_id, round, kind, text, minutes, transform="", parent=""):
    cid = schema.caption_key(image_id, round, kind, "m", "p", 0, transform, parent)
    return {"caption_id": cid, "image_id": image_id, "round": round, "kind": kind, "text": text, "captioner": "m",
            "prompt_id": "p", "prompt": "", "sampling": "{}", "sample_idx": 0, "finish_reason": "eos",
            "n_tokens": 3, "parent_caption_id": parent, "transform": transform, "run_id": "t",
            "created_at": T0 + timedelta(minutes=minutes)}


def _verdict(caption_id, filt, keep, minutes):
    return {"verdict_id": schema.verdict_key(caption_id, filt, str(minutes)), "caption_id": caption_id, "filter": filt,
            "score": 0.0, "keep": keep, "reason": "" if keep else "bad", "config": "{}", "config_hash": str(minutes),
            "run_id": "t", "created_at": T0 + timedelta(minutes=minutes)}


@pytest.fixture
def world(tmp_store):
    """Images img0..img7 with originals "alt i" (img6 has none, img7 is split=eval) and this caption history:
    img0: self r1 + r2 (latest r2 wins); spatial, ocr, grounding outputs
    img1: self r1 raw rejected by repetition, derived repcut (written later) accepted; spatial rejected
    img2: self r1 whose latest verdict rejects it (an earlier one kept it) → falls back
    img3: self r1 whose latest verdict keeps it (an earlier one rejected it); ocr output
    img4: self r3 only (beyond round 2) → falls back at round 2
    img5: no recaption → falls back
    """
    items = [Item(uri=f"img{i}", data=_png(i), caption=(None if i == 6 else f"alt {i}"),
                  split="eval" if i == 7 else "train") for i in range(8)]
    ingest_items(tmp_store, items, "test")
    ids = {f"img{i}": schema.image_key(_png(i)) for i in range(8)}
    c = [
        _cap(ids["img0"], 1, "self", "self0 r1", 1), _cap(ids["img0"], 2, "self", "self0 r2", 2),
        _cap(ids["img0"], 2, "spatial", "sp0", 3), _cap(ids["img0"], 2, "ocr", "ocr0", 3),
        _cap(ids["img0"], 2, "grounding", "gr0 [1,2,3,4]", 3),
        _cap(ids["img1"], 1, "self", "self1 raw raw raw", 1),
        _cap(ids["img2"], 1, "self", "self2", 1), _cap(ids["img3"], 1, "self", "self3", 1),
        _cap(ids["img3"], 1, "ocr", "ocr3", 1), _cap(ids["img1"], 1, "spatial", "sp1", 1),
        _cap(ids["img4"], 3, "self", "self4 r3", 5),
    ]
    raw1 = c[5]["caption_id"]
    c.append(_cap(ids["img1"], 1, "self", "self1 cut", 2, transform="repcut", parent=raw1))
    tmp_store.add_captions(c)
    by_text = {r["text"]: r["caption_id"] for r in c}
    tmp_store.add_verdicts([
        _verdict(raw1, "repetition", False, 3), _verdict(by_text["self1 cut"], "repetition", True, 3),
        _verdict(by_text["self2"], "length", True, 2), _verdict(by_text["self2"], "length", False, 4),
        _verdict(by_text["self3"], "length", False, 2), _verdict(by_text["self3"], "length", True, 4),
        _verdict(by_text["sp1"], "grounding", False, 2),
    ])
    return tmp_store, ids


def _targets(out_dir):
    t = pq.read_table(os.path.join(out_dir, "data-00000-of-00001.parquet"))
    return {r["id"]: r for r in t.to_pylist()}


def _gpt(row):
    assert row["conversations"][0] == {"from": "human", "value": "<image>"}
    return row["conversations"][1]["value"]


def test_original_recaption_concat_row_by_row(world, tmp_path):
    store, ids = world
    name = {v: k for k, v in ids.items()}
    expected_recap = {"img0": "self0 r2", "img1": "self1 cut", "img3": "self3"}
    for policy in ("original", "recaption", "concat"):
        res = build(store, 2, policy, "parquet", out=str(tmp_path / policy))
        rows = _targets(res.out_dir)
        assert sorted(name[r] for r in rows) == [f"img{i}" for i in (0, 1, 2, 3, 4, 5)]
        for iid, row in rows.items():
            n = name[iid]
            orig = f"alt {n[3:]}"
            rc = expected_recap.get(n)
            want = {"original": orig,
                    "recaption": rc or orig,
                    "concat": (f"### Short description:\n{orig}\n\n### Long description:\n{rc}" if rc else orig)}[policy]
            assert _gpt(row) == want, (policy, n)
            assert len(row["conversations"]) == 2
            assert row["image"] == _png(int(n[3:]))
            assert row["image_id"] == iid
        sources = {"original": {"original": 6}, "recaption": {"original": 3, "recaption": 3},
                   "concat": {"original": 3, "original+recaption": 3}}[policy]
        assert res.manifest["counts"] == {"rows": 6, "fallback_to_original": 0 if policy == "original" else 3,
                                          "sources": sources, "train_images_not_in_build": 1}
    # At round 3 img4's round-3 recaption counts.
    r3 = _targets(build(store, 3, "recaption", "parquet", out=str(tmp_path / "r3")).out_dir)
    assert _gpt(r3[ids["img4"]]) == "self4 r3"


def test_images_without_an_original_caption(tmp_store, tmp_path):
    """An uncaptioned collection: each policy says what it does with a missing original (in its SQL), and
    an image with an accepted recaption and no original reaches the training set."""
    items = [Item(uri=f"u{i}", data=_png(i), caption="alt 0" if i == 0 else None) for i in range(5)]
    ingest_items(tmp_store, items, "test")
    ids = [schema.image_key(_png(i)) for i in range(5)]
    caps = [_cap(ids[0], 1, "self", "long 0", 1), _cap(ids[1], 1, "self", "long 1", 1),
            _cap(ids[2], 1, "self", "long 2 rejected", 1), _cap(ids[3], 1, "spatial", "sp3", 1),
            _cap(ids[1], 1, "ocr", "ocr1", 1)]
    tmp_store.add_captions(caps)
    tmp_store.add_verdicts([_verdict(caps[2]["caption_id"], "length", False, 2)])
    # u0: original + recaption; u1: recaption (+ ocr), no original; u2: its recaption rejected, no original;
    # u3: a specialist output only; u4: nothing.
    got = {}
    for policy in ("original", "recaption", "concat", "specialist-qa", "concat-specialist-qa"):
        res = build(tmp_store, 1, policy, "parquet", out=str(tmp_path / policy))
        got[policy] = ({ids.index(k): v["conversations"] for k, v in _targets(res.out_dir).items()},
                       res.manifest["counts"])
    h, g = (lambda v: {"from": "human", "value": v}), (lambda v: {"from": "gpt", "value": v})
    concat0 = "### Short description:\nalt 0\n\n### Long description:\nlong 0"
    assert got["original"] == ({0: [h("<image>"), g("alt 0")]},
                               {"rows": 1, "fallback_to_original": 0, "sources": {"original": 1},
                                "train_images_not_in_build": 4})
    assert got["recaption"] == ({0: [h("<image>"), g("long 0")], 1: [h("<image>"), g("long 1")]},
                                {"rows": 2, "fallback_to_original": 0, "sources": {"recaption": 2},
                                 "train_images_not_in_build": 3})
    assert got["concat"] == ({0: [h("<image>"), g(concat0)], 1: [h("<image>"), g("long 1")]},
                             {"rows": 2, "fallback_to_original": 0,
                              "sources": {"original+recaption": 1, "recaption": 1}, "train_images_not_in_build": 3})
    sq, counts = got["specialist-qa"]
    assert sorted(sq) == [0, 1, 3]
    assert sq[0] == [h("<image>"), g("alt 0")]
    assert sq[1][:2] == [h("<image>"), g("long 1")] and sq[1][3] == g("ocr1")
    assert sq[1][2]["value"] in question_pool("ocr")
    q3 = sq[3][0]["value"]   # no caption for the first turn: the QA turn alone, <image> before the question
    assert q3.startswith("<image>\n") and q3[len("<image>\n"):] in question_pool("spatial") and sq[3][1:] == [g("sp3")]
    assert counts == {"rows": 3, "fallback_to_original": 1, "train_images_not_in_build": 2,
                      "sources": {"original": 1, "recaption": 1, "specialist": 1}}
    csq, counts = got["concat-specialist-qa"]
    assert csq[0] == [h("<image>"), g(concat0)] and csq[1][1:] == sq[1][1:] and csq[3] == sq[3]
    assert counts["sources"] == {"original+recaption": 1, "recaption": 1, "specialist": 1}
    out = run_cli("build", "--round", "1", "--format", "webdataset", "--out", tmp_path / "cli", store=tmp_store.uri).stdout
    lines = out.splitlines()
    assert lines[1:6] == ["  rows                        2",
                          "    original + recaption                          1",
                          "    recaption alone (no original caption)         1",
                          "  fell back                   0 (the policy's preferred caption was missing)",
                          "  train images not in build   3 (no caption this policy uses)"]
    for policy in got:   # the SQL itself says what happens to an image without an original caption
        assert "no original caption" in policy_sql(policy).split("\nWITH\n")[0].lower(), policy


def test_no_verdicts_means_everything_accepted(tmp_store, tmp_path):
    items = [Item(uri="a", data=_png(1), caption="alt")]
    ingest_items(tmp_store, items, "test")
    iid = schema.image_key(_png(1))
    tmp_store.add_captions([_cap(iid, 1, "self", "long one", 1)])
    rows = _targets(build(tmp_store, 1, "concat", "parquet", out=str(tmp_path / "b")).out_dir)
    assert _gpt(rows[iid]) == "### Short description:\nalt\n\n### Long description:\nlong one"


def test_specialist_qa_turns_pools_and_seeded_shuffle(world, tmp_path):
    store, ids = world
    res = build(store, 2, "specialist-qa", "parquet", out=str(tmp_path / "s0"), seed=0)
    rows = _targets(res.out_dir)
    assert res.manifest["counts"]["fallback_to_original"] == 4     # img1 (spatial rejected), img2, img4, img5
    c0 = rows[ids["img0"]]["conversations"]
    assert c0[:2] == [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "alt 0"}]
    qa = [(c0[i]["value"], c0[i + 1]["value"]) for i in range(2, len(c0), 2)]
    answers = {"sp0": "spatial", "ocr0": "ocr", "gr0 [1,2,3,4]": "grounding"}
    assert sorted(a for _, a in qa) == sorted(answers)
    for q, a in qa:
        assert q in question_pool(answers[a])
    assert [t["from"] for t in c0] == ["human", "gpt"] * 4
    c3 = rows[ids["img3"]]["conversations"]
    assert c3[1]["value"] == "alt 3" and c3[3]["value"] == "ocr3" and c3[2]["value"] in question_pool("ocr")
    assert rows[ids["img1"]]["conversations"] == [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "alt 1"}]
    # Same seed → same sample; across seeds both the order and the questions vary.
    again = _targets(build(store, 2, "specialist-qa", "parquet", out=str(tmp_path / "s0b"), seed=0).out_dir)
    assert again[ids["img0"]]["conversations"] == c0
    orders, questions = set(), set()
    for seed in range(8):
        conv = _targets(build(store, 2, "specialist-qa", "parquet", out=str(tmp_path / f"seed{seed}"),
                              seed=seed).out_dir)[ids["img0"]]["conversations"]
        orders.add(tuple(conv[i]["value"] for i in range(3, 8, 2)))
        questions.add(tuple(conv[i]["value"] for i in range(2, 8, 2)))
    assert len(orders) > 1 and len(questions) > 1


def test_a_user_specialist_needs_its_pool_and_gets_it_from_a_prompts_file(world, tmp_path):
    store, ids = world
    store.add_captions([_cap(ids["img5"], 2, "counting", "two shapes", 6)])
    before = len(os.listdir(tmp_path))
    with pytest.raises(InputError) as e:
        build(store, 2, "specialist-qa", "parquet", out=str(tmp_path / "no-pool"))
    assert str(e.value) == (
        "specialist kind(s) counting have captions but no question pool — the specialist-qa build asks each "
        "specialist's output with a question from its pool (pools: grounding, ocr, spatial) — pass the prompts "
        "YAML that defines them (--prompts-file), or your own policy with --sql")
    assert len(os.listdir(tmp_path)) == before   # nothing written
    pf = tmp_path / "mine.yaml"
    pf.write_text("prompts:\n  count: 'Count the shapes.'\nsets:\n  counting: [count]\n"
                  "question_pools:\n  counting: ['How many shapes are there?']\n")
    res = build(store, 2, "specialist-qa", "parquet", out=str(tmp_path / "pool"), prompts_file=str(pf))
    c5 = _targets(res.out_dir)[ids["img5"]]["conversations"]
    assert c5 == [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "alt 5"},
                  {"from": "human", "value": "How many shapes are there?"}, {"from": "gpt", "value": "two shapes"}]
    # the built-in specialists keep their pools next to the user's
    c0 = _targets(res.out_dir)[ids["img0"]]["conversations"]
    assert sorted(c0[i]["value"] for i in range(3, len(c0), 2)) == ["gr0 [1,2,3,4]", "ocr0", "sp0"]
    # the pools are in the recorded SQL: the manifest alone rebuilds the same bytes (no prompts file needed)
    again = build_from_manifest(store, os.path.join(res.out_dir, "manifest.json"), out=str(tmp_path / "again"))
    assert again.manifest["content_hash"] == res.manifest["content_hash"]
    shown = run_cli("build", "--policy", "specialist-qa", "--prompts-file", str(pf), "--show-sql", store=store.uri)
    assert "('counting', 0, 'How many shapes are there?')" in shown.stdout


def test_concat_specialist_qa_keeps_the_recaption_in_the_first_turn(world, tmp_path):
    store, ids = world
    base = _targets(build(store, 2, "specialist-qa", "parquet", out=str(tmp_path / "sq"), seed=0).out_dir)
    rows = _targets(build(store, 2, "concat-specialist-qa", "parquet", out=str(tmp_path / "csq"), seed=0).out_dir)
    c0 = rows[ids["img0"]]["conversations"]
    assert c0[1] == {"from": "gpt", "value": "### Short description:\nalt 0\n\n### Long description:\nself0 r2"}
    assert c0[2:] == base[ids["img0"]]["conversations"][2:]          # same QA turns, same order
    assert rows[ids["img5"]]["conversations"][1]["value"] == "alt 5"  # no recaption: the original alone
    assert rows[ids["img1"]]["conversations"][1]["value"].endswith("self1 cut")


def test_three_formats_hold_the_same_samples(world, tmp_path):
    store, ids = world
    pqt = _targets(build(store, 2, "concat", "parquet", out=str(tmp_path / "p")).out_dir)
    llava_dir = build(store, 2, "concat", "llava", out=str(tmp_path / "l")).out_dir
    data = json.loads((tmp_path / "l" / "data.json").read_text())
    assert [d["id"] for d in data] == sorted(pqt)
    for d in data:
        assert d["image"] == f"images/{d['id']}.png"
        assert (tmp_path / "l" / d["image"]).read_bytes() == pqt[d["id"]]["image"]
        assert d["conversations"] == pqt[d["id"]]["conversations"]
    assert llava_dir == str(tmp_path / "l")
    build(store, 2, "concat", "webdataset", out=str(tmp_path / "w"), rows_per_shard=4)
    assert sorted(os.listdir(tmp_path / "w")) == ["manifest.json", "shard-000000.tar", "shard-000001.tar"]
    seen = {}
    for shard in ("shard-000000.tar", "shard-000001.tar"):
        with tarfile.open(tmp_path / "w" / shard) as tf:
            for m in tf.getmembers():
                assert m.mtime == 0 and m.uid == 0
                seen[m.name] = tf.extractfile(m).read()
    assert len(seen) == 12
    for iid, row in pqt.items():
        assert seen[f"{iid}.png"] == row["image"]
        assert json.loads(seen[f"{iid}.json"]) == {"id": iid, "conversations": row["conversations"]}


@pytest.mark.parametrize("fmt,files", [
    ("parquet", ["data-00000-of-00001.parquet", "manifest.json"]),
    ("webdataset", ["manifest.json", "shard-000000.tar", "shard-000001.tar"]),
])
def test_manifest_rebuild_is_byte_identical(world, tmp_path, fmt, files):
    store, ids = world
    build(store, 2, "concat", fmt, out=str(tmp_path / "a"), rows_per_shard=4)
    assert sorted(os.listdir(tmp_path / "a")) == files
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["rows"] == 6 and m["policy"] == "concat" and m["sql"] == policy_sql("concat")
    assert m["store_versions"]["captions"] == store.versions()["captions"]
    assert m["files"] == {f: hashlib.sha256((tmp_path / "a" / f).read_bytes()).hexdigest()
                          for f in files if f != "manifest.json"}
    # The store moves on: a new accepted recaption for img5 changes a fresh build...
    store.add_captions([_cap(ids["img5"], 2, "self", "self5 late", 9)])
    fresh = build(store, 2, "concat", fmt, out=str(tmp_path / "fresh"), rows_per_shard=4)
    assert fresh.manifest["content_hash"] != m["content_hash"]
    # ...but the manifest pins the versions read, so the rebuild reproduces every byte (manifest included).
    run_cli("build", "--from-manifest", str(tmp_path / "a" / "manifest.json"), "--out", str(tmp_path / "b"),
            store=store.uri)
    assert sorted(os.listdir(tmp_path / "b")) == files
    for f in files:
        assert (tmp_path / "b" / f).read_bytes() == (tmp_path / "a" / f).read_bytes(), f
    builds = store.sql("SELECT build_id, rows, content_hash FROM builds ORDER BY created_at").to_pylist()
    assert builds[0] == {"build_id": m["build_id"], "rows": 6, "content_hash": m["content_hash"]}
    # A manifest whose recorded hash does not match what the store yields is an error, not a silent rebuild.
    m["content_hash"] = "0" * 64
    (tmp_path / "bad.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match="^rebuild of .* produced different bytes"):
        build_from_manifest(store, str(tmp_path / "bad.json"), out=str(tmp_path / "c"))


def test_parquet_output_loads_with_datasets(world, tmp_path):
    import datasets

    store, _ = world
    build(store, 2, "specialist-qa", "parquet", out=str(tmp_path / "p"))
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "p" / "*.parquet"), split="train")
    assert ds.num_rows == 6 and ds.column_names == ["id", "image_id", "image", "conversations"]
    row = ds[0]
    assert row["conversations"][0] == {"from": "human", "value": "<image>"}
    assert Image.open(io.BytesIO(row["image"])).size == (8, 8)


def test_cli_show_sql_custom_sql_and_refusals(world, tmp_path):
    store, ids = world
    sql = run_cli("build", "--policy", "recaption", "--show-sql", store=store.uri).stdout
    assert sql == policy_sql("recaption")
    custom = sql.replace("coalesce(r.text, o.text)", "upper(coalesce(r.text, o.text))")
    (tmp_path / "mine.sql").write_text(custom)
    out = run_cli("build", "--round", "2", "--sql", str(tmp_path / "mine.sql"), "--out", str(tmp_path / "c"),
                  store=store.uri).stdout
    assert "policy custom" in out and re.search(r"^  rows +6$", out, re.M), out
    rows = _targets(tmp_path / "c")
    assert _gpt(rows[ids["img0"]]) == "SELF0 R2" and _gpt(rows[ids["img5"]]) == "ALT 5"
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["policy"] == "custom"
    (tmp_path / "evil.sql").write_text("COPY (SELECT 1) TO 'x.csv'")
    res = run_cli("build", "--round", "2", "--sql", str(tmp_path / "evil.sql"), store=store.uri, check=False,
                  cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.startswith("Error: refused: COPY statement")
    with pytest.raises(ReadOnlyError):
        build(store, 2, sql="DELETE FROM captions", out=str(tmp_path / "d"))
    with pytest.raises(InputError, match="^output directory .* is not empty"):
        build(store, 2, out=str(tmp_path / "c"))
    listing = run_cli("builds", store=store.uri).stdout
    assert "custom" in listing and "(1 rows)" in listing


@pytest.mark.parametrize("fmt", ["parquet", "llava"])
def test_bad_custom_policies_fail_loudly(world, tmp_path, fmt):
    store, ids = world
    base = "SELECT image_id AS id, image_id, [{'from': 'human', 'value': '<image>'}] AS conversations FROM images"
    cases = [
        (base + " UNION ALL " + base, r"^build SQL returned 8 duplicate id\(s\), e\.g\. "),
        ("SELECT 'x' AS id, 'ab' AS image_id, [{'from': 'gpt', 'value': 'v'}] AS conversations",
         r"^1 sample\(s\) name an image_id that is not in the images table"),
        ("SELECT image_id AS id, image_id FROM images", r"^build SQL lacks column\(s\) \['conversations'\]"),
        ("SELECT nope FROM images", "^build SQL failed — Binder Error"),
    ]
    for i, (sql, msg) in enumerate(cases):
        with pytest.raises(InputError, match=msg):
            build(store, 2, sql=sql, format=fmt, out=str(tmp_path / str(i)))
    runs = store.sql("SELECT status, count(*) AS n FROM runs WHERE kind = 'build' GROUP BY status").to_pylist()
    assert runs == [{"status": "failed", "n": 4}]


def test_build_at_a_tag_reads_the_tagged_state(world, tmp_path):
    store, ids = world
    store.tag("round-2")
    before = build(store, 2, "concat", "parquet", out=str(tmp_path / "a"))
    store.add_captions([_cap(ids["img5"], 2, "self", "self5 late", 9)])
    run_cli("build", "--round", "2", "--at", "round-2", "--out", str(tmp_path / "b"), store=store.uri)
    assert (tmp_path / "b" / "data-00000-of-00001.parquet").read_bytes() == \
        (tmp_path / "a" / "data-00000-of-00001.parquet").read_bytes()
    now = _targets(build(store, 2, "concat", "parquet", out=str(tmp_path / "c")).out_dir)
    assert _gpt(now[ids["img5"]]).endswith("### Long description:\nself5 late")
    assert before.manifest["counts"]["fallback_to_original"] == 3
