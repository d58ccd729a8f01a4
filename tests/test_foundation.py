"""The vision foundation (pipelines/foundation.py + vila2_model/vision_pretrain.py) at toy size: real world
images, a real micro model whose tower really learns, a real HF checkpoint that train_vlm starts from."""
from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from curator.errors import InputError
from curator.world.synthetic import WorldConfig, synthetic_item
from pipelines.foundation import (FoundationArgs, build_foundation, dense_set, foundation_report, head_sizes,
                                  token_labels, world_vqa_samples)
from vila2_model.checkpoint import content_hash
from vila2_model.errors import ModelError
from vila2_model.vision_pretrain import pretrain_vision

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_token_labels_put_each_object_in_the_token_of_its_box_centre():
    cfg = WorldConfig()
    meta = {"width": 64, "objects": [
        {"shape": "star", "color": "blue", "size": "large", "box": [2, 2, 20, 20]},       # centre (11, 11) -> token 0
        {"shape": "circle", "color": "red", "size": "small", "box": [50, 40, 58, 48]}],   # centre (54, 44) -> token 8
        "word_box": [24, 44, 40, 52]}                                                      # centre (32, 48) -> token 7
    lab = token_labels(meta, 3, cfg)
    assert lab["color"] == [1 + cfg.colors.index("blue"), 0, 0, 0, 0, 0, 0, 0, 1 + cfg.colors.index("red")]
    assert lab["shape"] == [1 + cfg.shapes.index("star"), 0, 0, 0, 0, 0, 0, 1 + len(cfg.shapes),
                            1 + cfg.shapes.index("circle")]
    assert lab["size"] == [2, 0, 0, 0, 0, 0, 0, 0, 1]
    assert lab["row"] == [1, 1, 1, 2, 2, 2, 3, 3, 3] and lab["col"] == [1, 2, 3] * 3
    assert head_sizes(cfg, 3) == {"color": 9, "shape": 7, "size": 3, "row": 4, "col": 4}
    assert "word" not in lab


def test_a_reading_foundation_labels_which_word_a_token_shows():
    cfg = WorldConfig()
    meta = {"width": 64, "objects": [{"shape": "star", "color": "blue", "size": "large", "box": [2, 2, 20, 20]}],
            "word_box": [24, 44, 40, 52], "word": cfg.words[3]}                           # centre (32, 48) -> token 7
    lab = token_labels(meta, 3, cfg, read_words=True)
    assert lab["word"] == [0, 0, 0, 0, 0, 0, 0, 4, 0]
    assert lab["shape"][7] == 1 + len(cfg.shapes)          # the shape head still says "a word" there
    assert token_labels({**meta, "word_box": None, "word": None}, 3, cfg, read_words=True)["word"] == [0] * 9
    assert head_sizes(cfg, 3, read_words=True)["word"] == 1 + len(cfg.words)
    _, lab = dense_set(40, cfg, 3, "foundation-dense", read_words=True)
    with_word = [i for i in range(40) if synthetic_item(i, 0, cfg, stream="foundation-dense")[2].get("word")]
    assert with_word and all(int((lab["word"][i] > 0).sum()) == 1 for i in with_word)
    assert int((lab["word"] > 0).sum()) == len(with_word)


def test_dense_set_is_a_separate_seeded_stream():
    cfg = WorldConfig()
    imgs, lab = dense_set(12, cfg, 3, "foundation-dense")
    assert len(imgs) == 12 and lab["color"].shape == (12, 9)
    pre = Image.open(io.BytesIO(synthetic_item(0, 0, cfg, stream="pretrain")[0])).convert("RGB")
    assert imgs[0].tobytes() != pre.tobytes()
    again, lab2 = dense_set(12, cfg, 3, "foundation-dense")
    assert again[5].tobytes() == imgs[5].tobytes() and torch.equal(lab["shape"], lab2["shape"])
    # a 3x3 token grid is the world's own grid: every object gets a token of its own
    for i in range(12):
        meta = synthetic_item(i, 0, cfg, stream="foundation-dense")[2]
        assert int((lab["color"][i] > 0).sum()) == len(meta["objects"])


