"""Benchmark: `curator build --policy concat --format parquet` vs a hand-written DuckDB query that writes
the same rows, on stores of N images × 4 caption versions (round 0 original + self rounds 1–3, 50–150
words each) with a `length` verdict on every round-3 caption (20% rejected → those fall back to round 2).

Image bytes: every image row holds a distinct, valid 8×8 PNG (a pool of 64 base PNGs, each copy made
distinct by a tEXt chunk carrying its index) — so there are N images without N image files, and both
sides embed real bytes in the Parquet output (like with like). Prints a table with the ratio and the
10× scaling. Usage: python bench/bench_build.py [--sizes 100000,1000000] [--root /tmp/curator_bench]
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import struct
import sys
import time
import zlib
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from curator import schema  # noqa: E402
from curator.build import build  # noqa: E402
from curator.store import Store  # noqa: E402
from summary import record  # noqa: E402  (bench/ is sys.path[0])

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
CHUNK = 100_000


def _base_pngs(n=64) -> list[bytes]:
    from PIL import Image

    out = []
    for i in range(n):
        b = io.BytesIO()
        Image.new("RGB", (8, 8), (i * 4, 255 - i * 4, (i * 37) % 256)).save(b, "PNG")
        out.append(b.getvalue())
    return out


def _with_text_chunk(png: bytes, i: int) -> bytes:
    data = b"i\x00" + str(i).encode()
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    return png[:33] + chunk + png[33:]   # after the 8-byte signature + 25-byte IHDR chunk


class TextSource:
    """Random 50–150-word texts, cheaply: slices of one long random word stream at word boundaries."""

    def __init__(self, seed: int = 0, n_words: int = 3_000_000):
        rng = np.random.default_rng(seed)
        vocab = [f"{a}{b}" for a in ("red", "blue", "small", "large", "left", "right", "top", "under", "near",
                                     "round", "square", "star", "bright", "dark", "green", "yellow")
                 for b in ("", "ish", "er", "est", "ly", "ness", "s", "ed")] + \
                ["the", "a", "of", "and", "is", "in", "on", "with", "image", "object", "shape", "word"]
        words = np.array(vocab)[rng.integers(0, len(vocab), n_words)]
        self.blob = " ".join(words.tolist())
        lens = np.char.str_len(words) + 1
        self.starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        self.rng = rng

    def take(self, n: int) -> list[str]:
        nw = self.rng.integers(50, 151, n)
        st = self.rng.integers(0, len(self.starts) - 200, n)
        ends = self.starts[st + nw] - 1
        b, s0 = self.blob, self.starts[st]
        return [b[s:e] for s, e in zip(s0.tolist(), ends.tolist())]


def make_store(path: str, n_images: int, seed: int = 0) -> Store:
    """Create (once) a store with n_images × 4 caption versions + round-3 verdicts. Reuses an existing one."""
    done = os.path.join(path, ".bench-complete")
    if os.path.exists(done):
        return Store(path)
    shutil.rmtree(path, ignore_errors=True)
    store = Store(path, create=True)
    pngs = _base_pngs()
    texts = TextSource(seed)
    rng = np.random.default_rng(seed + 1)
    t = time.time()
    for s in range(0, n_images, CHUNK):
        idx = range(s, min(s + CHUNK, n_images))
        data = [_with_text_chunk(pngs[i % len(pngs)], i) for i in idx]
        ids = [schema.image_key(d) for d in data]
        n = len(ids)
        store.add_images(pa.table({
            "image_id": ids, "uri": [f"bench://{i}" for i in idx], "source": ["bench"] * n,
            "width": pa.array([8] * n, pa.int32()), "height": pa.array([8] * n, pa.int32()),
            "format": ["PNG"] * n, "split": ["train"] * n, "meta": ["{}"] * n,
            "bytes": pa.array(data, pa.binary()), "run_id": ["bench"] * n}))
        for rnd in range(4):
            kind, captioner = ("original", "source") if rnd == 0 else ("self", "bench-model")
            cids = [schema.caption_key(i, rnd, kind, captioner, "") for i in ids]
            store.add_captions(pa.table({
                "caption_id": cids, "image_id": ids, "round": pa.array([rnd] * n, pa.int32()), "kind": [kind] * n,
                "text": texts.take(n), "captioner": [captioner] * n, "prompt_id": [""] * n, "prompt": [""] * n,
                "sampling": ["{}"] * n, "sample_idx": pa.array([0] * n, pa.int32()),
                "finish_reason": ["eos"] * n, "parent_caption_id": [""] * n, "transform": [""] * n,
                "run_id": ["bench"] * n,
                "created_at": pa.array([T0 + timedelta(minutes=rnd)] * n, schema.TS)}))
            if rnd == 3:
                keep = rng.random(n) >= 0.2
                store.add_verdicts(pa.table({
                    "verdict_id": [schema.verdict_key(c, "length", "bench") for c in cids], "caption_id": cids,
                    "filter": ["length"] * n, "score": pa.array(rng.random(n)), "keep": pa.array(keep),
                    "reason": ["" if k else "too long" for k in keep], "config": ["{}"] * n,
                    "config_hash": ["bench"] * n, "run_id": ["bench"] * n,
                    "created_at": pa.array([T0 + timedelta(minutes=10)] * n, schema.TS)}))
        print(f"  store {os.path.basename(path)}: {s + n:>9,} images written ({time.time() - t:.0f} s)",
              file=sys.stderr)
    store.compact()
    open(done, "w").close()
    return store


# Two hand-written DuckDB queries producing the same file, written for the benchmark independently of the
# policy SQL: W picks winners with windows (QUALIFY row_number), the way one usually writes "latest per
# group"; I picks winning ids with arg_max and fetches only their text (the shape the policies use).
_TAIL = """
  SELECT i.image_id AS id, i.image_id, i.bytes AS image,
         [{{'from': 'human', 'value': '<image>'}},
          {{'from': 'gpt', 'value': CASE WHEN rc.text IS NULL THEN og.text
                ELSE '### Short description:' || chr(10) || og.text || chr(10) || chr(10)
                     || '### Long description:' || chr(10) || rc.text END}}] AS conversations
  FROM images i JOIN og USING (image_id) LEFT JOIN rc USING (image_id)
  WHERE i.split = 'train'
  ORDER BY id
) TO '{out}' (FORMAT parquet, COMPRESSION zstd)
"""
_BAD = """
  WITH bad AS (
    SELECT caption_id FROM verdicts
    QUALIFY row_number() OVER (PARTITION BY caption_id, filter ORDER BY created_at DESC, verdict_id DESC) = 1
        AND NOT keep
  ),"""
BASELINES = {
    "W": "COPY (" + _BAD + """
  rc AS (
    SELECT image_id, text FROM captions
    WHERE kind = 'self' AND round <= {round} AND caption_id NOT IN (SELECT caption_id FROM bad)
    QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY round DESC, created_at DESC, caption_id DESC) = 1
  ),
  og AS (
    SELECT image_id, text FROM captions WHERE kind = 'original' AND round = 0
    QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY created_at, caption_id) = 1
  )""" + _TAIL,
    "I": "COPY (" + _BAD + """
  rc_id AS (
    SELECT arg_max(caption_id, (round, created_at, caption_id)) AS caption_id FROM captions
    WHERE kind = 'self' AND round <= {round} AND caption_id NOT IN (SELECT caption_id FROM bad)
    GROUP BY image_id
  ),
  rc AS (SELECT image_id, text FROM captions WHERE caption_id IN (SELECT caption_id FROM rc_id)),
  og_id AS (
    SELECT arg_min(caption_id, (created_at, caption_id)) AS caption_id FROM captions
    WHERE kind = 'original' AND round = 0 GROUP BY image_id
  ),
  og AS (SELECT image_id, text FROM captions WHERE caption_id IN (SELECT caption_id FROM og_id))""" + _TAIL,
}


def run_baseline(store: Store, which: str, round: int, out: str) -> float:
    os.makedirs(out, exist_ok=True)
    con = store.connect()
    t = time.perf_counter()
    con.execute(BASELINES[which].format(round=round, out=os.path.join(out, "data.parquet")))
    dt = time.perf_counter() - t
    con.close()
    return dt


def same_rows(a_dir: str, b_file: str) -> tuple[int, int]:
    """(rows, mismatches) comparing curator's output files with the baseline file, via DuckDB."""
    import duckdb

    con = duckdb.connect()
    r = con.execute(f"""
        SELECT count(*) AS n,
               count(*) FILTER (WHERE a.id IS NULL OR b.id IS NULL OR a.image IS DISTINCT FROM b.image
                                OR a.conversations IS DISTINCT FROM b.conversations
                                OR a.image_id IS DISTINCT FROM b.image_id) AS bad
        FROM read_parquet('{a_dir}/data-*.parquet') a FULL OUTER JOIN read_parquet('{b_file}') b ON a.id = b.id
    """).fetchone()
    con.close()
    return int(r[0]), int(r[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated image counts")
    ap.add_argument("--root", default="/tmp/curator_bench")
    ap.add_argument("--round", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    rows = []
    for n in sizes:
        store = make_store(os.path.join(args.root, f"store-{n}"), n)
        out_c = os.path.join(args.root, f"build-{n}")
        out_b = os.path.join(args.root, f"baseline-{n}")
        shutil.rmtree(out_b, ignore_errors=True)
        t = time.perf_counter()
        res = build(store, args.round, "concat", "parquet", out=out_c, rows_per_shard=10 ** 9, overwrite=True)
        t_cur = time.perf_counter() - t
        times = {}
        for which in BASELINES:
            shutil.rmtree(out_b, ignore_errors=True)
            times[which] = run_baseline(store, which, args.round, out_b)
            total, bad = same_rows(out_c, os.path.join(out_b, "data.parquet"))
            assert res.rows == n and total == n and bad == 0, (which, res.rows, total, bad)
        size = sum(os.path.getsize(os.path.join(out_c, f)) for f in os.listdir(out_c) if f.endswith(".parquet"))
        rows.append((n, t_cur, times["W"], times["I"], res.manifest["counts"]["fallback_to_original"], size))
        shutil.rmtree(out_b, ignore_errors=True)
        shutil.rmtree(out_c, ignore_errors=True)
    print(f"\nbuild concat → Parquet, round {args.round}, 4 caption versions per image "
          f"(machine: {os.cpu_count()}-core CPU VM, no GPU); baselines: hand-written DuckDB COPY, "
          f"W = window/QUALIFY form, I = arg_max-ids form; all outputs compared row by row: identical")
    print(f"{'images':>10} {'curator s':>10} {'W s':>7} {'curator/W':>10} {'I s':>7} {'curator/I':>10} "
          f"{'fallback':>9} {'output MB':>10}")
    for n, tc, tw, ti, fb, size in rows:
        print(f"{n:>10,} {tc:>10.1f} {tw:>7.1f} {tc / tw:>9.2f}× {ti:>7.1f} {tc / ti:>9.2f}× {fb:>9,} "
              f"{size / 1e6:>10.0f}")
    n, tc, tw, *_ = rows[-1]
    record("bench_build", f"build concat → Parquet, {n:,} images", tc, "s", "hand-written DuckDB (window form)", tc / tw)
    if len(rows) >= 2:
        (n0, t0, w0, i0, *_), (n1, t1, w1, i1, *_) = rows[0], rows[-1]
        print(f"scaling {n1 // n0}× rows: curator {t1 / t0:.1f}× time, W {w1 / w0:.1f}×, I {i1 / i0:.1f}×")


if __name__ == "__main__":
    main()
