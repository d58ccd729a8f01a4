"""Engines: any local HF image-text-to-text checkpoint with a chat template (tiny random LLaVA and Qwen2-VL
built offline), and transformers vs Ray Data parity on a real local Ray cluster (greedy, CPU)."""
from __future__ import annotations

import json

import pytest

from curator.errors import MissingExtraError
from curator.recaption import model_input_size, recaption
from engines_toy import llava_ckpt, make_store, qwen2vl_ckpt
from vila2_model.checkpoint import content_hash


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    return {"llava": llava_ckpt(d / "llava"), "qwen2vl": qwen2vl_ckpt(d / "qwen2vl")}


@pytest.mark.parametrize("family", ["llava", "qwen2vl"])
def test_other_families_recaption(tmp_path, ckpts, family):
    store, ids = make_store(tmp_path / "s", n=5)
    c = recaption(store, 1, str(ckpts[family]), batch_size=2, max_new_tokens=4, progress=False)
    assert (c["added"], c["failed"]) == (5, 0)
    rows = store.sql("SELECT * FROM captions WHERE round = 1").to_pylist()
    assert len(rows) == 5 and {r["captioner"] for r in rows} == {content_hash(ckpts[family])}
    assert all(r["n_tokens"] == 4 and r["finish_reason"] == "length" for r in rows)   # random weights never stop
    assert all(r["text"] for r in rows)


def test_model_input_size_read_from_checkpoint(ckpts):
    assert model_input_size(str(ckpts["llava"])) == ((32, 32), None)      # resized before the engine
    assert model_input_size(str(ckpts["qwen2vl"])) == (None, 32 * 32)     # dynamic resolution: area cap


def test_ray_engine_matches_transformers(tmp_path, ckpts):
    pytest.importorskip("ray", reason="ray (the 'distributed' extra) is not installed")
    ckpt = str(ckpts["llava"])
    store, ids = make_store(tmp_path / "s", n=8)
    a = recaption(store, 1, ckpt, engine="transformers", batch_size=4, max_new_tokens=6, progress=False)
    b = recaption(store, 2, ckpt, engine="ray", batch_size=4, max_new_tokens=6, progress=False)
    assert a["added"] == b["added"] == 8
    rows = store.sql("SELECT round, image_id, prompt_id, prompt, text, finish_reason, n_tokens, sampling, captioner "
                     "FROM captions ORDER BY image_id, round").to_pylist()
    by_round = {1: {}, 2: {}}
    for r in rows:
        by_round[r.pop("round")][r["image_id"]] = r
    assert by_round[1] == by_round[2]          # same rows, field for field, except the round
    # Rerun on ray: nothing to do, and no Ray cluster is even needed for it.
    again = recaption(store, 2, ckpt, engine="ray", batch_size=4, max_new_tokens=6, progress=False)
    assert (again["skipped"], again["added"]) == (8, 0)
    run = store.sql(f"SELECT config FROM runs WHERE run_id = '{b['run_id']}'").column("config")[0].as_py()
    assert json.loads(run)["engine"] == "ray"


def test_vllm_engine_without_vllm_names_the_extra(tmp_path, ckpts):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here; tests/test_vllm.py covers it")
    store, _ = make_store(tmp_path / "s", n=1)
    with pytest.raises(MissingExtraError, match=r"the vllm engine needs the 'vllm' package — .* pip install 'vila2-curator\[gpu\]'"):
        recaption(store, 1, str(ckpts["llava"]), engine="vllm", progress=False)


def test_ray_actor_cpus_never_exceed_one_node():
    from curator.engines.ray_engine import actor_cpus

    assert actor_cpus([8, 8], 1) == 8          # the even share (16) would fit no node: capped at the largest
    assert actor_cpus([8, 8], 2) == 8 and actor_cpus([8, 8], 4) == 4
    assert actor_cpus([2], 2) == 1 and actor_cpus([2], 5) == 1   # at least one CPU each
    assert actor_cpus([4, 16], 1) == 16
