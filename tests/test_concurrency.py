"""Many writers, nothing lost: two `curator recaption` shards, a `curator filter` and a `curator build` run at
once against one store, as real processes. Every row lands once, every run finishes ok, and the build read
one pinned state (its manifest rebuilds byte for byte after the writers are done)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from engines_toy import internvl_ckpt, make_store

from curator.build import build_from_manifest
from curator.ingest import original_caption_row
from curator.recaption import recaption
from curator.store import Store

N = 24


def _cli(store: Store, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    env.pop("CURATOR_STORE", None)
    return subprocess.Popen([sys.executable, "-m", "curator.cli", "--store", store.uri, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_shards_a_filter_and_a_build_at_once(tmp_path, one_torch_thread):
    ckpt = internvl_ckpt(tmp_path / "ckpt")
    store, ids = make_store(tmp_path / "store", n=N)
    store.add_captions([original_caption_row(i, f"a picture number {k} of a shape", run_id="toy")
                        for k, i in enumerate(ids)])
    recaption(store, 1, str(ckpt), batch_size=8, max_new_tokens=6, progress=False)   # round 1: to filter, build
    # one image per commit: each shard makes N/2 commits, so the readers start while most are still to come
    common = ["--round", "2", "--model", str(ckpt), "--batch-size", "1", "--max-new-tokens", "8", "--quiet"]
    procs = {f"shard{i}": _cli(store, "recaption", *common, "--shard", f"{i}/2") for i in (0, 1)}
    # start the filter and the build once the shards are committing (so they read while captions move)
    deadline = time.time() + 300
    while store.sql("SELECT count(*) AS n FROM captions WHERE round = 2").column("n")[0].as_py() == 0:
        assert time.time() < deadline and all(p.poll() is None for p in procs.values()), \
            {k: p.communicate() for k, p in procs.items()}
        time.sleep(0.2)
    procs["filter"] = _cli(store, "filter", "--round", "1", "--filters", "repetition,length,charset")
    procs["build"] = _cli(store, "build", "--round", "1", "--policy", "concat", "--out", str(tmp_path / "b"))
    outs = {k: p.communicate(timeout=600) for k, p in procs.items()}
    for k, p in procs.items():
        assert p.returncode == 0 and "Traceback" not in outs[k][1], (k, outs[k])
    writing = store.sql("SELECT count(*) AS n FROM captions WHERE round = 2").column("n")[0].as_py()
    assert writing == N   # both shards complete

    # every row once
    for table, key in (("captions", "caption_id"), ("verdicts", "verdict_id"), ("runs", "run_id"),
                       ("builds", "build_id")):
        r = store.sql(f"SELECT count(*) AS n, count(DISTINCT {key}) AS d FROM {table}").to_pylist()[0]
        assert r["n"] == r["d"], (table, r)
    r2 = store.sql("SELECT count(DISTINCT image_id) AS i, count(*) AS n FROM captions WHERE round = 2").to_pylist()[0]
    assert r2 == {"i": N, "n": N}
    # one verdict per round-1 caption (raw and repetition-cut) per filter
    per = store.sql("""SELECT v.filter, count(*) AS n, count(DISTINCT v.caption_id) AS c FROM verdicts v
                       JOIN captions c USING (caption_id) WHERE c.round = 1 GROUP BY v.filter ORDER BY v.filter
                    """).to_pylist()
    n1 = store.sql("SELECT count(*) AS n FROM captions WHERE round = 1").column("n")[0].as_py()
    assert per == [{"filter": f, "n": n1, "c": n1} for f in ("charset", "length", "repetition")]
    # every run finished ok: 1 + 2 recaption runs, the filter, the build
    runs = store.sql("SELECT kind, status FROM runs ORDER BY kind, status").to_pylist()
    assert runs == [{"kind": "build", "status": "ok"}, {"kind": "filter", "status": "ok"}] + \
        [{"kind": "recaption", "status": "ok"}] * 3

    # the build read one pinned state: it rebuilds to the same bytes now that everything moved on
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    seen = store.sql("SELECT count(*) AS n FROM captions WHERE round = 2", at=m["store_versions"]).column("n")[0]
    print(f"the build pinned a state with {seen.as_py()} of {N} round-2 captions")
    assert m["rows"] == N and seen.as_py() < N   # it read while the shards were writing
    again = build_from_manifest(store, str(tmp_path / "b" / "manifest.json"), out=str(tmp_path / "b2"))
    assert again.manifest["content_hash"] == m["content_hash"]
