"""The VILA-architecture VLM as transformers' InternVLForConditionalGeneration, built from a preset with random weights.

InternVL's projector is exactly VILA's: pixel shuffle 0.5 (concatenate 2x2 neighbouring patches, 4x fewer
tokens) -> LayerNorm -> Linear -> GELU -> Linear. Choosing this class (InternVL vision config + Qwen2 text
config) means a checkpoint saved here opens with AutoModelForImageTextToText and is servable by vLLM unchanged.
"""
from __future__ import annotations

import torch

from vila2_model.presets import load_preset
from vila2_model.tokenizer import image_seq_length


def build_config(preset: str | dict, processor):
    from transformers import InternVLConfig, InternVLVisionConfig, Qwen2Config

    p = load_preset(preset)
    tok = processor.tokenizer
    # Embedding rows: the tokenizer's size rounded up to 64 (tensor-core friendly), or a real model's vocab
    # size for the GPU benchmark shapes ("embedding_size").
    vocab = max(int(p.get("embedding_size", 0)), -(-len(tok) // 64) * 64)
    v = dict(p["vision"])
    vision = InternVLVisionConfig(image_size=p["image_size"], **v)
    t = dict(p["text"])
    text = Qwen2Config(vocab_size=vocab, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                       eos_token_id=tok.eos_token_id, bos_token_id=None, **t)
    cfg = InternVLConfig(vision_config=vision, text_config=text, image_token_id=processor.image_token_id,
                         image_seq_length=image_seq_length(p), downsample_ratio=p.get("downsample_ratio", 0.5),
                         tie_word_embeddings=True)
    return cfg


def build_model(preset: str | dict, processor, seed: int = 0, attn_implementation: str | None = None):
    """A from-scratch model for `preset` whose embeddings match `processor`'s tokenizer. Deterministic by seed."""
    from transformers import GenerationConfig, InternVLForConditionalGeneration

    cfg = build_config(preset, processor)
    if attn_implementation:
        cfg._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(cfg)
    init_position_embeddings(model, load_preset(preset).get("vision_pos_init", "zeros"))
    tok = processor.tokenizer
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                               do_sample=False, max_new_tokens=128)
    return model


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine patch position codes (grid*grid, dim), unit variance per channel."""
    quarter = dim // 4
    omega = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float64) / max(1, quarter)))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                            indexing="ij")
    parts = []
    for coord in (ys.reshape(-1), xs.reshape(-1)):
        ang = coord[:, None] * omega[None, :]
        parts += [ang.sin(), ang.cos()]
    pe = torch.cat(parts, dim=1)
    pe = torch.nn.functional.pad(pe, (0, dim - pe.shape[1]))
    return (pe * (2 ** 0.5)).float()


def init_position_embeddings(model, how: str = "zeros") -> None:
    """transformers initialises InternViT's absolute position embeddings to zeros (right for loading pretrained
    weights; a from-scratch tower then starts with no notion of where a patch is). A preset may set
    "vision_pos_init": "sincos" to start them at fixed 2-D sine-cosine codes (learnable afterwards, as in
    MAE/ViT). Default "zeros". Measured: sincos alone does not make the tiny model read small objects
    (docs/LOG.md, 2026-11-25, second session)."""
    emb = model.model.vision_tower.embeddings
    if how == "zeros" or emb.position_embeddings is None:
        return
    if how != "sincos":
        from vila2_model.errors import ModelError
        raise ModelError(f"vision_pos_init={how!r} is not known", "the preset names an unknown initialisation",
                         "use 'zeros' or 'sincos'")
    n, dim = emb.position_embeddings.shape[1] - 1, emb.position_embeddings.shape[2]
    grid = int(round(n ** 0.5))
    with torch.no_grad():
        emb.position_embeddings[0, 1:] = sincos_2d(grid, dim)


def count_params(model: torch.nn.Module) -> dict[str, int]:
    m = model.model
    return {"vision": sum(p.numel() for p in m.vision_tower.parameters()),
            "projector": sum(p.numel() for p in m.multi_modal_projector.parameters()),
            "llm": sum(p.numel() for p in m.language_model.parameters()),
            "total": sum(p.numel() for p in model.parameters())}
