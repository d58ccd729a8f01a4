"""The visual foundation (pipelines/foundation.py) at toy size: real images, a real micro model that trains."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image
from transformers import AutoModelForImageTextToText

from curator.errors import InputError
from curator.synthetic import WorldConfig, synthetic_item
from pipelines.foundation import FoundationArgs, build_foundation, coarse_samples, world_vqa_samples
from vila2_model.checkpoint import content_hash

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_coarse_samples_are_large_single_objects():
    cfg = WorldConfig(image_size=64)
    s = coarse_samples(40, cfg, (0.45, 0.6), "c0")
    assert len(s) == 40 and all(x.image.size == (64, 64) for x in s)
    assert {x.conversations[0]["value"] for x in s} == {"<image>\nWhat color is the object?"}   # fixed order
    shuffled = coarse_samples(40, cfg, (0.45, 0.6), "c0", shuffle_turns=True)
    assert {x.conversations[0]["value"] for x in shuffled} == {"<image>\nWhat color is the object?",
                                                               "<image>\nWhat shape is the object?"}
    for x in s:
        answers = {x.conversations[1]["value"], x.conversations[3]["value"]}
        assert len(answers & set(cfg.colors)) == 1 and len(answers & set(cfg.shapes)) == 1
        # the object covers a large part of the frame: at least 0.45^2 of the image's pixels differ from background
        px = list(x.image.tobytes()[k:k + 3] for k in range(0, 64 * 64 * 3, 3))
        bg = max(set(px), key=px.count)
        assert sum(p != bg for p in px) >= 0.3 * 0.45 ** 2 * 64 * 64   # stars/triangles cover ~1/3 of their box
    assert coarse_samples(3, cfg, (0.45, 0.6), "c0")[2].image.tobytes() == s[2].image.tobytes()   # seeded


def test_world_vqa_samples_are_a_separate_stream_with_every_question():
    cfg = WorldConfig()
    s = world_vqa_samples(30, cfg)
    pre = synthetic_item(0, 0, cfg, stream="pretrain")[0]
    assert s[0].image.tobytes() != Image.open(io.BytesIO(pre)).convert("RGB").tobytes()
    assert all(len(x.conversations) >= 2 * 5 for x in s)          # color, shape, size, count, position at least
    assert len({x.conversations[0]["value"].split("\n")[1].split()[0] for x in s}) >= 3   # shuffled by default
    fixed = world_vqa_samples(30, cfg, shuffle_turns=False)
    assert all(x.conversations[0]["value"].startswith("<image>\nWhat color is the") for x in fixed)


def test_build_foundation_trains_phases_in_order_and_resumes(tmp_path):
    args = FoundationArgs(schedule=((0.45, 0.6), (0.2, 0.3)), coarse_images=16, vqa_images=16, max_steps=2,
                          batch_size=8)
    cfg = WorldConfig(image_size=32, n_eval=0)
    ck = build_foundation(tmp_path / "f", cfg, "micro", ["a red circle at the top left."], args)
    assert ck == str(tmp_path / "f" / "world-vqa" / "sft")
    for phase, parent in (("coarse1", "coarse0"), ("world-vqa", "coarse1")):
        meta = json.loads((tmp_path / "f" / phase / "sft" / "vila2_train.json").read_text())
        assert meta["args"]["init_from"] == str(tmp_path / "f" / parent / "sft")
    AutoModelForImageTextToText.from_pretrained(ck)
    h = content_hash(ck)
    mtime = (tmp_path / "f" / "world-vqa" / "sft" / "vila2_train.json").stat().st_mtime_ns
    assert build_foundation(tmp_path / "f", cfg, "micro", ["a red circle at the top left."], args) == ck
    assert content_hash(ck) == h
    assert (tmp_path / "f" / "world-vqa" / "sft" / "vila2_train.json").stat().st_mtime_ns == mtime
    other = FoundationArgs(**{**args.__dict__, "shuffle_turns": True})
    with pytest.raises(InputError, match=r"^.*/f holds a foundation built with other arguments — its phases would be "
                                         r"reused although the data differ — pass a new out_dir or delete it$"):
        build_foundation(tmp_path / "f", cfg, "micro", ["a red circle at the top left."], other)


def test_build_foundation_without_data_fails_in_one_line(tmp_path):
    with pytest.raises(InputError, match=r"^the foundation has nothing to train on — every phase has 0 images or "
                                         r"0 epochs — set FoundationArgs"):
        build_foundation(tmp_path / "f", WorldConfig(image_size=32), "micro", [],
                         FoundationArgs(coarse_images=0, vqa_images=0))
