"""The vLLM engine on a real GPU: same rows as the transformers engine (shape and provenance), images resized
before the engine. Runs only where vllm and an NVIDIA GPU exist; skipped with that reason elsewhere."""
from __future__ import annotations

import pytest

vllm = pytest.importorskip("vllm", reason="vllm (the 'gpu' extra) is not installed")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no NVIDIA GPU visible (torch.cuda.is_available() is False)", allow_module_level=True)

from curator.recaption import recaption  # noqa: E402
from engines_toy import internvl_ckpt, make_store  # noqa: E402

pytestmark = pytest.mark.gpu


def test_vllm_recaption_rows_match_transformers_shape(tmp_path):
    ckpt = str(internvl_ckpt(tmp_path / "ck", preset="tiny"))
    store, ids = make_store(tmp_path / "s", n=16)
    a = recaption(store, 1, ckpt, engine="vllm", batch_size=8, max_new_tokens=12, progress=False, device="cuda")
    b = recaption(store, 2, ckpt, engine="transformers", batch_size=8, max_new_tokens=12, progress=False, device="cuda")
    assert a["added"] == b["added"] == 16 and a["failed"] == 0
    rows = store.sql("SELECT round, image_id, prompt_id, captioner, sampling, n_tokens FROM captions").to_pylist()
    r1 = {r["image_id"]: (r["prompt_id"], r["captioner"], r["sampling"]) for r in rows if r["round"] == 1}
    r2 = {r["image_id"]: (r["prompt_id"], r["captioner"], r["sampling"]) for r in rows if r["round"] == 2}
    assert r1 == r2
    assert all(0 < r["n_tokens"] <= 12 for r in rows if r["round"] == 1)
    again = recaption(store, 1, ckpt, engine="vllm", batch_size=8, max_new_tokens=12, progress=False, device="cuda")
    assert (again["skipped"], again["added"]) == (16, 0)
