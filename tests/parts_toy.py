"""Tiny random pretrained parts, built from configs (no hub): a SigLIP and an InternViT vision tower, a Qwen2 and a
Llama causal LM with a BPE tokenizer of their own (none of the image or ChatML tokens the VLM needs)."""
from __future__ import annotations

from pathlib import Path

import torch

from model_toy import caption, toy_items


def siglip_tower(out: Path, image_size: int = 24, patch: int = 8, layers: int = 3) -> Path:
    """24 px / patch 8 = a 3×3 grid by default: odd, like SigLIP-so400m's 27×27."""
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(11)
    SiglipVisionModel(SiglipVisionConfig(hidden_size=64, num_hidden_layers=layers, num_attention_heads=2,
                                         intermediate_size=128, image_size=image_size,
                                         patch_size=patch)).save_pretrained(out)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(out)
    return out


def internvit_tower(out: Path) -> Path:
    from transformers import InternVLVisionConfig, InternVLVisionModel

    torch.manual_seed(12)
    InternVLVisionModel(InternVLVisionConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=128, image_size=32, patch_size=8)).save_pretrained(out)
    return out


def causal_lm(out: Path, kind: str = "qwen2") -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = [caption(*t) for _, _, t in toy_items(300, seed=5)] + ["What color is the shape? Describe the image."] * 20
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(out)
    shape = dict(vocab_size=tok.get_vocab_size(), hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=2, intermediate_size=256, max_position_embeddings=512)
    torch.manual_seed(13)
    model = Qwen2ForCausalLM(Qwen2Config(**shape)) if kind == "qwen2" else \
        LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=False))
    model.save_pretrained(out)
    return out
