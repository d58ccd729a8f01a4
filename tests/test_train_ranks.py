"""Data-parallel training on CPU ranks (gloo): 2 ranks (accumulating over 2 micro-batches) end with the weights 1 rank reaches with the same global
batch and seed, every sample is seen exactly once per epoch across ranks, and a crash on one rank stops the
group with one error naming it."""
from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model_toy import caption, toy_items
from vila2_model.data import Sample
from vila2_model.errors import ModelError
from vila2_model.train import train_vlm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# float32 on CPU: the two runs add the same terms in a different order (per-rank padding, the all-reduce), so
# they agree to rounding, not bit for bit, and Adam turns rounding-level differences in near-zero gradients into
# lr-sized steps, so the gap grows with the steps taken. The bound is on each tensor's relative difference,
# ||w2 - w1|| / ||w1||. Measured (2-core VM, 2 ranks x 2 micro-batches): align 1e-5, pretrain 6e-4, sft 4.4e-3;
# normalising each rank's loss by its own token count instead of the global one (a real bug this catches)
# gave 9e-3, 9e-2 and 0.17.
TOL = {"align": 1e-4, "pretrain": 2e-3, "sft": 2e-2}
RUN = dict(preset="micro", epochs_align=1, epochs_pretrain=1, epochs_sft=2, lr_align=3e-3, lr_pretrain=3e-3,
           lr_sft=3e-3, batch_size=16, seed=3, progress=False, record_samples=True)


def _samples(n: int, seed: int, turns: int) -> list[Sample]:
    """Toy samples whose answers vary in length (the caption, then 0-7 repeats of its color), so ranks hold
    different numbers of supervised tokens and a per-rank mean loss (instead of the global count) would show."""
    rng = random.Random(seed)
    out = []
    for k, im, (c, s, q) in toy_items(n, seed):
        conv = [{"from": "human", "value": "<image>"},
                {"from": "gpt", "value": " ".join([caption(c, s, q)] + [c] * rng.randrange(8))}]
        if turns > 1:
            conv += [{"from": "human", "value": "What color is the shape?"}, {"from": "gpt", "value": c}]
        out.append(Sample(im, conv, f"{seed}_{k}"))
    return out


