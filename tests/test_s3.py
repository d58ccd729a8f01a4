"""The store on an object store: a real S3-compatible server (moto) on 127.0.0.1, started and stopped here."""
from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import run_cli
from PIL import Image

from curator.build import build
from curator.ingest import Item, ingest_items
from curator.store import Store

MOTO = str(Path(sys.executable).with_name("moto_server"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(tmp_path):
    port = _free_port()
    log = open(tmp_path / "moto.log", "wb")
    proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):   # wait until it answers (polling, not a time limit on the test)
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"moto_server exited: {(tmp_path / 'moto.log').read_text()}")
                time.sleep(0.1)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x",
                     region_name="us-east-1").create_bucket(Bucket="team")
        yield {"aws_access_key_id": "x", "aws_secret_access_key": "x", "aws_endpoint": endpoint,
               "aws_region": "us-east-1", "allow_http": "true"}
    finally:
        proc.terminate()
        proc.wait()
        log.close()


def _png(i):
    b = io.BytesIO()
    Image.new("RGB", (8, 8), (i, 9, 9)).save(b, "PNG")
    return b.getvalue()


def test_store_on_s3_ingest_sql_tag_build(s3, tmp_path):
    uri = "s3://team/stores/main"
    store = Store(uri, create=True, storage_options=s3)
    rep = ingest_items(store, [Item(uri=f"i{i}", data=_png(i), caption=f"alt {i}") for i in range(5)], "test")
    assert rep.counts["images_added"] == 5
    store.tag("round-0")
    ingest_items(store, [Item(uri="late", data=_png(99), caption="late")], "test")
    # A second client (fresh object, as another machine would have) sees the same store.
    other = Store(uri, storage_options=s3)
    assert other.sql("SELECT count(*) AS n FROM captions").column("n")[0].as_py() == 6
    assert other.sql("SELECT count(*) AS n FROM captions", at="round-0").column("n")[0].as_py() == 5
    res = build(other, 0, "original", "parquet", out=str(tmp_path / "b"))
    rows = pq.read_table(tmp_path / "b" / "data-00000-of-00001.parquet").to_pylist()
    assert sorted(r["conversations"][1]["value"] for r in rows) == ["alt 0", "alt 1", "alt 2", "alt 3", "alt 4", "late"]
    assert res.manifest["store_uri"] == uri
    # The CLI reaches the same store through CURATOR_STORAGE_OPTIONS.
    out = run_cli("sql", "SELECT count(*) AS n FROM images", "--format", "json", store=uri,
                  env={"CURATOR_STORAGE_OPTIONS": json.dumps(s3)}).stdout
    assert json.loads(out) == [{"n": 6}]
    res = run_cli("sql", "SELECT 1", store="s3://team/nothing-here", check=False,
                  env={"CURATOR_STORAGE_OPTIONS": json.dumps(s3)})
    assert res.returncode == 1 and res.stderr.startswith("Error: no store at s3://team/nothing-here")
