"""Several sampled captions per image (`--n K`, sample_idx) with exactly-once, the best-of-n build policy, and one
bad row never failing a batch — on the transformers engine (tests/test_vllm.py runs the same on vLLM)."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from curator.build import build
from curator.errors import InputError
from curator.recaption import recaption
from engines_toy import bad_rows_setup, check_bad_rows, internvl_ckpt, make_store, qwen2vl_ckpt


def add_originals(store, ids):
    """Round-0 original captions (what a build's fallback needs)."""
    from datetime import datetime, timezone

    from curator import schema

    store.add_captions([{"caption_id": schema.caption_key(i, 0, "original", "source", ""), "image_id": i, "round": 0,
                         "kind": "original", "text": f"original {k}", "captioner": "source", "prompt_id": "",
                         "prompt": "", "sampling": "{}", "sample_idx": 0, "finish_reason": "source", "n_tokens": None,
                         "parent_caption_id": "", "transform": "", "run_id": "toy",
                         "created_at": datetime.now(timezone.utc)} for k, i in enumerate(ids)], run_id="toy")


def check_candidates(store, round: int, ids: list[str], k: int) -> dict:
    """K rows per image, sample_idx 0..K-1, distinct ids; returns {image_id: {sample_idx: row}}."""
    rows = store.sql(f"SELECT * FROM captions WHERE round = {round}").to_pylist()
    by = {}
    for r in rows:
        by.setdefault(r["image_id"], {})[r["sample_idx"]] = r
    assert set(by) == set(ids) and all(sorted(v) == list(range(k)) for v in by.values())
    assert len({r["caption_id"] for r in rows}) == len(ids) * k
    # each row records the n of the run that wrote it (a later --n 4 run adds sample_idx 3 only)
    assert all(json.loads(r["sampling"])["n"] > r["sample_idx"] and json.loads(r["sampling"])["do_sample"]
               for r in rows)
    return by


def check_best_of_n(store, round: int, by: dict, tmp_path) -> None:
    """best-of-n picks, per image, the accepted candidate with the highest latest grounding score."""
    score = {r["caption_id"]: r["score"] for r in store.sql(
        "SELECT caption_id, score FROM latest_verdicts WHERE filter = 'grounding'").to_pylist()}
    rejected = {r["caption_id"] for r in store.sql("SELECT caption_id FROM rejected_captions").to_pylist()}
    want = {}
    for image_id, samples in by.items():
        ok = [r for r in samples.values() if r["caption_id"] not in rejected]
        if ok:
            best = max(ok, key=lambda r: (score.get(r["caption_id"]) is not None, score.get(r["caption_id"]) or 0,
                                          -r["sample_idx"], r["caption_id"]))
            want[image_id] = best["text"]
    b = build(store, round, "best-of-n", "parquet", out=str(tmp_path / "best"))
    t = pq.read_table(str(tmp_path / "best" / "data-00000-of-00001.parquet")).to_pylist()
    got = {r["image_id"]: r["conversations"][1]["value"] for r in t}
    assert {i: got[i] for i in want} == want
    assert b.rows == len(by)


def test_n_candidates_exactly_once_and_best_of_n(tmp_path):
    from curator.filters import run_filters

    ckpt = str(internvl_ckpt(tmp_path / "ck", preset="micro"))
    store, ids = make_store(tmp_path / "s", n=6)
    add_originals(store, ids)
    with pytest.raises(InputError, match=r"--n 3 is not a number of samples — .*needs sampling"):
        recaption(store, 1, ckpt, n=3, progress=False)
    c = recaption(store, 1, ckpt, n=3, do_sample=True, batch_size=4, max_new_tokens=6, progress=False)
    assert (c["selected"], c["added"], c["failed"]) == (18, 18, 0)
    by = check_candidates(store, 1, ids, 3)
    again = recaption(store, 1, ckpt, n=3, do_sample=True, batch_size=4, max_new_tokens=6, progress=False)
    assert (again["skipped"], again["added"]) == (18, 0)
    more = recaption(store, 1, ckpt, n=4, do_sample=True, batch_size=4, max_new_tokens=6, progress=False)
    assert (more["skipped"], more["added"]) == (18, 6)      # only sample_idx 3 is new
    run_filters(store, 1, filters=["grounding"], model=ckpt)
    check_best_of_n(store, 1, check_candidates(store, 1, ids, 4), tmp_path)


def test_one_bad_row_never_fails_a_batch_transformers(tmp_path):
    ckpt = str(qwen2vl_ckpt(tmp_path / "qwen"))
    store, good, corrupt, thin, pf = bad_rows_setup(tmp_path)
    c = recaption(store, 1, ckpt, prompts="mix", prompts_file=pf, batch_size=16, max_new_tokens=4, progress=False)
    check_bad_rows(store, c, good, corrupt, thin, pf, "PromptTooLong: prompt of ")
