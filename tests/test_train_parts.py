"""A round's model composed from pretrained parts, as VILA starts: a SigLIP or InternViT vision tower and a
Qwen2 or Llama LLM (tiny random checkpoints built here from configs) joined by a fresh projector, in the
InternVL format; training starts every round from these parts, never from the previous round's weights."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

from parts_toy import causal_lm, internvit_tower, siglip_tower
from test_train_ranks import _samples
from vila2_model.errors import ModelError
from vila2_model.model import compose_model, load_vision_tower
from vila2_model.train import train_vlm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    d = tmp_path_factory.mktemp("parts")
    return {"siglip": siglip_tower(d / "siglip"), "siglip_even": siglip_tower(d / "siglip_even", image_size=32),
            "internvit": internvit_tower(d / "internvit"), "qwen2": causal_lm(d / "qwen2"),
            "llama": causal_lm(d / "llama", "llama")}


@pytest.mark.parametrize("vision,llm", [("siglip", "qwen2"), ("internvit", "llama")])
def test_composed_model_keeps_both_parts_and_round_trips(tmp_path, parts, vision, llm):
    model, proc = compose_model(parts[vision], parts[llm], seed=0)
    src = AutoModelForCausalLM.from_pretrained(parts[llm])
    # The LLM: every weight as pretrained (the embedding grew by the added image / ChatML tokens: old rows kept).
    mine = model.model.language_model.state_dict()
    for k, v in src.model.state_dict().items():
        assert torch.equal(mine[k][:v.shape[0]], v), k
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        assert torch.equal(model.model.language_model(input_ids=ids).last_hidden_state,
                           src.model(input_ids=ids).last_hidden_state)
    tok = proc.tokenizer
    assert tok.convert_tokens_to_ids(tok.context_image_token) == model.config.image_token_id >= 300  # added after
    assert tok.eos_token == "<|im_end|>" and model.config.text_config.model_type == llm
    # Save, reload with the Auto classes, caption an image: the format any InternVL -hf reader opens.
    model.save_pretrained(tmp_path / "ck")
    proc.save_pretrained(tmp_path / "ck")
    back = AutoModelForImageTextToText.from_pretrained(tmp_path / "ck")
    proc2 = AutoProcessor.from_pretrained(tmp_path / "ck")
    assert type(back).__name__ == "InternVLForConditionalGeneration"
    from PIL import Image
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    inp = proc2(images=[Image.new("RGB", (40, 40), (200, 10, 10))],
                text=[proc2.apply_chat_template(msgs, add_generation_prompt=True)], return_tensors="pt")
    assert back.generate(**inp, max_new_tokens=3).shape[1] == inp["input_ids"].shape[1] + 3


def test_internvit_tower_is_taken_as_is(parts):
    tower, mean, std = load_vision_tower(parts["internvit"])
    src = AutoModel.from_pretrained(parts["internvit"])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(tower(pixel_values=x).last_hidden_state, src(pixel_values=x).last_hidden_state)
    assert mean == [0.485, 0.456, 0.406] and std == [0.229, 0.224, 0.225]


def test_siglip_tower_maps_onto_internvit(parts):
    """VILA reads SigLIP's second-to-last layer: the mapped tower has one layer less and, but for the zero class
    token it attends to as well, computes SigLIP's patch features (measured cosine 0.999 on this toy tower)."""
    from transformers import SiglipVisionModel

    tower, mean, std = load_vision_tower(parts["siglip_even"])
    src = SiglipVisionModel.from_pretrained(parts["siglip_even"])
    assert tower.config.num_hidden_layers == 2 and (mean, std) == ([0.5] * 3, [0.5] * 3)
    assert torch.equal(tower.embeddings.patch_embeddings.projection.weight,
                       getattr(src, "vision_model", src).embeddings.patch_embedding.weight)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = src(pixel_values=x, output_hidden_states=True).hidden_states[-2]
        ours = tower(pixel_values=x).last_hidden_state[:, 1:]
    assert float(torch.nn.functional.cosine_similarity(ref, ours, dim=-1).min()) > 0.99
    # An odd patch grid (3×3 at 24 px, like so400m's 27×27) becomes the next even one for the 2×2 shuffle.
    odd, _, _ = load_vision_tower(parts["siglip"])
    assert (tuple(odd.config.image_size), odd.embeddings.position_embeddings.shape[1]) == ((32, 32), 1 + 16)


