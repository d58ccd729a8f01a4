"""`curator sql`: read-only guard (store byte-for-byte unchanged), output formats, time travel."""
from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq
import pytest
from conftest import run_cli, tree_hash

from curator import schema
from curator.errors import InputError, ReadOnlyError
from curator.ingest import original_caption_row


@pytest.fixture
def filled(tmp_store):
    rows = [original_caption_row(schema.sha256_hex(str(i)), f"alt {i}", run_id="r") for i in range(3)]
    tmp_store.add_captions(rows)
    tmp_store.add_images([{"image_id": schema.sha256_hex(str(i)), "uri": f"u{i}", "split": "train",
                           "bytes": b"x" * i} for i in range(3)])
    return tmp_store


REFUSED = [
    ("INSERT INTO captions SELECT * FROM captions", "refused: INSERT statement"),
    ("UPDATE captions SET text = 'x'", "refused: UPDATE statement"),
    ("DELETE FROM captions", "refused: DELETE statement"),
    ("DROP VIEW captions", "refused: DROP statement"),
    ("CREATE TABLE t AS SELECT 1", "refused: CREATE statement"),
    ("ALTER VIEW captions RENAME TO c2", "refused: ALTER statement"),
    ("COPY captions TO 'out.csv'", "refused: COPY statement"),
    ("ATTACH 'other.db'", "refused: ATTACH statement"),
    ("INSTALL httpfs", "refused: LOAD statement"),
    ("LOAD httpfs", "refused: LOAD statement"),
    ("SET enable_external_access = true", "refused: SET statement"),
    ("PRAGMA enable_profiling", "refused: PRAGMA statement"),
    ("EXPORT DATABASE 'dump'", "refused: EXPORT statement"),
    ("SELECT 1; DROP VIEW captions", "refused: 2 statements"),
    ("EXPLAIN ANALYZE COPY (SELECT * FROM captions) TO 'x.csv'", "refused: COPY statement"),
    ("CALL pragma_version()", "refused: CALL statement"),
    ("CHECKPOINT", "refused: CALL statement"),
    ("SELECT * FROM read_csv('/etc/passwd')", "refused: the query reaches outside the store"),
    ("SELECT * FROM read_parquet('/etc/*.parquet')", "refused: the query reaches outside the store"),
    ("SELECT * FROM glob('/etc/*')", "refused: the query reaches outside the store"),
    ("SELECT * FROM read_text('/etc/hostname')", "refused: the query reaches outside the store"),
]


@pytest.mark.parametrize("query,message", REFUSED, ids=[q[:24] for q, _ in REFUSED])
def test_refused_statements_leave_the_store_unchanged(filled, query, message):
    before = tree_hash(filled.uri)
    with pytest.raises(ReadOnlyError) as e:
        filled.sql(query)
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)
    assert tree_hash(filled.uri) == before
    assert filled.sql("SELECT count(*) AS n FROM captions").column("n")[0].as_py() == 3


def test_cli_refusal_is_one_line_and_nonzero(filled, tmp_path):
    before = tree_hash(filled.uri)
    res = run_cli("sql", "COPY (SELECT * FROM captions) TO 'leak.csv'", store=filled.uri, check=False, cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr == ("Error: refused: COPY statement — the store is read-only through SQL — write through "
                          "the Python API / curator commands; use SELECT here\n")
    assert not (tmp_path / "leak.csv").exists()
    assert tree_hash(filled.uri) == before


def test_explain_of_a_select_is_allowed(filled):
    plan = filled.sql("EXPLAIN SELECT count(*) FROM captions WHERE round = 0")
    assert plan.num_rows >= 1 and "ARROW_SCAN" in str(plan.to_pylist()).upper().replace("PYTHON_", "")


def test_bad_sql_is_an_input_error(filled):
    with pytest.raises(InputError, match="^query failed — Catalog Error: Table with name nope does not exist"):
        filled.sql("SELECT * FROM nope")
    with pytest.raises(InputError, match="^query does not parse"):
        filled.sql("SELEC 1")


def test_output_formats(filled, tmp_path):
    q = "SELECT text, length(text) AS n FROM captions ORDER BY text"
    out = run_cli("sql", q, "--format", "csv", store=filled.uri).stdout
    assert list(csv.reader(io.StringIO(out))) == [["text", "n"], ["alt 0", "5"], ["alt 1", "5"], ["alt 2", "5"]]
    out = run_cli("sql", q, "--format", "json", store=filled.uri).stdout
    assert json.loads(out) == [{"text": f"alt {i}", "n": 5} for i in range(3)]
    run_cli("sql", q, "--out", str(tmp_path / "r.parquet"), store=filled.uri)
    assert pq.read_table(tmp_path / "r.parquet").to_pylist() == [{"text": f"alt {i}", "n": 5} for i in range(3)]
    table = run_cli("sql", q, store=filled.uri).stdout
    assert "alt 2" in table and table.rstrip().endswith("(3 rows)")
    # Binary columns print as their size, never raw bytes.
    out = run_cli("sql", "SELECT bytes FROM images ORDER BY uri", "--format", "csv", store=filled.uri).stdout
    assert out.splitlines() == ["bytes", "<0 bytes>", "<1 bytes>", "<2 bytes>"]


def test_cli_time_travel_by_tag_and_version(filled):
    run_cli("tag", "round-0", store=filled.uri)
    filled.add_captions([original_caption_row(schema.sha256_hex("new"), "late", run_id="r")])
    q = "SELECT count(*) AS n FROM captions"
    assert run_cli("sql", q, "--format", "csv", store=filled.uri).stdout.splitlines()[1] == "4"
    assert run_cli("sql", q, "--at", "round-0", "--format", "csv", store=filled.uri).stdout.splitlines()[1] == "3"
    assert run_cli("sql", q, "--version", "1", "--format", "csv", store=filled.uri).stdout.splitlines()[1] == "0"
    res = run_cli("sql", q, "--at", "round-7", store=filled.uri, check=False)
    assert res.returncode == 1 and res.stderr.startswith("Error: table ")
    assert "has no version or tag 'round-7'" in res.stderr
    rounds = run_cli("rounds", store=filled.uri).stdout
    assert rounds.splitlines()[0].startswith("round-0") and "captions@2" in rounds.splitlines()[0]
