"""Exactly-once under real failure: a `curator recaption` subprocess killed with SIGKILL after its first
committed batch, then resumed; and two shard processes writing the same round at the same time."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lance
import pytest

from curator.store import Store
from engines_toy import llava_ckpt, make_store

CURATOR = str(Path(sys.executable).with_name("curator"))
N = 24


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return llava_ckpt(tmp_path_factory.mktemp("ckpt") / "llava")


def _cmd(store, ckpt, *extra):
    return [CURATOR, "--store", str(store), "recaption", "--round", "1", "--model", str(ckpt), "--batch-size", "4",
            "--max-new-tokens", "16", "--quiet", *extra]


def _n_captions(store_dir) -> int:
    return lance.dataset(f"{store_dir}/captions.lance").count_rows()


def _check_exactly_once(store_dir, ids):
    store = Store(str(store_dir))
    rows = store.sql("SELECT image_id, prompt_id, caption_id FROM captions WHERE round = 1").to_pylist()
    assert len(rows) == N                                        # no gaps, no duplicates
    assert len({r["caption_id"] for r in rows}) == N
    assert sorted(r["image_id"] for r in rows) == sorted(ids)    # exactly one per image (one prompt draw each)


def test_sigkill_mid_run_then_resume(tmp_path, ckpt):
    store, ids = make_store(tmp_path / "s", n=N)
    proc = subprocess.Popen(_cmd(tmp_path / "s", ckpt), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Marker: the captions table gained rows, i.e. at least one batch is committed. Then kill -9.
    while _n_captions(tmp_path / "s") == 0 and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = _n_captions(tmp_path / "s")
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert 0 < at_kill < N and at_kill % 4 == 0                # killed mid-run; only whole batches landed
    run = Store(str(tmp_path / "s")).sql("SELECT status FROM runs WHERE kind = 'recaption'").to_pylist()
    assert run == [{"status": "running"}]                      # the killed run never finished
    res = subprocess.run(_cmd(tmp_path / "s", ckpt), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"already captioned (skipped) {at_kill}  to do {N - at_kill}" in res.stdout
    assert f"added {N - at_kill}  failed 0" in res.stdout
    _check_exactly_once(tmp_path / "s", ids)


def test_two_shard_processes_at_once(tmp_path, ckpt):
    store, ids = make_store(tmp_path / "s", n=N)
    procs = [subprocess.Popen(_cmd(tmp_path / "s", ckpt, "--shard", f"{i}/2", "--max-new-tokens", "4"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    outs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    _check_exactly_once(tmp_path / "s", ids)
    runs = Store(str(tmp_path / "s")).sql("SELECT status, counts FROM runs WHERE kind = 'recaption'").to_pylist()
    assert [r["status"] for r in runs] == ["ok", "ok"]
