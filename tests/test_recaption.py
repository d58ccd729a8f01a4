"""recaption() on a real Lance store with a tiny random-weight checkpoint: provenance, one commit per batch,
skip-on-rerun, failures recorded and retried, shards, --where/--limit, and one-line errors."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from curator.cli import cli
from curator.errors import InputError
from curator.prompts import load_prompts
from curator.recaption import parse_shard, recaption, recaption_in_processes, shard_of
from engines_toy import internvl_ckpt, make_store
from vila2_model.checkpoint import content_hash


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return internvl_ckpt(tmp_path_factory.mktemp("ckpt") / "internvl")


def test_recaption_provenance_batches_failures_and_rerun(tmp_path, ckpt):
    store, ids = make_store(tmp_path / "s", n=10, corrupt=1)
    bad = ids[-1]
    v0 = store.versions()
    counts = recaption(store, 1, str(ckpt), batch_size=4, max_new_tokens=5, progress=False)
    assert (counts["selected"], counts["skipped"], counts["added"], counts["failed"]) == (11, 0, 10, 1)
    v1 = store.versions()
    # 11 images in batches of 4 → 3 batches → 3 caption commits; the bad image → 1 failures commit.
    assert v1["captions"] - v0["captions"] == 3
    assert v1["failures"] - v0["failures"] == 1
    caps = store.sql("SELECT * FROM captions WHERE round = 1").to_pylist()
    assert len(caps) == 10 and {c["image_id"] for c in caps} == set(ids[:-1])
    book, h = load_prompts(), content_hash(ckpt)
    for c in caps:
        p = book.draw("vila2", c["image_id"], 0)
        assert (c["prompt_id"], c["prompt"]) == (p.id, p.text)
        assert c["captioner"] == h and c["kind"] == "self" and c["transform"] == "" and c["sample_idx"] == 0
        assert json.loads(c["sampling"]) == {"do_sample": False, "max_new_tokens": 5, "seed": 0,
                                             "temperature": 1.0, "top_p": 1.0}
        assert c["finish_reason"] in ("eos", "length") and 0 <= c["n_tokens"] <= 5
        assert c["run_id"] == counts["run_id"]
    assert {c["prompt_id"] for c in caps} <= {"long-v1", "long-v2", "long-v3"}
    fails = store.sql("SELECT * FROM failures").to_pylist()
    assert len(fails) == 1 and fails[0]["image_id"] == bad and fails[0]["stage"] == "load"
    assert fails[0]["reason"].startswith("UnidentifiedImageError: cannot identify image file")
    run = store.sql(f"SELECT * FROM runs WHERE run_id = '{counts['run_id']}'").to_pylist()[0]
    assert run["status"] == "ok" and json.loads(run["counts"])["added"] == 10
    # Rerun: everything captioned is skipped; the failed image is retried (and fails again, recorded again).
    again = recaption(store, 1, str(ckpt), batch_size=4, max_new_tokens=5, progress=False)
    assert (again["skipped"], again["todo"], again["added"], again["failed"], again["retried"]) == (10, 1, 0, 1, 1)
    assert store.sql("SELECT count(*) AS n FROM captions").column("n")[0].as_py() == 10
    assert store.sql("SELECT count(*) AS n FROM failures").column("n")[0].as_py() == 2


def test_shards_where_limit_and_specialist_prompts(tmp_path, ckpt):
    store, ids = make_store(tmp_path / "s", n=12)
    a = recaption(store, 1, str(ckpt), shard=(0, 2), batch_size=8, max_new_tokens=3, progress=False)
    b = recaption(store, 1, str(ckpt), shard=(1, 2), batch_size=8, max_new_tokens=3, progress=False)
    assert a["added"] + b["added"] == 12
    assert a["added"] == sum(1 for i in ids if shard_of(i, 2) == 0)
    got = store.sql("SELECT image_id FROM captions WHERE round = 1").column("image_id").to_pylist()
    assert sorted(got) == sorted(ids)
    # --where + --limit + a specialist set: 3 images, spatial prompts, kind spatial.
    first3 = sorted(ids)[:3]
    c = recaption(store, 1, str(ckpt), prompts="spatial", kind="spatial", where="split = 'train'", limit=3,
                  max_new_tokens=3, progress=False)
    assert c["added"] == 3
    rows = store.sql("SELECT image_id, prompt_id FROM captions WHERE kind = 'spatial'").to_pylist()
    assert sorted(r["image_id"] for r in rows) == first3
    assert {r["prompt_id"] for r in rows} <= {"spatial-v1", "spatial-v2"}
    none = recaption(store, 1, str(ckpt), where="split = 'val'", progress=False)
    assert none["selected"] == 0 and none["added"] == 0


def test_local_processes_write_what_one_process_writes(tmp_path, ckpt):
    """recaption_in_processes(workers=2): two spawned processes, one shard each, write every image once with
    the texts one process writes (greedy), one run row per shard; a rerun does nothing; a bad engine is refused."""
    one, ids = make_store(tmp_path / "one", n=12, corrupt=1)
    two, _ = make_store(tmp_path / "two", n=12, corrupt=1)
    a = recaption(one, 1, str(ckpt), batch_size=4, max_new_tokens=6, progress=False)
    b = recaption_in_processes(two, 1, str(ckpt), workers=2, batch_size=4, max_new_tokens=6)
    assert (b["selected"], b["added"], b["failed"], b["workers"]) == (13, 12, 1, 2)
    assert (a["added"], a["failed"]) == (b["added"], b["failed"])
    q = "SELECT image_id, prompt_id, text, run_id FROM captions WHERE round = 1 ORDER BY image_id"
    ra, rb = one.sql(q).to_pylist(), two.sql(q).to_pylist()
    assert [(r["image_id"], r["prompt_id"], r["text"]) for r in ra] == [(r["image_id"], r["prompt_id"], r["text"])
                                                                         for r in rb]
    assert {r["run_id"] for r in rb} == set(b["run_ids"]) and len(b["run_ids"]) == 2
    runs = two.sql("SELECT config FROM runs WHERE kind = 'recaption'").to_pylist()
    assert sorted(json.loads(r["config"])["shard"] for r in runs) == [[0, 2], [1, 2]]
    again = recaption_in_processes(two, 1, str(ckpt), workers=2, batch_size=4, max_new_tokens=6)
    assert (again["skipped"], again["added"], again["failed"], again["retried"]) == (12, 0, 1, 1)
    with pytest.raises(InputError, match="local recaption processes split the transformers engine's work only"):
        recaption_in_processes(two, 1, str(ckpt), workers=2, engine="vllm")


def test_errors_are_one_line(tmp_path, ckpt):
    store, _ = make_store(tmp_path / "s", n=2)
    with pytest.raises(InputError, match="unknown prompt set 'nope'"):
        recaption(store, 1, str(ckpt), prompts="nope", progress=False)
    with pytest.raises(InputError, match="unsupported engine 'tgi'"):
        recaption(store, 1, str(ckpt), engine="tgi", progress=False)
    with pytest.raises(InputError, match="round 0 holds the original captions"):
        recaption(store, 0, str(ckpt), progress=False)
    with pytest.raises(InputError, match="--where \"nonsense_column = 1\" failed|--where 'nonsense_column = 1' failed"):
        recaption(store, 1, str(ckpt), where="nonsense_column = 1", progress=False)
    with pytest.raises(InputError, match="is not a model checkpoint"):
        recaption(store, 1, str(tmp_path), progress=False)
    with pytest.raises(InputError, match="need 0 <= i < n"):
        parse_shard("2/2")
    res = CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), "recaption", "--round", "1", "--model", str(ckpt),
                                   "--prompts", "nope"])
    assert res.exit_code == 1
    assert res.output.startswith("Error: unknown prompt set 'nope'") and res.output.count("\n") == 1


def test_cli_recaption_and_prompts(tmp_path, ckpt):
    make_store(tmp_path / "s", n=3)
    res = CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), "recaption", "--round", "1", "--model", str(ckpt),
                                   "--max-new-tokens", "3", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "selected 3  already captioned (skipped) 0  to do 3" in res.output and "added 3  failed 0" in res.output
    res = CliRunner().invoke(cli, ["prompts"])
    assert "  long-v2     Elaborate on the visual and narrative elements of the image in detail." in res.output
    assert "  vila2       long-v1, long-v2, long-v3" in res.output
    assert "  ocr         What words or phrases can you identify in the image?" in res.output
