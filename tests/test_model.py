"""Presets, tokenizer/processor, model build, save/load round trips, content hash, data formats, loss masking."""
from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from model_toy import caption, toy_items, write_llava
from vila2_model.checkpoint import content_hash, save_checkpoint
from vila2_model.data import IGNORE, encode_conversation, load_conversations, to_messages
from vila2_model.errors import ModelError
from vila2_model.model import build_config, build_model, count_params
from vila2_model.presets import list_presets, load_preset
from vila2_model.tokenizer import build_processor, image_seq_length
from vila2_model.train import load_recipe, train_vlm


pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [caption(*t) for _, _, t in toy_items(300, 0)] + ["What color is the shape? [120,080,450,400]"] * 10


@pytest.fixture(scope="module")
def proc():
    return build_processor(TEXTS, None, "micro")


def test_presets_are_data():
    names = list_presets()
    assert {"micro", "tiny", "small", "siglip400m-llama3-8b", "internvit300m-qwen2-7b"} <= set(names)
    assert load_preset("tiny")["image_size"] == 64
    with pytest.raises(ModelError, match=r"unknown model preset 'huge' — no huge.json among the presets — choose one of"):
        load_preset("huge")


def test_preset_shapes(proc):
    assert count_params(build_model("tiny", proc))["total"] == pytest.approx(4.1e6, rel=0.05)
    assert 20e6 <= count_params(build_model("small", proc))["total"] <= 40e6
    # Real-size shapes are built as configs only (billions of parameters): check their token counts.
    big = build_config("siglip400m-llama3-8b", proc)
    assert (big.image_seq_length, big.text_config.vocab_size, big.text_config.num_key_value_heads) == (196, 128256, 8)
    assert image_seq_length(load_preset("internvit300m-qwen2-7b")) == 256


def test_vision_position_init(proc):
    # Default keeps transformers' zeros; "sincos" gives every patch a distinct, fixed code; unknown values fail.
    pos = build_model("micro", proc).model.vision_tower.embeddings.position_embeddings
    assert float(pos.abs().sum()) == 0.0
    sin = build_model({**load_preset("micro"), "vision_pos_init": "sincos"}, proc)
    pe = sin.model.vision_tower.embeddings.position_embeddings[0, 1:]
    n = pe.shape[0]
    assert len({tuple(r) for r in pe.round(decimals=5).tolist()}) == n
    assert float(pe.pow(2).mean()) == pytest.approx(1.0, abs=0.15)
    assert float(sin.model.vision_tower.embeddings.position_embeddings[0, 0].abs().sum()) == 0.0  # CLS untouched
    with pytest.raises(ModelError, match=r"^vision_pos_init='learned' is not known — the preset names an unknown "
                                         r"initialisation — use 'zeros' or 'sincos'$"):
        build_model({**load_preset("micro"), "vision_pos_init": "learned"}, proc)


def test_boxes_and_text_round_trip_exactly(proc):
    tok = proc.tokenizer
    for s in ["[120,080,450,400]", "a red square [000,680,999,999] on  a table\n", "Ünïcode ✓ 007"]:
        assert tok.decode(tok(s, add_special_tokens=False)["input_ids"]) == s
    digits = tok.convert_ids_to_tokens(tok("[120,080]", add_special_tokens=False)["input_ids"])
    assert digits == ["[", "1", "2", "0", ",", "0", "8", "0", "]"]


