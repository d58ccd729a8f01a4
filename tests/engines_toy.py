"""Tiny real parts for the engines tests: random-weight checkpoints built offline (this project's InternVL
format via vila2_model, plus LLaVA and Qwen2-VL families built here with a tokenizers-trained tokenizer and a
chat template), and a real Lance store holding a few small images. Captions from random weights are noise;
what the tests check is the plumbing (prompt rendering, batching, provenance, exactly-once)."""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw

from curator import schema
from curator.store import Store

WORDS = ("a red blue green circle square triangle at the top left right bottom of image describe details "
         "elaborate on visual and narrative elements in detail . the shape is small large").split()
TEXTS = [" ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(12)) for i in range(200)]


def png(i: int, size: int = 40) -> bytes:
    im = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(im)
    x = (i * 5) % (size - 10)
    d.rectangle((x, x // 2, x + 9, x // 2 + 9), fill=((i * 40) % 256, (i * 90) % 256, (i * 150) % 256))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def make_store(path, n: int, corrupt: int = 0, split: str = "train") -> tuple[Store, list[str]]:
    """A store with n images (plus `corrupt` rows whose bytes are not an image). Returns (store, image ids)."""
    store = Store(str(path), create=True)
    rows = []
    for i in range(n + corrupt):
        b = png(i) if i < n else b"not an image %d" % i
        rows.append({"image_id": schema.image_key(b), "uri": f"mem://{i}", "source": "synthetic", "width": 40,
                     "height": 40, "format": "PNG", "split": split, "meta": "{}", "bytes": b, "run_id": "toy"})
    store.add_images(rows, run_id="toy")
    return store, [r["image_id"] for r in rows]


def internvl_ckpt(out: Path, preset: str = "micro", seed: int = 0) -> Path:
    from vila2_model.checkpoint import save_checkpoint
    from vila2_model.model import build_model
    from vila2_model.tokenizer import build_processor

    if (out / "config.json").is_file():
        return out
    proc = build_processor(TEXTS, None, preset)
    save_checkpoint(build_model(preset, proc, seed=seed), proc, out)
    return out


# ChatML with each family's image placeholder; `content` may be a string or a list of parts.
def _chat_template(image_text: str) -> str:
    return ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
            "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
            "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '" + image_text + "' }}"
            "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
            "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _tokenizer(special: list[str], chat_template: str, extra: dict | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS + ["user\n", "assistant\n"] * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|pad|>", "<|im_start|>", "<|im_end|>"] + special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>",
                                   padding_side="left", chat_template=chat_template, extra_special_tokens=extra or {})


def _text_cfg(tok) -> dict:
    return dict(vocab_size=-(-len(tok) // 64) * 64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)


def llava_ckpt(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, GenerationConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, Qwen2Config)

    if (out / "config.json").is_file():
        return out
    template = _chat_template("<image>")
    tok = _tokenizer(["<image>"], template)
    ip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8, vision_feature_select_strategy="full",
                          chat_template=template, image_token="<image>",
                          num_additional_image_tokens=1)   # "full" keeps the CLS feature: 16 patches + 1
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=32)
    cfg = LlavaConfig(vision_config=vision, text_config=Qwen2Config(**_text_cfg(tok)),
                      image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="full",
                      vision_feature_layer=-1)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def qwen2vl_ckpt(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (GenerationConfig, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                              Qwen2VLImageProcessor, Qwen2VLProcessor)
    from transformers.models.qwen2_vl import Qwen2VLVideoProcessor

    if (out / "config.json").is_file():
        return out
    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    template = _chat_template("<|vision_start|><|image_pad|><|vision_end|>")
    tok = _tokenizer(specials, template, {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                                          "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"})
    # 32x32 images, patch 8, merge 2 -> 4 image tokens.
    ip = Qwen2VLImageProcessor(min_pixels=32 * 32, max_pixels=32 * 32, patch_size=8, merge_size=2, temporal_patch_size=2)
    vp = Qwen2VLVideoProcessor(min_pixels=32 * 32, max_pixels=32 * 32, patch_size=8, merge_size=2, temporal_patch_size=2)
    proc = Qwen2VLProcessor(image_processor=ip, tokenizer=tok, video_processor=vp, chat_template=template)
    t = _text_cfg(tok)
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in
           (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    cfg = Qwen2VLConfig(text_config={**t, "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]}},
                        vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
                                           patch_size=8, spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
                        **ids)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


# --- one bad row never fails a batch (shared by the transformers and vLLM engine tests) -------------------------
LONG_PROMPT = "Describe " + "every small detail of the image " * 120   # ~840 tokens: longer than a 512 context


def bad_rows_setup(tmp_path: Path) -> tuple[Store, list[str], str, str, str]:
    """A store with 6 good images, one undecodable row and one 300x1 image (a shape Qwen2-VL's processor refuses:
    aspect ratio over 200), and a prompts file whose set `mix` draws a normal or an over-long prompt per image.
    Returns (store, good ids, corrupt id, thin id, prompts file)."""
    store, ids = make_store(tmp_path / "s", n=6, corrupt=1)
    thin = io.BytesIO()
    Image.new("RGB", (300, 1), (200, 10, 10)).save(thin, "PNG")
    b = thin.getvalue()
    store.add_images([{"image_id": schema.image_key(b), "uri": "mem://thin", "source": "synthetic", "width": 300,
                       "height": 1, "format": "PNG", "split": "train", "meta": "{}", "bytes": b, "run_id": "toy"}],
                     run_id="toy")
    pf = tmp_path / "prompts.yaml"
    pf.write_text(f"prompts:\n  short: \"Describe the image.\"\n  long: \"{LONG_PROMPT}\"\nsets:\n  mix: [short, long]\n")
    return store, ids[:6], ids[6], schema.image_key(b), str(pf)


def check_bad_rows(store, counts: dict, good: list[str], corrupt: str, thin: str, prompts_file: str,
                   long_reason: str) -> None:
    """Every good image with the short prompt lands; each bad row is one `failures` row with its reason."""
    from curator.prompts import load_prompts

    book = load_prompts(prompts_file)
    long_ids = {i for i in good if book.draw("mix", i, 0).id == "long"}
    assert 0 < len(long_ids) < len(good), "the draw should give both prompts"
    caps = {r["image_id"] for r in store.sql("SELECT image_id FROM captions WHERE round = 1").to_pylist()}
    assert caps == set(good) - long_ids
    fails = {r["image_id"]: (r["stage"], r["reason"]) for r in store.sql("SELECT * FROM failures").to_pylist()}
    assert set(fails) == long_ids | {corrupt, thin}, fails
    assert fails[corrupt][0] == "load" and fails[corrupt][1].startswith("UnidentifiedImageError: cannot identify")
    # (the thin image fails on its shape, or on its prompt first when it drew the long one)
    assert fails[thin][0] == "generate" and ("aspect ratio" in fails[thin][1] or (
        book.draw("mix", thin, 0).id == "long" and fails[thin][1].startswith(long_reason))), fails[thin]
    for i in long_ids:
        assert fails[i][0] == "generate" and fails[i][1].startswith(long_reason), fails[i]
    assert (counts["added"], counts["failed"]) == (len(good) - len(long_ids), len(long_ids) + 2)
