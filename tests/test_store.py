"""Store API on real Lance tables in temp dirs: keys, commits, runs, tags, time travel, concurrency."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from curator import schema
from curator.errors import InputError, StoreError
from curator.ingest import original_caption_row
from curator.store import Store


def _img(i: int) -> dict:
    data = f"image-{i}".encode()
    return {"image_id": schema.image_key(data), "uri": f"mem://{i}", "source": "test", "width": 1, "height": 1,
            "format": "PNG", "split": "train", "meta": "{}", "bytes": data}


def _cap(image_id: str, text: str, round: int = 0, kind: str = "original", captioner: str = "source") -> dict:
    row = original_caption_row(image_id, text, run_id="r")
    row.update(round=round, kind=kind, captioner=captioner,
               caption_id=schema.caption_key(image_id, round, kind, captioner, ""))
    return row


def test_create_makes_all_seven_tables(tmp_path):
    s = Store(str(tmp_path / "st"), create=True)
    assert s.versions() == {t: 1 for t in schema.TABLES}
    assert s.counts() == {t: 0 for t in schema.TABLES}
    assert sorted(p.name for p in (tmp_path / "st").iterdir()) == sorted(f"{t}.lance" for t in schema.TABLES)


def test_missing_store_is_a_one_line_error(tmp_path):
    with pytest.raises(StoreError) as e:
        Store(str(tmp_path / "nope"))
    assert str(e.value) == (f"no store at {tmp_path / 'nope'} — it holds none of the store's tables — create one with "
                            "`curator ingest …`, or point --store / CURATOR_STORE at an existing store")


def test_lancedb_opens_the_same_tables(tmp_store):
    import lancedb

    tmp_store.add_images([_img(1), _img(2)])
    db = lancedb.connect(tmp_store.uri)
    assert db.open_table("images").count_rows() == 2


def test_one_commit_per_call_and_keys_skip_existing(tmp_store):
    imgs = [_img(i) for i in range(5)]
    assert tmp_store.add_images(imgs) == 5
    assert tmp_store.versions()["images"] == 2
    # Rerun: nothing new, no commit at all.
    assert tmp_store.add_images(imgs) == 0
    assert tmp_store.versions()["images"] == 2
    # Partly new batch (with an in-batch duplicate): one commit, only the new rows.
    assert tmp_store.add_images(imgs[:2] + [_img(7), _img(7)]) == 1
    assert tmp_store.versions()["images"] == 3
    assert tmp_store.counts()["images"] == 6
    caps = [_cap(r["image_id"], f"alt {i}") for i, r in enumerate(imgs)]
    assert tmp_store.add_captions(pa.Table.from_pylist(caps, schema=schema.CAPTIONS)) == 5
    assert tmp_store.add_captions(caps) == 0
    got = tmp_store.sql("SELECT text FROM captions ORDER BY text").column("text").to_pylist()
    assert got == [f"alt {i}" for i in range(5)]


def test_bad_rows_are_refused_with_the_column_named(tmp_store):
    with pytest.raises(InputError) as e:
        tmp_store.add_captions([{"caption_id": "x", "colour": "red"}])
    assert str(e.value).startswith("rows for captions have unknown keys ['colour']")
    with pytest.raises(InputError) as e:
        tmp_store.add_images([{"uri": "x"}])
    assert str(e.value) == ("1 row(s) for images have no image_id — image_id is the table's key — "
                            "compute it with curator.schema (e.g. caption_key)")


def test_runs_record_versions_read_and_written(tmp_store):
    before = tmp_store.versions()
    run = tmp_store.start_run("ingest", 0, {"n": 2})
    tmp_store.add_images([_img(1), _img(2)], run)
    tmp_store.add_captions([_cap(_img(1)["image_id"], "a")], run)
    tmp_store.finish_run(run, counts={"added": 2})
    row = tmp_store.sql(f"SELECT * FROM runs WHERE run_id = '{run}'").to_pylist()[0]
    assert row["status"] == "ok" and row["kind"] == "ingest" and row["round"] == 0
    assert json.loads(row["versions_read"]) == before
    assert json.loads(row["versions_written"]) == {"images": 2, "captions": 2}
    assert json.loads(row["counts"]) == {"added": 2}
    assert row["finished_at"] >= row["started_at"]
    assert tmp_store.counts()["runs"] == 1   # finish_run updates the row, it does not add one


def test_models_upsert_and_metrics(tmp_store):
    tmp_store.register_model({"model_id": "m1", "round": 0, "role": "generalist", "stage": "sft", "path": "/x"})
    tmp_store.update_model_metrics("m1", {"precision": 0.5})
    tmp_store.update_model_metrics("m1", {"recall": 0.25})
    rows = tmp_store.sql("SELECT model_id, metrics, path FROM models").to_pylist()
    assert rows == [{"model_id": "m1", "metrics": '{"precision": 0.5, "recall": 0.25}', "path": "/x"}]
    with pytest.raises(StoreError, match="^model m2 is not registered"):
        tmp_store.update_model_metrics("m2", {})


def test_tags_and_time_travel(tmp_store):
    tmp_store.add_images([_img(1)])
    tagged = tmp_store.tag("round-0")
    assert tagged["images"] == 2
    tmp_store.add_images([_img(2), _img(3)])
    tmp_store.add_captions([_cap(_img(2)["image_id"], "b")])
    assert tmp_store.tags() == ["round-0"]
    n = "SELECT count(*) AS n FROM images"
    assert tmp_store.sql(n).column("n")[0].as_py() == 3
    assert tmp_store.sql(n, at="round-0").column("n")[0].as_py() == 1
    assert tmp_store.table("images", at="round-0").count_rows() == 1
    # Store version = captions version; other tables at their state when it was committed.
    assert tmp_store.versions()["captions"] == 2
    assert tmp_store.sql(n, at=2).column("n")[0].as_py() == 3
    assert tmp_store.sql(n, at=1).column("n")[0].as_py() == 0
    assert tmp_store.sql(n, at={"images": 1}).column("n")[0].as_py() == 0
    with pytest.raises(StoreError, match="^tag round-0 already exists"):
        tmp_store.tag("round-0")
    tmp_store.tag("round-0", replace=True)
    assert tmp_store.sql(n, at="round-0").column("n")[0].as_py() == 3
    with pytest.raises(StoreError, match="^table images has no version or tag 'round-9'"):
        tmp_store.sql(n, at="round-9")


def test_image_bytes_and_load_images(tmp_store):
    import io

    from PIL import Image

    b = io.BytesIO()
    Image.new("L", (4, 3), 7).save(b, "PNG")
    row = dict(_img(0), bytes=b.getvalue(), image_id=schema.image_key(b.getvalue()))
    tmp_store.add_images([row])
    assert tmp_store.image_bytes([row["image_id"]]) == {row["image_id"]: b.getvalue()}
    im = tmp_store.load_images([row["image_id"]])[row["image_id"]]
    assert im.mode == "RGB" and im.size == (4, 3) and im.getpixel((0, 0)) == (7, 7, 7)
    with pytest.raises(StoreError, match="^1 image\\(s\\) not in the store"):
        tmp_store.image_bytes(["0" * 64])


_WRITER = textwrap.dedent("""
    import sys
    from curator.store import Store
    from curator.ingest import original_caption_row
    from curator import schema
    store, w = Store(sys.argv[1]), sys.argv[2]
    for b in range(8):
        rows = []
        for i in range(25):
            iid = schema.sha256_hex(f"{w}-{b}-{i}")
            rows.append(original_caption_row(iid, f"{w} {b} {i}", run_id=w))
        for i in range(5):   # keys both writers write: must land once
            iid = schema.sha256_hex(f"shared-{b}-{i}")
            rows.append(original_caption_row(iid, "shared", run_id=w))
        store.add_captions(rows)
