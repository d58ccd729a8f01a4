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
    (docs/LOG.md, 2026-11-25 (b))."""
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


def attention_for(device: str, requested: str | None = None) -> str | None:
    """The attention kernel a run uses: what the recipe asks for, else flash_attention_2 on a GPU when the
    flash-attn package is installed, else transformers' default (sdpa). Imports nothing from flash-attn."""
    import importlib.util

    if requested not in (None, "auto"):
        return requested
    if not str(device).startswith("cuda"):
        return None
    return "flash_attention_2" if importlib.util.find_spec("flash_attn") is not None else "sdpa"


# ---- composing the model from pretrained parts (VILA's starting point) -------------------------------------

def compose_model(vision_from, llm_from, seed: int = 0, attn_implementation: str | None = None,
                  downsample_ratio: float = 0.5):
    """(model, processor): an InternVL-format model whose vision tower comes from `vision_from` (a SigLIP
    checkpoint: SiglipVisionModel / SiglipModel, or an InternViT one: InternVLVisionModel / an InternVL -hf
    checkpoint) and whose LLM comes from `llm_from` (a causal LM such as Qwen2 or Llama, with its tokenizer),
    joined by a fresh projector initialised from `seed`. The tokenizer is the LLM's, with the image and ChatML
    tokens the processor needs added (embedding rows grown to fit). Loads in float32."""
    from transformers import AutoModelForCausalLM, GenerationConfig, InternVLConfig, InternVLForConditionalGeneration
    from transformers.models.internvl.modeling_internvl import InternVLMultiModalProjector

    from vila2_model.errors import ModelError

    vision, image_mean, image_std = load_vision_tower(vision_from)
    grid = vision.config.image_size[0] // vision.config.patch_size[0] if isinstance(vision.config.image_size, (list, tuple)) \
        else vision.config.image_size // vision.config.patch_size
    llm = _from_dir(AutoModelForCausalLM, llm_from, "llm_from", "a causal LM checkpoint (Qwen2, Llama) with its tokenizer")
    tokenizer = _chat_tokenizer(llm_from)
    if len(tokenizer) > llm.get_input_embeddings().weight.shape[0]:
        torch.manual_seed(seed)
        llm.resize_token_embeddings(-(-len(tokenizer) // 64) * 64, mean_resizing=True)
    text_cfg = llm.config
    text_cfg.pad_token_id, text_cfg.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    tokens = int(grid * grid * downsample_ratio ** 2)
    if grid % int(round(1 / downsample_ratio)):
        raise ModelError(f"the vision tower's {grid}x{grid} patch grid does not divide by the pixel shuffle",
                         f"downsample_ratio {downsample_ratio} needs a grid that is a multiple of {int(1 / downsample_ratio)}",
                         "use a checkpoint whose image_size / patch_size is even")
    cfg = InternVLConfig(vision_config=vision.config, text_config=text_cfg, image_token_id=tokenizer.convert_tokens_to_ids(
        tokenizer.context_image_token), image_seq_length=tokens, downsample_ratio=downsample_ratio,
        tie_word_embeddings=bool(getattr(text_cfg, "tie_word_embeddings", False)))
    if attn_implementation:
        cfg._attn_implementation = attn_implementation
    with torch.device("meta"):   # the parts below replace every meta module; nothing is initialised twice
        model = InternVLForConditionalGeneration(cfg)
    model.model.vision_tower = vision
    model.model.language_model = llm.model
    model.lm_head = llm.lm_head
    torch.manual_seed(seed)
    projector = InternVLMultiModalProjector(cfg)
    for m in projector.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=0.02)
            torch.nn.init.zeros_(m.bias)
    model.model.multi_modal_projector = projector
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise ModelError("composing the model left parts uninitialised", f"still on the meta device: {left[:3]}",
                         "report this with the two checkpoints' config.json")
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                               do_sample=False, max_new_tokens=128)
    return model.float(), _processor(tokenizer, grid * _patch(vision.config), tokens, image_mean, image_std)


def _patch(vcfg) -> int:
    p = vcfg.patch_size
    return p[0] if isinstance(p, (list, tuple)) else p


def _from_dir(cls, path, what: str, expect: str):
    from pathlib import Path

    from vila2_model.errors import ModelError

    if not (Path(path) / "config.json").is_file():
        raise ModelError(f"{what} {path} is not a model checkpoint", "it has no config.json",
                         f"pass a local HF directory holding {expect}")
    try:
        return cls.from_pretrained(str(path), dtype=torch.float32)
    except (ValueError, KeyError, OSError) as e:
        raise ModelError(f"{what} {path} does not load as {expect}", (str(e).splitlines() or [""])[0],
                         f"pass a local HF directory holding {expect}") from e


