"""No command deletes what it did not write: build outputs only replace a previous build's directory,
and `make clean` never touches a store. Real stores, real `curator` subprocesses, real `make`."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli, tree_hash

from curator.build import build
from curator.errors import InputError
from curator.ingest import Item, ingest_items

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store_dir(tmp_path):
    from curator.store import Store

    s = Store(str(tmp_path / "store"), create=True)
    ingest_items(s, [Item(uri=f"i{i}", data=_png(i), caption=f"alt {i}") for i in range(3)], "test")
    return tmp_path / "store"


def _png(i: int) -> bytes:
    import io

    from PIL import Image

    b = io.BytesIO()
    Image.new("RGB", (4, 4), (i * 40, 0, 0)).save(b, "PNG")
    return b.getvalue()


def _refused(store_dir, out, *extra, cwd=None):
    before = tree_hash(store_dir)
    r = run_cli("build", "--round", "0", "--policy", "original", "--out", str(out), *extra, store=store_dir,
                check=False, cwd=cwd)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert tree_hash(store_dir) == before
    return r.stderr.strip()


def test_build_refuses_the_store_and_what_holds_it(store_dir, tmp_path):
    fix = "choose a new directory, e.g. --out builds/r1"
    why = "a build never writes into or over a store"
    for out, rel in ((store_dir, "is"), (store_dir / "builds", "is inside"), (tmp_path, "contains")):
        err = _refused(store_dir, out, "--overwrite")
        assert err == f"Error: build output {out} {rel} the store at {store_dir} — {why} — {fix}"
    assert sorted(os.listdir(store_dir)) == sorted(f"{t}.lance" for t in
                                                   ("images", "captions", "verdicts", "runs", "models", "builds",
                                                    "failures"))


def test_build_refuses_cwd_root_home_and_files(store_dir, tmp_path):
    why = "a build replaces its output directory as a whole"
    fix = "choose a new directory, e.g. --out builds/r1"
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    assert _refused(store_dir, ".", "--overwrite", cwd=work) == \
        f"Error: build output . is the current directory — {why} — {fix}"
    assert _refused(store_dir, "..", "--overwrite", cwd=work) == \
        f"Error: build output .. contains the current directory — {why} — {fix}"
    assert _refused(store_dir, "/", "--overwrite") == f"Error: build output / is the filesystem root — {why} — {fix}"
    assert _refused(store_dir, "~", "--overwrite") == f"Error: build output ~ is your home directory — {why} — {fix}"
    assert _refused(store_dir, work / "notes.txt", "--overwrite") == (
        f"Error: build output {work / 'notes.txt'} is an existing file — a build writes a directory of files — {fix}")
    assert (work / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_only_a_previous_build(store_dir, tmp_path):
    from curator.store import Store

    store = Store(str(store_dir))
    out = tmp_path / "b"
    first = build(store, 0, "original", "llava", out=str(out))
    assert sorted(os.listdir(out)) == ["data.json", "images", "manifest.json"]
    # a non-empty directory without --overwrite: refused, as before
    assert _refused(store_dir, out) == (f"Error: output directory {out} is not empty — a build never mixes its files "
                                        "with others — pass --overwrite to replace a previous build there, or choose "
                                        "another --out")
    # a previous build's directory is replaced (another format, so other files)
    again = build(store, 0, "original", "parquet", out=str(out), overwrite=True)
    assert sorted(os.listdir(out)) == ["data-00000-of-00001.parquet", "manifest.json"]
    assert again.build_id != first.build_id
    # a build directory with one foreign file is not replaced, and the file survives
    (out / "my-notes.txt").write_text("keep me")
    assert _refused(store_dir, out, "--overwrite") == (
        f"Error: output directory {out} is not a previous build's output — it holds my-notes.txt, which the build "
        "there did not write (--overwrite only replaces a build's own directory) — choose another --out, or move "
        "those files away yourself")
    assert (out / "my-notes.txt").read_text() == "keep me"
    # a foreign non-empty directory (no manifest) is refused
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "a.jpg").write_bytes(b"x")
    with pytest.raises(InputError) as e:
        build(store, 0, "original", out=str(foreign), overwrite=True)
    assert str(e.value) == (f"output directory {foreign} is not a previous build's output — it holds no manifest.json "
                            "from a previous build (--overwrite only replaces a build's own directory) — choose "
                            "another --out, or move those files away yourself")
    assert os.listdir(foreign) == ["a.jpg"]
    # an empty directory is fine without --overwrite; no staging directory is left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    build(store, 0, "original", out=str(empty))
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".partial")]


def test_a_failed_build_leaves_the_previous_output_and_nothing_else(store_dir, tmp_path):
    from curator.store import Store

    store = Store(str(store_dir))
    out = tmp_path / "b"
    build(store, 0, "original", "parquet", out=str(out))
    before = tree_hash(out)
    with pytest.raises(InputError, match="^build SQL lacks column"):
        build(store, 0, sql="SELECT image_id FROM images", out=str(out), overwrite=True)
    assert tree_hash(out) == before
    assert sorted(os.listdir(tmp_path)) == ["b", "store"]
    # a staging directory left by a crashed build (our marker inside) is cleared by the next build
    st = tmp_path / ".b.partial"
    st.mkdir()
    (st / ".curator-build-in-progress").write_text("x")
    (st / "data-00000-of-00001.parquet").write_bytes(b"half")
    build(store, 0, "original", "parquet", out=str(out), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["b", "store"]
    before = tree_hash(out)
    # ... but a directory of that name that is not ours stops the build
    st.mkdir()
    (st / "mine.txt").write_text("x")
    with pytest.raises(InputError, match=r"\.b\.partial is in the way"):
        build(store, 0, "original", "parquet", out=str(out), overwrite=True)
    assert os.listdir(st) == ["mine.txt"] and tree_hash(out) == before


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_clean_never_touches_a_store(tmp_path, store_dir):
    proj = tmp_path / "proj"
    (proj / "scripts").mkdir(parents=True)
    for f in ("Makefile", "pyproject.toml", "scripts/setup_venv.sh"):
        shutil.copy(ROOT / f, proj / f)
    shutil.copytree(store_dir, proj / "curator_store")
    shutil.copytree(store_dir, proj / "demo_out" / "store")
    (proj / ".venv" / "bin").mkdir(parents=True)
    (proj / "pkg" / "__pycache__").mkdir(parents=True)
    (proj / "pkg" / "__pycache__" / "m.pyc").write_bytes(b"x")
    stores = {p: tree_hash(proj / p) for p in ("curator_store", "demo_out")}
    # as a user types it: not as a sub-make of `make test` (MAKELEVEL would add "Entering directory" lines)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
    r = subprocess.run(["make", "clean"], cwd=proj, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (proj / ".venv").exists() and not (proj / "pkg" / "__pycache__").exists()
    assert {p: tree_hash(proj / p) for p in stores} == stores
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("removed .venv ") and last.endswith(
        "; left alone: stores and demo output (demo_out, curator_store)"), last
