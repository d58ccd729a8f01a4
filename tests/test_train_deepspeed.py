"""DeepSpeed ZeRO-2 and ZeRO-3 on two CPU ranks (DeepSpeed's CPU accelerator, gloo): the recipe's DeepSpeed
mapping reaches the engine, ZeRO-3's partitioned weights are gathered into one HF checkpoint that loads with
AutoModelForImageTextToText, and both end where one plain process does with the same global batch and seed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from test_train_ranks import _samples
from vila2_model.train import train_vlm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RUN = dict(preset="micro", epochs_align=1, epochs_pretrain=1, epochs_sft=0, lr_align=3e-3, lr_pretrain=3e-3,
           batch_size=16, seed=4, progress=False)
# The DeepSpeed part of a recipe, as a CPU run needs it: torch's AdamW (no CPU-Adam extension build), fp32.
DS = {"zero_optimization": {"stage": None}, "optimizer": {"type": "AdamW", "params": {"torch_adam": True}},
      "bf16": {"enabled": False}}
# Relative per-tensor gap to the plain run (as in test_train_ranks). Measured: align 2e-7, pretrain 4e-5 to 5e-5.
TOL = {"align": 1e-4, "pretrain": 2e-3}


def _deepspeed_error() -> str | None:
    """None when DeepSpeed imports on this machine with its CPU accelerator, else the real error's last line."""
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    res = subprocess.run([sys.executable, "-c", "import deepspeed"], capture_output=True, text=True, env=env)
    return None if res.returncode == 0 else (res.stderr.strip().splitlines() or ["exit %d" % res.returncode])[-1]


@pytest.fixture(scope="module")
def data():
    return {"pre": _samples(48, 0, 1), "sft": _samples(8, 1, 2)}


@pytest.fixture(scope="module")
def plain(tmp_path_factory, data):
    return train_vlm(tmp_path_factory.mktemp("plain") / "run", data["pre"], data["sft"], **RUN)


@pytest.mark.parametrize("zero", [2, 3])
def test_zero_on_two_cpu_ranks_matches_one_plain_process(tmp_path, data, plain, zero):
    err = _deepspeed_error()
    if err:
        pytest.skip(f"DeepSpeed does not import here: {err}")
    cfg = json.loads(json.dumps(DS))
    cfg["zero_optimization"]["stage"] = zero
    out = train_vlm(tmp_path / "ds", data["pre"], data["sft"], nproc=2, deepspeed_config=cfg, micro_batch_size=4,
                    **RUN)
    for stage in ("align", "pretrain"):
        meta = json.loads((Path(out[stage]) / "vila2_train.json").read_text())
        assert meta["ranks"]["world_size"] == 2 and meta["ranks"]["mode"] == "deepspeed"
        assert meta["ranks"]["gradient_accumulation_steps"] == 2   # 8 per rank in micro-batches of 4
        assert meta["ranks"]["deepspeed"] == {"zero_stage": zero, "offload_optimizer": "none", "offload_param": "none",
                                              "bf16": False}
        a = load_file(Path(plain[stage]) / "model.safetensors")
        b = load_file(Path(out[stage]) / "model.safetensors")
        assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)   # ZeRO-3: gathered, not empty
        gap = max(float((a[k] - b[k]).norm() / a[k].norm().clamp(min=1e-12)) for k in a)
        assert gap <= TOL[stage], (zero, stage, gap)
    model = AutoModelForImageTextToText.from_pretrained(out["pretrain"])
    assert type(model).__name__ == "InternVLForConditionalGeneration"
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in load_file(
        Path(plain["pretrain"]) / "model.safetensors").values())


def test_real_size_recipes_carry_their_deepspeed_config():
    """The recipes load (every key is a train_vlm argument) and their DeepSpeed mapping completes into the
    config the engine gets: global batch 1024 = 8 ranks x micro-batch x accumulation."""
    from vila2_model.train import deepspeed_settings, load_recipe

    r = load_recipe("gpu-8b")
    assert (r["vision_from"], r["llm_from"]) == ("/models/siglip-so400m-patch14-384", "/models/Meta-Llama-3-8B-Instruct")
    assert r["deepspeed_config"]["zero_optimization"]["stage"] == 3 and r["train_vision_in_pretrain"] is False
    cfg = deepspeed_settings(r["deepspeed_config"], batch_size=r["batch_size"], world=8, micro=r["micro_batch_size"],
                             n_micro=-(-r["batch_size"] // 8 // r["micro_batch_size"]), grad_clip=1.0, bf16=True,
                             lr=r["lr_pretrain"], weight_decay=0.0)
    assert (cfg["train_batch_size"], cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"]) == \
        (1024, 8, 16)
    assert cfg["optimizer"]["params"] == {"eps": 1e-8, "lr": 5e-5, "betas": [0.9, 0.95], "weight_decay": 0.0}
    assert load_recipe("gpu-8b-offload")["deepspeed_config"]["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert load_recipe("cpu-2proc-zero2")["nproc"] == 2