""")


def test_two_processes_append_concurrently_and_both_land(tmp_store):
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, tmp_store.uri, w]) for w in ("a", "b")]
    assert [p.wait() for p in procs] == [0, 0]
    r = tmp_store.sql("SELECT count(*) AS n, count(DISTINCT caption_id) AS d, "
                      "count(*) FILTER (WHERE text = 'shared') AS s FROM captions").to_pylist()[0]
    assert r == {"n": 2 * 8 * 25 + 8 * 5, "d": 2 * 8 * 25 + 8 * 5, "s": 8 * 5}


def test_compact_keeps_rows_and_history(tmp_store):
    for i in range(4):
        tmp_store.add_images([_img(i)])
    tmp_store.tag("before")
    tmp_store.compact()
    assert len(tmp_store.table("images").get_fragments()) == 1
    assert tmp_store.counts()["images"] == 4
    assert tmp_store.table("images", at="before").count_rows() == 4


def test_cli_compact(tmp_store):
    from conftest import run_cli

    for i in range(3):
        tmp_store.add_images([_img(i)])
    out = run_cli("compact", store=tmp_store.uri).stdout
    v = tmp_store.versions()
    assert v["images"] > 4   # three appends after creation, then the compaction commit(s)
    assert out == "compacted images; versions: " + " ".join(f"{t}@{n}" for t, n in v.items()) + "\n"
    assert len(tmp_store.table("images").get_fragments()) == 1


def test_tags_are_history(tmp_store):
    tmp_store.add_images([_img(1)])
    first = tmp_store.tag("round-0")
    tmp_store.add_images([_img(2), _img(3)])
    n = "SELECT count(*) AS n FROM images"
    # a namespaced tag ("<pipeline>/<name>"), stored under a Lance-safe name, read back under its own
    tmp_store.tag(["self-augment-ab12/round-0", "other.run_1"])
    assert tmp_store.tags() == ["other.run_1", "round-0", "self-augment-ab12/round-0"]
    assert tmp_store.sql(n, at="self-augment-ab12/round-0").column("n")[0].as_py() == 3
    assert tmp_store.sql(n, at="round-0").column("n")[0].as_py() == 1
    with pytest.raises(StoreError, match="^table images has no version or tag 'self-augment-ab12/round-9'"):
        tmp_store.sql(n, at="self-augment-ab12/round-9")
    for bad in ("a__b", "a/b/c", "a_/b", "/b", "a/", "round 1"):
        with pytest.raises(InputError, match=f"^invalid tag {re.escape(repr(bad))} — "):
            tmp_store.tag(bad)
    # moving a tag is recorded in runs, with the versions it named before: that state stays readable
    with pytest.raises(StoreError, match="^tag round-0 already exists — tags name a fixed past state"):
        tmp_store.tag("round-0")
    moved = tmp_store.tag("round-0", replace=True)
    assert tmp_store.sql(n, at="round-0").column("n")[0].as_py() == 3
    runs = tmp_store.sql("SELECT config, counts FROM runs WHERE kind = 'tag' ORDER BY started_at").to_pylist()
    assert [json.loads(r["counts"]) for r in runs] == [
        {"created": ["round-0"], "moved": []},
        {"created": ["self-augment-ab12/round-0", "other.run_1"], "moved": []},
        {"created": [], "moved": ["round-0"]}]
    cfg = json.loads(runs[-1]["config"])
    assert cfg["moved"] == {"round-0": first} and cfg["versions"] == moved
    assert tmp_store.sql(n, at=cfg["moved"]["round-0"]).column("n")[0].as_py() == 1


def test_pipeline_tags_never_move_another_runs_round_tag(tmp_store):
    from pipelines.steps import tag_state

    log = []
    tmp_store.add_images([_img(1)])
    a = tag_state(tmp_store, "self-augment-aaaa", "round-1", log=log.append)
    assert (a["tag"], a["short"]) == ("self-augment-aaaa/round-1", "round-1") and log == []
    tmp_store.add_images([_img(2)])
    # the same pipeline again (a resumed step): its own short tag follows it
    again = tag_state(tmp_store, "self-augment-aaaa", "round-1", log=log.append)
    assert again["short"] == "round-1" and log == []
    tmp_store.add_images([_img(3)])
    # a second recipe in the same store: round-1 stays where it was, the log says where this state is
    b = tag_state(tmp_store, "self-augment-bbbb", "round-1", log=log.append)
    assert b["short"] is None
    assert log == ["note: tag round-1 already names another state of this store (another pipeline or run); this "
                   "run's state is tagged self-augment-bbbb/round-1 (pass --retag to move round-1 here)"]
    n = "SELECT count(*) AS n FROM images"
    assert [tmp_store.sql(n, at=t).column("n")[0].as_py() for t in
            ("round-1", "self-augment-aaaa/round-1", "self-augment-bbbb/round-1")] == [2, 2, 3]
    # --retag moves it (recorded)
    c = tag_state(tmp_store, "self-augment-bbbb", "round-1", retag=True, log=log.append)
    assert c["short"] == "round-1" and tmp_store.sql(n, at="round-1").column("n")[0].as_py() == 3
    last = tmp_store.sql("SELECT counts FROM runs WHERE kind = 'tag' ORDER BY started_at DESC LIMIT 1").to_pylist()
    assert json.loads(last[0]["counts"]) == {"created": [], "moved": ["self-augment-bbbb/round-1", "round-1"]}


def test_models_keep_every_registration(tmp_store):
    base = {"model_id": "m1", "role": "generalist", "stage": "pretrain", "path": "/ck", "parent_model_id": "p0"}
    r1 = tmp_store.register_model(dict(base, round=1, trained_on="build-r1"))
    r2 = tmp_store.register_model(dict(base, round=2, trained_on="build-r2"))
    assert r1 != r2
    assert tmp_store.register_model(dict(base, round=1, trained_on="build-r1")) == r1   # the same fact: no-op
    tmp_store.update_model_metrics("m1", {"p_x_r": 0.5})
    rows = tmp_store.sql("SELECT registration_id, round, trained_on, metrics FROM models ORDER BY round").to_pylist()
    assert rows == [{"registration_id": r1, "round": 1, "trained_on": "build-r1", "metrics": '{"p_x_r": 0.5}'},
                    {"registration_id": r2, "round": 2, "trained_on": "build-r2", "metrics": '{"p_x_r": 0.5}'}]
    # lineage per round stays true for both rounds
    q = "SELECT trained_on FROM models WHERE model_id = 'm1' AND round = {}"
    assert [tmp_store.sql(q.format(k)).column("trained_on").to_pylist() for k in (1, 2)] == [["build-r1"], ["build-r2"]]


def test_models_of_an_older_store_get_registration_ids(tmp_store):
    import lance

    old = schema.MODELS.remove(schema.MODELS.get_field_index("registration_id"))
    row = {"model_id": "m0", "round": 0, "role": "generalist", "stage": "sft", "path": "/x", "metrics": "{}"}
    lance.write_dataset(pa.Table.from_pylist([row], schema=old), f"{tmp_store.uri}/models.lance", mode="overwrite")
    tmp_store.register_model({"model_id": "m0", "round": 1, "role": "generalist", "stage": "sft", "path": "/x"})
    tmp_store.update_model_metrics("m0", {"a": 1})
    rows = tmp_store.sql("SELECT registration_id, round, metrics FROM models ORDER BY round").to_pylist()
    assert [(r["registration_id"] == "m0", r["round"], r["metrics"]) for r in rows] == [
        (True, 0, '{"a": 1}'), (False, 1, '{"a": 1}')]


def test_the_documented_lineage_query_is_true_for_both_rounds(tmp_store):
    """docs/loop.md's lineage SQL on a store where one checkpoint was the SFT model of rounds 0 and 1."""
    from pathlib import Path

    for r, pre, b in ((0, "p0", "b0"), (1, "p1", "b1")):
        tmp_store.register_model({"model_id": pre, "round": r, "role": "generalist", "stage": "pretrain",
                                  "trained_on": b, "path": "x"})
        tmp_store.register_model({"model_id": "ck", "round": r, "role": "generalist", "stage": "sft",
                                  "trained_on": "sft", "parent_model_id": pre, "path": "x"})
        tmp_store.add_build({"build_id": b, "round": r, "policy": ["original", "concat"][r], "sql": "", "sql_hash": "",
                             "store_versions": "{}", "seed": 0, "format": "parquet", "output_path": "o", "rows": 1,
                             "content_hash": "h", "counts": "{}"})
    tmp_store.add_captions([_cap(_img(1)["image_id"], "t", round=r, kind="self", captioner="ck") for r in (1, 2)])
    doc = (Path(__file__).resolve().parents[1] / "docs" / "loop.md").read_text()
    q = doc.split("```sql")[1].split("```")[0].strip().rstrip(";")
    rows = tmp_store.sql(q + " ORDER BY c.round").to_pylist()
    assert [(r["round"], r["by_round"], r["policy"], r["build_round"]) for r in rows] == [
        (1, 0, "original", 0), (2, 1, "concat", 1)]
