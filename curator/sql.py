"""`curator sql`: read-only DuckDB SQL over the store, rendered as a table, CSV, JSON or Parquet.

The guard lives in Store.sql (curator/store.py): DuckDB's own parser must see exactly one SELECT/EXPLAIN,
and the connection runs with external access off and its configuration locked, so neither writes nor
reads of arbitrary files get through even if a statement slipped past the parser check.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import os
from datetime import date, datetime

import pyarrow as pa

from curator.errors import InputError
from curator.store import Store, check_read_only  # noqa: F401 — re-exported for callers of this module

FORMATS = ("table", "csv", "json", "parquet")


def run_sql(store: Store, query: str, at=None) -> pa.Table:
    return store.sql(query, at=at)


def infer_format(out: str | None, fmt: str | None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r}", f"choose one of {', '.join(FORMATS)}", "e.g. --format csv")
        return fmt
    if out:
        ext = os.path.splitext(out)[1].lower().lstrip(".")
        if ext in ("csv", "json", "parquet"):
            return ext
        if ext == "jsonl":
            return "json"
    return "table"


def _cell(v):
    if isinstance(v, (bytes, bytearray)):
        return f"<{len(v)} bytes>"
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    return v


def _json_value(v):
    if isinstance(v, (bytes, bytearray)):
        return {"base64": base64.b64encode(v).decode("ascii")}
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    return v


def render(table: pa.Table, fmt: str, max_rows: int = 50, max_width: int = 60) -> str:
    """Text rendering for stdout (table / csv / json)."""
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(table.column_names)
        for row in table.to_pylist():
            w.writerow([_cell(row[c]) for c in table.column_names])
        return buf.getvalue()
    if fmt == "json":
        return json.dumps([{k: _json_value(v) for k, v in r.items()} for r in table.to_pylist()],
                          ensure_ascii=False, indent=1) + "\n"
    if fmt == "table":
        from rich.console import Console
        from rich.table import Table

        t = Table(show_lines=False)
        for c in table.column_names:
            t.add_column(c, overflow="fold", max_width=max_width)
        for row in table.slice(0, max_rows).to_pylist():
            t.add_row(*[_short(_cell(row[c]), max_width * 3) for c in table.column_names])
        con = Console(file=io.StringIO(), width=200, force_terminal=False)
        con.print(t)
        more = f"({table.num_rows} rows" + (f", first {max_rows} shown; use --out FILE for all)" if table.num_rows > max_rows else ")")
        return con.file.getvalue() + more + "\n"
    raise InputError(f"format {fmt!r} cannot be printed", "parquet is binary", "pass --out FILE.parquet")


def _short(v, n: int) -> str:
    s = "NULL" if v is None else str(v)
    return s if len(s) <= n else s[: n - 1] + "…"


def write(table: pa.Table, out: str, fmt: str) -> None:
    """Write a result to the file `out` (its directory must exist; nothing is created on the way)."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, out)
            return
        with open(out, "w", encoding="utf-8", newline="") as f:
            f.write(render(table, fmt, max_rows=table.num_rows))
    except OSError as e:
        raise InputError(f"cannot write --out {out}", e.strerror or str(e),
                         "pass a file path in an existing, writable directory") from None
