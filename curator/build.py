"""`curator build`: materialise round N's training set from the store with a named policy.

A policy is ONE DuckDB SELECT over the store's views (printable with --show-sql, replaceable with
--sql FILE) that returns, per sample: id, image_id, conversations (list of {from, value}) and an
optional boolean `fallback` (true when the sample fell back to the original caption). Parameters:
$round and $seed. The build adds the image bytes, orders by id, and writes one of three formats
(docs/interfaces.md): llava (data.json + images/), parquet (data-0000i-of-0000N.parquet), webdataset
(shard-00000i.tar). Outputs are deterministic — fixed order, fixed row groups, no timestamps, the
stored image bytes — so `build_from_manifest` reproduces the same bytes from the recorded versions.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass

import pyarrow as pa

from curator import schema
from curator.errors import InputError, StoreError
from curator.store import Store, _fetch_arrow, check_read_only

POLICIES = ("original", "recaption", "concat", "specialist-qa")
FORMATS = ("llava", "parquet", "webdataset")
DEFAULT_ROWS_PER_SHARD = 100_000
ROW_GROUP = 4096   # fixed row-group size: batch boundaries from DuckDB must not change the file bytes
CONCAT_FORMAT = "### Short description:\n{original}\n\n### Long description:\n{recaption}"

CONV_TYPE = pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))
PARQUET_SCHEMA = pa.schema([("id", pa.string()), ("image_id", pa.string()), ("image", pa.binary()),
                            ("conversations", CONV_TYPE)])

# ---------------------------------------------------------------------------------------------- SQL
# Shared pieces. "Accepted" (docs/interfaces.md): a caption is rejected when, for any filter, its latest
# verdict (max created_at; verdict_id breaks ties) says keep = false. No verdicts → accepted.
_ACCEPTED = """\
latest_verdict AS (          -- the latest verdict of each caption for each filter
  SELECT caption_id, arg_max(keep, {'t': created_at, 'v': verdict_id}) AS keep
  FROM verdicts GROUP BY caption_id, filter
),
rejected AS (SELECT DISTINCT caption_id FROM latest_verdict WHERE NOT keep),
originals AS (               -- one original caption per image (earliest; caption_id breaks ties)
  SELECT image_id, arg_min(text, {'t': created_at, 'c': caption_id}) AS text
  FROM captions WHERE kind = 'original' AND round = 0 GROUP BY image_id
),
train AS (SELECT image_id FROM images WHERE split = 'train')"""

_LATEST_SELF = """\
recap AS (                   -- latest accepted self-augment caption with round <= $round
  SELECT image_id, arg_max(text, {'r': round, 't': created_at, 'c': caption_id}) AS text
  FROM captions
  WHERE kind = 'self' AND round <= $round AND caption_id NOT IN (SELECT caption_id FROM rejected)
  GROUP BY image_id
)"""

_POLICY_SQL = {
    "original": f"""\
-- policy: original — the image's original (alt-text) caption as the pretraining target.
WITH
{_ACCEPTED}
SELECT t.image_id AS id, t.image_id,
       [{{'from': 'human', 'value': '<image>'}}, {{'from': 'gpt', 'value': o.text}}] AS conversations,
       false AS fallback
FROM train t JOIN originals o USING (image_id)
""",
    "recaption": f"""\
-- policy: recaption — the latest accepted self-augment caption; the original when there is none.
WITH
{_ACCEPTED},
{_LATEST_SELF}
SELECT t.image_id AS id, t.image_id,
       [{{'from': 'human', 'value': '<image>'}}, {{'from': 'gpt', 'value': coalesce(r.text, o.text)}}] AS conversations,
       r.text IS NULL AS fallback
FROM train t JOIN originals o USING (image_id) LEFT JOIN recap r USING (image_id)
""",
    "concat": f"""\
