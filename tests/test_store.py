"""Store API on real Lance tables in temp dirs: keys, commits, runs, tags, time travel, concurrency."""
from __future__ import annotations

import json
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