def load_vision_tower(path):
    """(InternVLVisionModel, image_mean, image_std) from a SigLIP or InternViT-style checkpoint.

    InternViT checkpoints load as they are. SigLIP's weights are mapped onto InternViT's layout, following
    VILA, which reads SigLIP's second-to-last layer: the last encoder layer and the post-layernorm are left
    out; layer scale is 1; the class token (InternViT has one, SigLIP does not) starts at zero, so the patch
    tokens attend to one extra token; and a patch grid of odd side (SigLIP-so400m at 384 px: 27×27) has its
    position embeddings interpolated to the next even side (28×28 at 392 px), which the 2×2 pixel shuffle needs."""
    import json
    from pathlib import Path

    from transformers import AutoModel, InternVLVisionConfig, InternVLVisionModel

    from vila2_model.errors import ModelError

    p = Path(path)
    if not (p / "config.json").is_file():
        raise ModelError(f"vision_from {path} is not a model checkpoint", "it has no config.json",
                         "pass a local SigLIP or InternViT checkpoint directory")
    kind = json.loads((p / "config.json").read_text()).get("model_type")
    pre = json.loads((p / "preprocessor_config.json").read_text()) if (p / "preprocessor_config.json").is_file() else {}
    if kind in ("internvl_vision", "internvl"):
        src = AutoModel.from_pretrained(str(p), dtype=torch.float32)
        tower = src if kind == "internvl_vision" else src.vision_tower
        imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        return tower, pre.get("image_mean", imagenet[0]), pre.get("image_std", imagenet[1])
    if kind not in ("siglip", "siglip_vision_model", "siglip2_vision_model"):
        raise ModelError(f"vision_from {path} is a {kind!r} checkpoint", "the vision tower is read from SigLIP or InternViT",
                         "pass a SigLIP (siglip / siglip_vision_model) or InternViT (internvl_vision) checkpoint")
    src = AutoModel.from_pretrained(str(p), dtype=torch.float32)
    s = getattr(src, "vision_model", src)            # SiglipModel -> its vision half; SiglipVisionModel -> itself
    s = getattr(s, "vision_model", s)
    sc = s.config
    n_layers = sc.num_hidden_layers - 1 if sc.num_hidden_layers > 1 else 1
    grid = sc.image_size // sc.patch_size
    even = grid + grid % 2
    cfg = InternVLVisionConfig(hidden_size=sc.hidden_size, num_hidden_layers=n_layers,
                               num_attention_heads=sc.num_attention_heads, intermediate_size=sc.intermediate_size,
                               hidden_act=sc.hidden_act, layer_norm_eps=sc.layer_norm_eps, attention_bias=True,
                               image_size=even * sc.patch_size, patch_size=sc.patch_size, num_channels=sc.num_channels,
                               layer_scale_init_value=1.0, use_mean_pooling=True)
    with torch.device("meta"):
        tower = InternVLVisionModel(cfg)
    pos = s.embeddings.position_embedding.weight.detach().reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    if even != grid:
        pos = torch.nn.functional.interpolate(pos, size=(even, even), mode="bicubic", align_corners=False)
    pos = pos.permute(0, 2, 3, 1).reshape(1, even * even, -1)
    state = {"embeddings.cls_token": torch.zeros(1, 1, sc.hidden_size),
             "embeddings.position_embeddings": torch.cat([torch.zeros(1, 1, sc.hidden_size), pos], dim=1),
             "embeddings.patch_embeddings.projection.weight": s.embeddings.patch_embedding.weight,
             "embeddings.patch_embeddings.projection.bias": s.embeddings.patch_embedding.bias}
    names = {"layernorm_before": "layer_norm1", "layernorm_after": "layer_norm2", "attention.q_proj": "self_attn.q_proj",
             "attention.k_proj": "self_attn.k_proj", "attention.v_proj": "self_attn.v_proj",
             "attention.projection_layer": "self_attn.out_proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for i in range(n_layers):
        src_layer = dict(s.encoder.layers[i].named_parameters())
        for ours, theirs in names.items():
            for w in ("weight", "bias"):
                state[f"encoder.layer.{i}.{ours}.{w}"] = src_layer[f"{theirs}.{w}"]
        state[f"encoder.layer.{i}.lambda_1"] = torch.ones(sc.hidden_size)
        state[f"encoder.layer.{i}.lambda_2"] = torch.ones(sc.hidden_size)
    tower.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True, assign=True)
    return tower, pre.get("image_mean", [0.5, 0.5, 0.5]), pre.get("image_std", [0.5, 0.5, 0.5])


def _chat_tokenizer(llm_from):
    """The LLM's own tokenizer (its vocabulary, so its embeddings stay meaningful) with the tokens the
    InternVL processor reads and the ChatML turn tokens added where missing, and the project's chat template."""
    from tokenizers import AddedToken
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from vila2_model.tokenizer import (CHAT_TEMPLATE, IM_END, IMG_CONTEXT, IMG_END, IMG_START, PAD, SPECIAL_TOKENS,
                                       VIDEO)

    backend = AutoTokenizer.from_pretrained(str(llm_from)).backend_tokenizer
    vocab = backend.get_vocab(with_added_tokens=True)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS if t not in vocab])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=IM_END, pad_token=PAD, padding_side="left",
        extra_special_tokens={"start_image_token": IMG_START, "end_image_token": IMG_END,
                              "context_image_token": IMG_CONTEXT, "video_token": VIDEO},
        chat_template=CHAT_TEMPLATE)


def _processor(tokenizer, image_size: int, tokens: int, image_mean, image_std):
    from transformers import InternVLProcessor
    from transformers.models.got_ocr2.image_processing_got_ocr2 import GotOcr2ImageProcessor
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

    from vila2_model.tokenizer import CHAT_TEMPLATE

    size = {"height": image_size, "width": image_size}
    image_processor = GotOcr2ImageProcessor(size=size, crop_to_patches=False, min_patches=1, max_patches=1,
                                            image_mean=list(image_mean), image_std=list(image_std))
    return InternVLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                             video_processor=InternVLVideoProcessor(size=size), image_seq_length=tokens,
                             chat_template=CHAT_TEMPLATE)