-- policy: concat — original + latest accepted recaption in one target (the method's best);
-- the original alone when there is no accepted recaption.
WITH
{_ACCEPTED},
{_LATEST_SELF}
SELECT t.image_id AS id, t.image_id,
       [{{'from': 'human', 'value': '<image>'}},
        {{'from': 'gpt', 'value': CASE WHEN r.text IS NULL THEN o.text
              ELSE '### Short description:' || chr(10) || o.text || chr(10) || chr(10)
                   || '### Long description:' || chr(10) || r.text END}}] AS conversations,
       r.text IS NULL AS fallback
FROM train t JOIN originals o USING (image_id) LEFT JOIN recap r USING (image_id)
""",
}


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _specialist_sql() -> str:
    from curator.prompts import load_prompts

    pools = load_prompts().pools
    values = ",\n    ".join(f"({_sql_str(k)}, {i}, {_sql_str(q)})"
                            for k in sorted(pools) for i, q in enumerate(pools[k]))
    return f"""\
-- policy: specialist-qa — <image> + original caption, then one QA turn per accepted specialist output
-- (latest per specialist kind with round <= $round): the question is drawn from the specialist's pool
-- and the specialists are shuffled per sample, both by md5 of ($seed, image_id, kind). To add a
-- specialist, add its question rows to `pools`.
WITH
{_ACCEPTED},
pools(kind, idx, question) AS (VALUES
    {values}),
pool_size AS (SELECT kind, count(*) AS n FROM pools GROUP BY kind),
spec AS (
  SELECT image_id, kind, arg_max(text, {{'r': round, 't': created_at, 'c': caption_id}}) AS text
  FROM captions
  WHERE kind IN (SELECT kind FROM pool_size) AND round <= $round
    AND caption_id NOT IN (SELECT caption_id FROM rejected)
  GROUP BY image_id, kind
),
qa AS (
  SELECT s.image_id,
         flatten(list([{{'from': 'human', 'value': p.question}}, {{'from': 'gpt', 'value': s.text}}]
                      ORDER BY md5(concat_ws('|', $seed, s.image_id, s.kind, 'order')))) AS turns
  FROM spec s JOIN pool_size z ON z.kind = s.kind
  JOIN pools p ON p.kind = s.kind
   AND p.idx = CAST(md5_number(concat_ws('|', $seed, s.image_id, s.kind, 'question')) % z.n AS INTEGER)
  GROUP BY s.image_id
)
SELECT t.image_id AS id, t.image_id,
       list_concat([{{'from': 'human', 'value': '<image>'}}, {{'from': 'gpt', 'value': o.text}}],
                   coalesce(q.turns, [])) AS conversations,
       q.turns IS NULL AS fallback
FROM train t JOIN originals o USING (image_id) LEFT JOIN qa q USING (image_id)
"""


def policy_sql(policy: str) -> str:
    if policy == "specialist-qa":
        return _specialist_sql()
    if policy in _POLICY_SQL:
        return _POLICY_SQL[policy]
    raise InputError(f"unknown policy {policy!r}", f"choose one of {', '.join(POLICIES)}",
                     "or pass your own SELECT with --sql FILE")


def sql_hash(sql: str) -> str:
    return schema.sha256_hex(sql)[:16]


# ---------------------------------------------------------------------------------------------- build
@dataclass
class BuildResult:
    build_id: str
    out_dir: str
    manifest: dict

    @property
    def rows(self) -> int:
        return self.manifest["rows"]


def build(store: Store, round: int, policy: str = "concat", format: str = "parquet", out: str | None = None,
          sql: str | None = None, seed: int = 0, at=None, rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
          overwrite: bool = False, expect_content_hash: str | None = None) -> BuildResult:
    """Materialise a training set. `sql` replaces the named policy (policy is then recorded as 'custom'
    unless given explicitly). `at` reads a past state (tag, version, or {table: version})."""
    if format not in FORMATS:
        raise InputError(f"unknown format {format!r}", f"choose one of {', '.join(FORMATS)}", "e.g. --format parquet")
    if rows_per_shard < 1:
        raise InputError(f"rows_per_shard must be >= 1, got {rows_per_shard}", "", "e.g. 100000")
    if sql is None:
        sql = policy_sql(policy)
    import duckdb

    check_read_only(sql)
    # Pin every table to a concrete version number: the manifest must name the exact state read.
    versions = {t: store.table(t, at=at).version for t in schema.TABLES}
    sh = sql_hash(sql)
    build_id = schema.sha256_hex(json.dumps(
        {"round": round, "policy": policy, "format": format, "seed": seed, "sql_hash": sh,
         "versions": versions, "rows_per_shard": rows_per_shard}, sort_keys=True))[:16]
    out = out or os.path.join("builds", f"round{round}-{policy}-{format}-{build_id[:8]}")
    _prepare_out(out, overwrite)
    run_id = store.start_run("build", round, {"policy": policy, "format": format, "seed": seed, "out": out,
                                             "sql_hash": sh})
    try:
        con = store.connect(at=versions, read_only=True)
        wrapped = _wrap(sql)
        try:
            reader = con.sql(wrapped, params=_params(sql, round, seed)).to_arrow_reader(ROW_GROUP)
        except duckdb.Error as e:
            raise InputError("build SQL failed", str(e).strip().splitlines()[0],
                             "print the policy with --show-sql and check the columns id, image_id, "
                             "conversations[, fallback]") from e
        writer = {"parquet": _ParquetWriter, "llava": _LlavaWriter, "webdataset": _WdsWriter}[format](out, rows_per_shard)
        rows = fallback = 0
        last_id = None
        for batch in _rechunk(reader, ROW_GROUP):
            ids = batch.column("id")
            if ids.null_count or batch.column("image").null_count:
                raise InputError("build SQL returned a row without id or image",
                                 "every sample needs an id and an image_id present in the images table",
                                 "check the policy's joins")
            first = ids[0].as_py()
            if last_id is not None and first == last_id or _has_adjacent_dupes(ids):
                raise InputError("build SQL returned duplicate ids", f"e.g. {first}",
                                 "return one row per sample (GROUP BY / DISTINCT)")
            last_id = ids[-1].as_py()
            if "fallback" in batch.column_names:
                import pyarrow.compute as pc

                fallback += int(pc.sum(pc.cast(batch.column("fallback"), pa.int64())).as_py() or 0)
            writer.write(batch)
            rows += batch.num_rows
        files = writer.close()
        con.close()
        n_train = store.sql("SELECT count(*) AS n FROM images WHERE split = 'train'", at=versions).column("n")[0].as_py()
        counts = {"rows": rows, "fallback_to_original": fallback,
                  "train_images_not_in_build": max(n_train - rows, 0)}
        file_hashes = {f: _file_sha256(os.path.join(out, f)) for f in files}
        content = content_hash(file_hashes)
        manifest = {"build_id": build_id, "round": round, "policy": policy, "format": format, "seed": seed,
                    "rows_per_shard": rows_per_shard, "sql": sql, "sql_hash": sh, "store_uri": store.uri,
                    "store_versions": versions, "rows": rows, "counts": counts, "files": file_hashes,
                    "content_hash": content}
        with open(os.path.join(out, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True, ensure_ascii=False)
            f.write("\n")
        store.add_build({"build_id": build_id, "round": round, "policy": policy, "sql": sql, "sql_hash": sh,
                         "store_versions": json.dumps(versions, sort_keys=True), "seed": seed, "format": format,
                         "output_path": os.path.abspath(out), "rows": rows, "content_hash": content,
                         "counts": json.dumps(counts, sort_keys=True), "run_id": run_id})
        if expect_content_hash and expect_content_hash != content:
            raise StoreError(f"rebuild of {build_id} produced different bytes",
                             f"content hash {content[:16]} != recorded {expect_content_hash[:16]}",
                             "the store versions may have been cleaned up, or the curator version changed")
    except BaseException as e:
        store.finish_run(run_id, status="failed", error=f"{type(e).__name__}: {e}", versions_read=versions)
        raise
    store.finish_run(run_id, status="ok", counts=counts, versions_read=versions)
    return BuildResult(build_id, out, manifest)


def build_from_manifest(store: Store, manifest_path: str, out: str | None = None,
                        overwrite: bool = False) -> BuildResult:
    """Re-run a recorded build at its recorded store versions; raises if the bytes differ."""
    try:
        with open(manifest_path, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read manifest {manifest_path}", str(e).splitlines()[0],
                         "pass the manifest.json a build wrote") from e
    missing = [k for k in ("round", "policy", "format", "seed", "sql", "store_versions", "content_hash") if k not in m]
    if missing:
        raise InputError(f"manifest {manifest_path} lacks {missing}", "it was not written by curator build",
                         "pass the manifest.json a build wrote")
    if out is None:
        out = os.path.join(os.path.dirname(os.path.abspath(manifest_path)) + "-rebuild")
    return build(store, m["round"], m["policy"], m["format"], out=out, sql=m["sql"], seed=m["seed"],
                 at=m["store_versions"], rows_per_shard=m.get("rows_per_shard", DEFAULT_ROWS_PER_SHARD),
                 overwrite=overwrite, expect_content_hash=m["content_hash"])


def list_builds(store: Store) -> pa.Table:
    return store.sql("SELECT build_id, round, policy, format, rows, content_hash, output_path, created_at "
                     "FROM builds ORDER BY created_at")


# ---------------------------------------------------------------------------------------------- helpers
def _params(sql: str, round: int, seed: int) -> dict:
    # DuckDB refuses unused named parameters, so pass only those the SQL mentions.
    p = {}
    if "$round" in sql:
        p["round"] = int(round)
    if "$seed" in sql:
        p["seed"] = int(seed)
    return p


def _wrap(sql: str) -> str:
    body = sql.strip().rstrip(";")
    return (f"SELECT p.*, i.bytes AS image, i.format AS image_format FROM ({body}\n) AS p "
            f"JOIN images i ON i.image_id = p.image_id ORDER BY p.id")


def _has_adjacent_dupes(ids: pa.ChunkedArray | pa.Array) -> bool:
    import pyarrow.compute as pc

    if len(ids) < 2:
        return False
    a = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    return bool(pc.any(pc.equal(a.slice(1), a.slice(0, len(a) - 1))).as_py())


def _rechunk(reader, n: int):
    """Re-slice a stream of record batches into batches of exactly n rows (last one shorter)."""
    buf: list[pa.RecordBatch] = []
    have = 0
    for b in reader:
        if b.num_rows == 0:
            continue
        buf.append(b)
        have += b.num_rows
        while have >= n:
            t = pa.Table.from_batches(buf)
            yield t.slice(0, n).combine_chunks().to_batches()[0]
            rest = t.slice(n)
            buf = rest.combine_chunks().to_batches() if rest.num_rows else []
            have = rest.num_rows
    if have:
        t = pa.Table.from_batches(buf).combine_chunks()
        yield t.to_batches()[0]


def _conv(batch) -> pa.Array:
    try:
        return batch.column("conversations").cast(CONV_TYPE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError) as e:
        raise InputError("build SQL returned no usable conversations column", str(e).splitlines()[0],
                         "return conversations as a list of {'from': ..., 'value': ...} structs") from e


def _ext(fmt: str) -> str:
    return "jpg" if (fmt or "").upper() == "JPEG" else "png"


def _prepare_out(out: str, overwrite: bool) -> None:
    if os.path.exists(out) and os.listdir(out):
        if not overwrite:
            raise InputError(f"output directory {out} is not empty", "a build never mixes its files with others",
                             "pass --overwrite, or choose another --out")
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_hash(file_hashes: dict[str, str]) -> str:
    """sha256 over the sorted (relative path, file sha256) pairs of the output files."""
    return schema.sha256_hex("".join(f"{p}\0{h}\n" for p, h in sorted(file_hashes.items())))


class _ParquetWriter:
    def __init__(self, out: str, rows_per_shard: int):
        self.out, self.per = out, rows_per_shard
        self.parts: list[str] = []
        self.w = None
        self.in_part = 0

    def write(self, batch):
        import pyarrow.parquet as pq

        t = pa.Table.from_arrays([batch.column("id").cast(pa.string()), batch.column("image_id").cast(pa.string()),
                                  batch.column("image").cast(pa.binary()), _conv(batch)], schema=PARQUET_SCHEMA)
        while t.num_rows:
            if self.w is None:
                name = f".part-{len(self.parts):05d}.parquet"
                self.parts.append(name)
                self.w = pq.ParquetWriter(os.path.join(self.out, name), PARQUET_SCHEMA, compression="zstd")
                self.in_part = 0
            take = min(self.per - self.in_part, t.num_rows)
            self.w.write_table(t.slice(0, take), row_group_size=ROW_GROUP)
            self.in_part += take
            t = t.slice(take)
            if self.in_part >= self.per:
                self.w.close()
                self.w = None

    def close(self) -> list[str]:
        import pyarrow.parquet as pq

        if self.w is not None:
            self.w.close()
        if not self.parts:   # an empty build still yields a loadable (empty) file
            name = ".part-00000.parquet"
            pq.write_table(PARQUET_SCHEMA.empty_table(), os.path.join(self.out, name))
            self.parts.append(name)
        n = len(self.parts)
        final = []
        for i, p in enumerate(self.parts):
            name = f"data-{i:05d}-of-{n:05d}.parquet"
            os.replace(os.path.join(self.out, p), os.path.join(self.out, name))
            final.append(name)
        return final


class _LlavaWriter:
    def __init__(self, out: str, rows_per_shard: int):
        self.out = out
        os.makedirs(os.path.join(out, "images"), exist_ok=True)
        self.samples: list[dict] = []
        self.images: set[str] = set()

    def write(self, batch):
        convs = _conv(batch).to_pylist()
        for sid, iid, img, fmt, conv in zip(batch.column("id").to_pylist(), batch.column("image_id").to_pylist(),
                                            batch.column("image").to_pylist(),
                                            batch.column("image_format").to_pylist(), convs):
            rel = f"images/{iid}.{_ext(fmt)}"
            if rel not in self.images:
                with open(os.path.join(self.out, rel), "wb") as f:
                    f.write(img)
                self.images.add(rel)
            self.samples.append({"id": sid, "image": rel, "conversations": conv})

    def close(self) -> list[str]:
        with open(os.path.join(self.out, "data.json"), "w", encoding="utf-8") as f:
            json.dump(self.samples, f, ensure_ascii=False, indent=1)
            f.write("\n")
        return ["data.json"] + sorted(self.images)


class _WdsWriter:
    def __init__(self, out: str, rows_per_shard: int):
        self.out, self.per = out, rows_per_shard
        self.shards: list[str] = []
        self.tf = None
        self.in_shard = 0

    def _add(self, name: str, data: bytes):
        ti = tarfile.TarInfo(name)
        ti.size, ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = len(data), 0, 0o644, 0, 0, "", ""
        self.tf.addfile(ti, io.BytesIO(data))

    def write(self, batch):
        convs = _conv(batch).to_pylist()
        for sid, img, fmt, conv in zip(batch.column("id").to_pylist(), batch.column("image").to_pylist(),
                                       batch.column("image_format").to_pylist(), convs):
            if self.tf is None:
                name = f"shard-{len(self.shards):06d}.tar"
                self.shards.append(name)
                self.tf = tarfile.open(os.path.join(self.out, name), "w", format=tarfile.USTAR_FORMAT)
                self.in_shard = 0
            key = sid.replace(".", "_").replace("/", "_")   # webdataset splits keys at the first dot
            self._add(f"{key}.{_ext(fmt)}", img)
            self._add(f"{key}.json", json.dumps({"id": sid, "conversations": conv}, ensure_ascii=False,
                                                sort_keys=True).encode("utf-8"))
            self.in_shard += 1
            if self.in_shard >= self.per:
                self.tf.close()
                self.tf = None

    def close(self) -> list[str]:
        if self.tf is not None:
            self.tf.close()
        return list(self.shards)