@pytest.fixture(scope="module")
def data():
    # 64 pretraining samples = 4 global batches of 16; 40 SFT samples = 16 + 16 + 8 per epoch (a short batch).
    return {"pre": _samples(64, 0, 1), "sft": _samples(40, 1, 2)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("runs")
    # The 2-rank run also accumulates: 8 samples per rank per step in micro-batches of 4.
    return {1: train_vlm(d / "n1", data["pre"], data["sft"], nproc=1, **RUN),
            2: train_vlm(d / "n2", data["pre"], data["sft"], nproc=2, micro_batch_size=4, **RUN)}


def test_two_ranks_end_with_the_one_rank_weights(runs):
    for stage in ("align", "pretrain", "sft"):
        a = load_file(Path(runs[1][stage]) / "model.safetensors")
        b = load_file(Path(runs[2][stage]) / "model.safetensors")
        assert a.keys() == b.keys()
        gap = max(float((a[k] - b[k]).norm() / a[k].norm().clamp(min=1e-12)) for k in a)
        assert gap <= TOL[stage], (stage, gap)
        m1, m2 = (json.loads((Path(runs[n][stage]) / "vila2_train.json").read_text()) for n in (1, 2))
        assert m2["ranks"] == {"world_size": 2, "mode": "ddp", "global_batch": 16, "per_rank_batch": 8,
                               "gradient_accumulation_steps": 2}
        assert m1["ranks"]["world_size"] == 1 and m1["schedule"] == m2["schedule"]
        assert m1["steps"] == m2["steps"] and m1["samples"] == m2["samples"]
        # the logged loss is the global batch's mean on both: the same numbers to rounding
        assert abs(m1["first_loss"] - m2["first_loss"]) < 1e-4 and abs(m1["final_loss"] - m2["final_loss"]) < 1e-2


def test_every_sample_once_per_epoch_across_ranks(runs, data):
    pre_ids = [s.id for s in data["pre"]]
    sft_ids = [s.id for s in data["sft"]]
    for stage, ids, epochs in (("align", pre_ids, 1), ("pretrain", pre_ids, 1), ("sft", sft_ids, 2)):
        seen = json.loads((Path(runs[2][stage]) / "samples_seen.json").read_text())
        assert seen["world_size"] == 2 and len(seen["per_rank"]) == 2
        r0, r1 = seen["per_rank"]
        assert not set(r0) & set(r1) if epochs == 1 else True
        assert Counter(r0 + r1) == Counter({i: epochs for i in ids}), stage
        assert abs(len(r0) - len(r1)) <= 8   # strided shares: the short batch splits 4 + 4
    one = json.loads((Path(runs[1]["align"]) / "samples_seen.json").read_text())
    assert one["world_size"] == 1 and Counter(one["per_rank"][0]) == Counter({i: 1 for i in pre_ids})


def test_a_crash_on_one_rank_stops_all_with_one_error(tmp_path, monkeypatch):
    from vila2_model.distributed import launch

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    with pytest.raises(ModelError) as e:
        launch(2, "rank_toy:fail_on_rank_one", {}, tmp_path / "g")
    assert str(e.value).startswith("rank 1 of 2 failed: ValueError: rank 1 cannot read shard 7 — the other ranks "
                                   "were stopped — see "), str(e.value)
    assert "Traceback" in (tmp_path / "g" / "error-rank1.txt").read_text()


def test_curator_train_nproc_registers_once_and_resumes(tmp_path):
    """`curator train --nproc 2`: two training processes; the launching process alone touches the store: one
    run row stating the data-parallel set-up, one models row per stage; a rerun reuses every stage."""
    from conftest import run_cli
    from curator.store import Store
    from model_toy import write_llava

    pre, sft = write_llava(tmp_path / "pre", 24, seed=0), write_llava(tmp_path / "sft", 12, seed=1, kind="sft")
    args = ["train", "--data", pre, "--sft", sft / "data.json", "--out", tmp_path / "m", "--round", "0",
            "--preset", "micro", "--batch-size", "8", "--max-steps", "2", "--nproc", "2", "--quiet"]
    s = Store(str(tmp_path / "store"), create=True)
    first = run_cli(*args, store=tmp_path / "store")
    rows = s.sql("SELECT stage, model_id FROM models ORDER BY created_at").to_pylist()
    assert [r["stage"] for r in rows] == ["align", "pretrain", "sft"]
    run = s.sql("SELECT config, counts FROM runs WHERE kind = 'train'").to_pylist()
    assert len(run) == 1
    assert json.loads(run[0]["config"])["data_parallel"] == {
        "processes": 2, "global_batch": 8, "per_process_batch": 4,
        "lr_schedule": "cosine per stage over its steps of the global batch, 3% warmup"}
    assert json.loads(run[0]["counts"])["stages"]["sft"]["ranks"]["world_size"] == 2
    before = (tmp_path / "m" / "sft" / "model.safetensors").stat().st_mtime_ns
    again = run_cli(*args, store=tmp_path / "store")
    assert again.stdout == first.stdout   # the same model ids, every stage reused
    assert (tmp_path / "m" / "sft" / "model.safetensors").stat().st_mtime_ns == before


def test_specialist_on_two_ranks_ends_with_the_one_rank_weights(runs, data, tmp_path):
    """finetune_specialist(nproc=2): task + caption + SFT data fine-tuned on two processes ends where one
    process ends (same global batch, schedule and sample count), and a step_callback is refused there."""
    from vila2_model.train import finetune_specialist

    kw = dict(caption_data=data["pre"], mix_ratio=0.5, sft_data=data["sft"][:8], epochs=1, lr=3e-3,
              batch_size=16, seed=5, progress=False)
    one = finetune_specialist(tmp_path / "s1", runs[1]["pretrain"], data["sft"][8:], nproc=1, **kw)
    two = finetune_specialist(tmp_path / "s2", runs[1]["pretrain"], data["sft"][8:], nproc=2, **kw)
    assert two == str(tmp_path / "s2")
    a, b = (load_file(Path(p) / "model.safetensors") for p in (one, two))
    gap = max(float((a[k] - b[k]).norm() / a[k].norm().clamp(min=1e-12)) for k in a)
    assert gap <= TOL["sft"], gap
    m1, m2 = (json.loads((Path(p) / "vila2_train.json").read_text()) for p in (one, two))
    assert (m1["n_task"], m1["n_caption"], m1["n_sft"]) == (m2["n_task"], m2["n_caption"], m2["n_sft"]) == (32, 16, 8)
    assert m1["ranks"]["world_size"] == 1 and m2["ranks"]["world_size"] == 2
    assert m1["steps"] == m2["steps"] == 4 and m1["samples"] == m2["samples"] == 56
    with pytest.raises(ModelError, match="step_callback cannot cross process boundaries"):
        finetune_specialist(tmp_path / "s3", runs[1]["pretrain"], data["sft"][8:], nproc=2,
                            step_callback=lambda *_: None, **kw)