def test_rounds_start_from_the_parts_not_the_previous_round(tmp_path, parts):
    run = dict(vision_from=str(parts["siglip"]), llm_from=str(parts["qwen2"]), epochs_align=1, epochs_pretrain=1,
               epochs_sft=1, batch_size=8, max_steps=2, train_vision_in_pretrain=False, progress=False)
    r0 = train_vlm(tmp_path / "r0", _samples(16, 0, 1), _samples(8, 1, 2), **run)
    r1 = train_vlm(tmp_path / "r1", _samples(16, 2, 1), _samples(8, 1, 2), **run)   # "recaptioned" data
    llm = AutoModelForCausalLM.from_pretrained(parts["qwen2"]).model.state_dict()
    tower, _, _ = load_vision_tower(parts["siglip"])
    for r in (r0, r1):
        # align trains the projector only: the LLM and tower in its checkpoint are the pretrained parts', so
        # round 1 began from them, not from round 0's trained weights.
        w = AutoModelForImageTextToText.from_pretrained(r["align"]).state_dict()
        for k, v in llm.items():
            assert torch.equal(w[f"model.language_model.{k}"][:v.shape[0]], v), k
        for k, v in tower.state_dict().items():
            assert torch.equal(w[f"model.vision_tower.{k}"], v), k
        meta = json.loads((Path(r["sft"]) / "vila2_train.json").read_text())
        assert meta["preset"] == f"parts:{parts['siglip']}+{parts['qwen2']}"
    pre = AutoModelForImageTextToText.from_pretrained(r0["pretrain"]).state_dict()
    assert torch.equal(pre["model.vision_tower.encoder.layer.0.mlp.fc1.weight"],
                       tower.state_dict()["encoder.layer.0.mlp.fc1.weight"])   # frozen in stage 2, as VILA
    assert not torch.equal(pre["model.language_model.layers.0.mlp.up_proj.weight"],
                           llm["layers.0.mlp.up_proj.weight"])
    model = AutoModelForImageTextToText.from_pretrained(r1["sft"])
    assert model.config.text_config.model_type == "qwen2"


def test_parts_errors_say_what_to_pass(tmp_path, parts):
    with pytest.raises(ModelError, match="^pretrained parts need both vision_from and llm_from — only vision_from"):
        train_vlm(tmp_path / "x", _samples(4, 0, 1), _samples(4, 1, 1), vision_from=str(parts["siglip"]),
                  progress=False)
    with pytest.raises(ModelError, match=r"^vision_from .* is a 'qwen2' checkpoint — the vision tower is read from"):
        compose_model(parts["qwen2"], parts["qwen2"])
    with pytest.raises(ModelError, match="^llm_from .* is not a model checkpoint — it has no config.json"):
        compose_model(parts["siglip"], tmp_path)


def test_self_augment_on_a_folder_of_user_images_from_pretrained_parts(tmp_path, parts):
    """A user's own images (a folder with sidecar alt-texts), no world labels for them: the loop starts each
    round from the pretrained parts. SFT and eval sets come from a small world (the loop grades on it)."""
    from conftest import run_cli
    from curator.store import Store
    from curator.world.synthetic import WorldConfig, generate_world
    from model_toy import caption, toy_items

    photos = tmp_path / "photos"
    photos.mkdir()
    for k, im, t in toy_items(12, seed=21):
        im.save(photos / f"img_{k:03d}.png")
        (photos / f"img_{k:03d}.txt").write_text(caption(*t).split(" at ")[0])   # short, alt-text-like
    w = generate_world(tmp_path / "w", n_pretrain=4, seed=0, cfg=WorldConfig(n_eval=4))
    store = tmp_path / "store"
    run_cli("ingest", "--folder", photos, store=store)
    res = run_cli("run", "self-augment", "--sft", w.sft, "--eval", w.eval, "--work", tmp_path / "work",
                  "--vision-from", parts["siglip"], "--llm-from", parts["qwen2"], "--rounds", "1",
                  "--max-steps", "1", "--epochs-pretrain", "1", "--epochs-sft", "1", "--max-new-tokens", "8",
                  "--limit", "6", "--eval-limit", "2", "--min-gain", "-1", "--filters", "charset", store=store)
    assert "round-1/train" in res.stdout
    s = Store(str(store))
    models = s.sql("SELECT round, stage, preset, model_id FROM models ORDER BY created_at").to_pylist()
    assert [(m["round"], m["stage"]) for m in models] == [(0, "align"), (0, "pretrain"), (0, "sft"),
                                                         (1, "align"), (1, "pretrain"), (1, "sft")]
    assert {m["preset"] for m in models} == {"parts:siglip+qwen2"}
    self_caps = s.sql("SELECT count(*) AS n, min(captioner) AS c FROM captions WHERE round = 1 AND kind = 'self'"
                      ).to_pylist()[0]
    assert self_caps["n"] == 6 and self_caps["c"] == models[2]["model_id"]   # round 0's SFT model recaptioned