def test_pretrain_vision_learns_a_dense_color_task_and_leaves_the_llm_alone(tmp_path):
    """Micro preset (4 image tokens): each token's color is the color of its image quadrant. The tower learns
    it (held-out accuracy far above chance), the LLM weights are untouched, the checkpoint reloads."""
    import random

    colors = [(220, 30, 30), (30, 180, 30), (30, 30, 220)]

    def sample(r):
        lab = [r.randrange(3) for _ in range(4)]
        im = Image.new("RGB", (32, 32))
        for k, c in enumerate(lab):
            im.paste(colors[c], (16 * (k % 2), 16 * (k // 2), 16 * (k % 2) + 16, 16 * (k // 2) + 16))
        return im, [c + 1 for c in lab]

    r = random.Random(0)
    tr = [sample(r) for _ in range(64)]
    ev = [sample(r) for _ in range(32)]
    ck = tmp_path / "v"
    s = pretrain_vision(ck, [x for x, _ in tr], {"color": torch.tensor([y for _, y in tr])}, {"color": 4},
                        preset="micro", tokenizer_texts=["a red square"], eval_images=[x for x, _ in ev],
                        eval_labels={"color": torch.tensor([y for _, y in ev])}, steps=60, batch_size=16,
                        lr=3e-3, eval_every=0, feature_rms=None, progress=False)
    assert s["eval_accuracy"]["color"] >= 0.9, s
    assert s["final_loss"] < s["first_loss"]
    from transformers import AutoProcessor
    from vila2_model.model import build_model
    fresh = build_model("micro", AutoProcessor.from_pretrained(ck), seed=0)
    m = AutoModelForImageTextToText.from_pretrained(ck)
    assert all(torch.equal(a, b) for a, b in zip(m.model.language_model.parameters(),
                                                 fresh.model.language_model.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(m.model.vision_tower.parameters(),
                                                     fresh.model.vision_tower.parameters()))
    assert s["content_hash"] == content_hash(ck)
    # same arguments: reused, not retrained
    mtime = (ck / "model.safetensors").stat().st_mtime_ns
    again = pretrain_vision(ck, [x for x, _ in tr], {"color": torch.tensor([y for _, y in tr])}, {"color": 4},
                            preset="micro", tokenizer_texts=["a red square"], eval_images=[x for x, _ in ev],
                            eval_labels={"color": torch.tensor([y for _, y in ev])}, steps=60, batch_size=16,
                            lr=3e-3, eval_every=0, feature_rms=None, progress=False)
    assert again["content_hash"] == s["content_hash"] and (ck / "model.safetensors").stat().st_mtime_ns == mtime
    # same count and arguments, other labels: the key covers the content, so it trains again
    other = torch.tensor([[1 + (c % 3) for c in y] for _, y in tr])
    redo = pretrain_vision(ck, [x for x, _ in tr], {"color": other}, {"color": 4}, preset="micro",
                           tokenizer_texts=["a red square"], eval_images=[x for x, _ in ev],
                           eval_labels={"color": torch.tensor([y for _, y in ev])}, steps=60, batch_size=16,
                           lr=3e-3, eval_every=0, feature_rms=None, progress=False)
    assert (ck / "model.safetensors").stat().st_mtime_ns != mtime and redo["content_hash"] != s["content_hash"]


def test_pretrain_vision_rejects_bad_labels_in_one_line(tmp_path):
    img = Image.new("RGB", (32, 32))
    with pytest.raises(ModelError, match=r"^training labels\['color'\] have shape \(1, 3\) — expected \(1, 4\): one "
                                         r"class id per image token — build labels on the model's token grid"):
        pretrain_vision(tmp_path / "v", [img], {"color": torch.zeros(1, 3, dtype=torch.long)}, {"color": 4},
                        preset="micro", steps=1, progress=False)
    with pytest.raises(ModelError, match=r"^training labels\['color'\] hold class ids outside \[0, 4\)"):
        pretrain_vision(tmp_path / "v", [img], {"color": torch.full((1, 4), 4)}, {"color": 4}, preset="micro",
                        steps=1, progress=False)
    with pytest.raises(ModelError, match=r"^vision pretraining has no training images"):
        pretrain_vision(tmp_path / "v", [], {"color": torch.zeros(0, 4)}, {"color": 4}, preset="micro", steps=1)


def test_build_foundation_on_the_world_and_refuses_other_arguments(tmp_path):
    cfg = WorldConfig(image_size=32, n_eval=0)
    args = FoundationArgs(n_images=32, n_eval=16, steps=3, batch_size=8)
    ck = build_foundation(tmp_path / "f", cfg, "micro", ["a red circle at the top left."], args)
    assert ck == str(tmp_path / "f" / "vision")
    AutoModelForImageTextToText.from_pretrained(ck)
    rep = foundation_report(ck)
    assert rep["steps"] == 3 and set(rep["eval_accuracy"]) == {"color", "shape", "size", "row", "col"}
    other = FoundationArgs(**{**args.__dict__, "steps": 4})
    with pytest.raises(InputError, match=r"^.*/f holds a foundation built with other arguments — reusing it would "
                                         r"mix two worlds or recipes — pass a new out_dir or delete it$"):
        build_foundation(tmp_path / "f", cfg, "micro", ["a red circle at the top left."], other)
    with pytest.raises(InputError, match=r"^the foundation has nothing to train on — n_images=0, steps=3"):
        build_foundation(tmp_path / "g", cfg, "micro", [], FoundationArgs(n_images=0, steps=3))


def test_world_vqa_samples_are_a_separate_stream_with_every_question():
    cfg = WorldConfig()
    s = world_vqa_samples(30, cfg)
    pre = synthetic_item(0, 0, cfg, stream="pretrain")[0]
    assert s[0].image.tobytes() != Image.open(io.BytesIO(pre)).convert("RGB").tobytes()
    assert all(len(x.conversations) >= 2 * 5 for x in s)
    assert len({x.conversations[0]["value"].split("\n")[1].split()[0] for x in s}) >= 3


def test_train_vlm_from_the_foundation_keeps_the_frozen_tower(tmp_path):
    """init_from + freeze_vision: align/pretrain/SFT train projector and LLM; the tower's tensors stay equal."""
    from vila2_model.data import Sample
    from vila2_model.train import train_vlm

    cfg = WorldConfig(image_size=32, n_eval=0)
    ck = build_foundation(tmp_path / "f", cfg, "micro", ["a red circle at the top left."],
                          FoundationArgs(n_images=16, n_eval=0, steps=2, batch_size=8))
    imgs, _ = dense_set(8, cfg, 2, "x")
    pre = [Sample(im, [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "a red circle"}], str(i))
           for i, im in enumerate(imgs)]
    out = train_vlm(tmp_path / "r", pre, pre, init_from=ck, freeze_vision=True, max_steps=2, batch_size=4,
                    progress=False)
    a = AutoModelForImageTextToText.from_pretrained(ck)
    b = AutoModelForImageTextToText.from_pretrained(out["sft"])
    assert all(torch.equal(x, y) for x, y in zip(a.model.vision_tower.parameters(), b.model.vision_tower.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.model.language_model.parameters(),
                                                     b.model.language_model.parameters()))
    assert json.loads((tmp_path / "r" / "sft" / "vila2_train.json").read_text())["args"]["freeze_vision"] is True


def test_cli_foundation_then_a_round_from_it(tmp_path):
    """`curator foundation` on a generated world, then `curator run self-augment --foundation` (round 0 only):
    the round's models are registered as started from the foundation and its tower is the foundation's."""
    from conftest import run_cli
    from curator.store import Store
    from curator.world.synthetic import generate_world

    w = tmp_path / "w"
    generate_world(w, n_pretrain=24, seed=1, cfg=WorldConfig(image_size=32, n_eval=4))
    r = run_cli("foundation", "--world", str(w), "--out", str(tmp_path / "f"), "--preset", "micro", "--steps", "2",
                "--images", "16")
    assert r.stdout.startswith(f"foundation {tmp_path / 'f' / 'vision'}: 2 steps in "), r.stdout
    assert "held-out accuracy per token color " in r.stdout
    bad = run_cli("run", "self-augment", "--world", str(w), "--foundation", str(tmp_path / "nope"), "--rounds", "0",
                  store=tmp_path / "s", check=False)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1] == (f"Error: foundation {tmp_path / 'nope'} not found — it holds no "
                                                   "checkpoint (config.json) — build one with `curator foundation "
                                                   "--world DIR --out DIR`")
    run_cli("ingest", "--manifest", str(w / "pretrain" / "manifest.jsonl"), store=tmp_path / "s")
    run_cli("run", "self-augment", "--world", str(w), "--foundation", str(tmp_path / "f"), "--rounds", "0",
            "--max-steps", "2", "--eval-limit", "2", "--work", str(tmp_path / "work"), store=tmp_path / "s")
    rows = Store(str(tmp_path / "s")).sql("SELECT stage, preset, path FROM models WHERE round = 0 ORDER BY stage")
    rows = rows.to_pylist()
    assert [x["stage"] for x in rows] == ["align", "pretrain", "sft"]
    assert {x["preset"] for x in rows} == {f"init:{tmp_path / 'f' / 'vision'}"}
    a = AutoModelForImageTextToText.from_pretrained(tmp_path / "f" / "vision")
    b = AutoModelForImageTextToText.from_pretrained(rows[-1]["path"])
    assert all(torch.equal(x, y) for x, y in zip(a.model.vision_tower.parameters(), b.model.vision_tower.parameters()))