def test_autoprocessor_round_trip(tmp_path, proc):
    proc.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "InternVLProcessor"
    im = next(toy_items(1, 4))[1]
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image in details."}]}]
    text = loaded.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    a, b = proc(images=[im], text=[text], return_tensors="pt"), loaded(images=[im], text=[text], return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    assert b["pixel_values"].shape == (1, 3, 32, 32)  # one tile: crop_to_patches stays off after reload
    assert (b["input_ids"] == loaded.image_token_id).sum().item() == 4  # 32px / patch 8 / shuffle 0.5


def test_save_from_pretrained_identical_logits(tmp_path, proc):
    model = build_model("micro", proc, seed=1).eval()
    h = save_checkpoint(model, proc, tmp_path / "a")
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "a").eval()
    ims = [im for _, im, _ in toy_items(2, 5)]
    text = AutoProcessor.from_pretrained(tmp_path / "a").apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}], tokenize=False)
    inp = proc(images=ims, text=[text, text], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**inp).logits, loaded(**inp).logits)
    # The hash is the model's identity: stable across a re-save, blind to logs, changed by any weight.
    save_checkpoint(loaded, AutoProcessor.from_pretrained(tmp_path / "a"), tmp_path / "b")
    assert content_hash(tmp_path / "b") == h == json.loads((tmp_path / "a" / "vila2_train.json").read_text())["content_hash"]
    (tmp_path / "b" / "loss_log.jsonl").write_text("{}\n")
    assert content_hash(tmp_path / "b") == h
    with torch.no_grad():
        loaded.model.multi_modal_projector.linear_1.bias[0] += 1e-3
    assert save_checkpoint(loaded, proc, tmp_path / "c") != h
    with pytest.raises(ModelError, match="is not a model checkpoint"):
        content_hash(tmp_path)


def test_loss_mask_supervises_answers_only(proc):
    conv = [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "a red square at the top left ."},
            {"from": "human", "value": "What color is the shape?"}, {"from": "gpt", "value": "red"},
            {"from": "human", "value": "Box?"}, {"from": "gpt", "value": "[120,080,450,400]"}]
    ids, labels = encode_conversation(proc, conv)
    sup = proc.tokenizer.decode([t for t, l in zip(ids, labels) if l != IGNORE])
    assert sup == "a red square at the top left .<|im_end|>\nred<|im_end|>\n[120,080,450,400]<|im_end|>\n"
    assert all(l == IGNORE for t, l in zip(ids, labels) if t == proc.image_token_id)
    assert ids.count(proc.image_token_id) == 4
    assert to_messages(conv[:1]) == [{"role": "user", "content": [{"type": "image"}]}]


def test_three_formats_load_the_same(tmp_path):
    src = write_llava(tmp_path / "llava", 5, seed=2, kind="qa")
    rows = json.loads((src / "data.json").read_text())
    pq.write_table(pa.table({"id": [r["id"] for r in rows], "image_id": [r["id"] for r in rows],
                             "image": [(src / r["image"]).read_bytes() for r in rows],
                             "conversations": [r["conversations"] for r in rows]}),
                   (tmp_path / "pq").mkdir() or tmp_path / "pq" / "data-00000-of-00001.parquet")
    (tmp_path / "wds").mkdir()
    with tarfile.open(tmp_path / "wds" / "shard-000000.tar", "w") as tar:
        for r in rows:
            for name, data in ((f"{r['id']}.png", (src / r["image"]).read_bytes()),
                               (f"{r['id']}.json", json.dumps({"id": r["id"], "conversations": r["conversations"]}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    sets = [load_conversations(p) for p in (src, src / "data.json", tmp_path / "pq", tmp_path / "wds")]
    for s in sets:
        assert [x.conversations for x in s] == [r["conversations"] for r in rows]
        assert [x.image.tobytes() for x in s] == [x.image.tobytes() for x in sets[0]]
    with pytest.raises(ModelError, match="found no data.json, \\*.parquet or \\*.tar"):
        load_conversations(tmp_path)


def test_recipe_keys_map_onto_the_signature(tmp_path):
    (tmp_path / "r.yaml").write_text("epochs_sft: 3\nlr_sft: 0.002\n")
    assert load_recipe(tmp_path / "r.yaml") == {"epochs_sft": 3, "lr_sft": 0.002}
    (tmp_path / "bad.yaml").write_text("epochs_sft: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ModelError, match=r"unknown key\(s\) \['learning_rate'\] in recipe bad.yaml"):
        load_recipe(tmp_path / "bad.yaml")
    assert set(load_recipe("round0-cpu")) <= set(train_vlm.__code__.co_varnames)
