"""Offline tokenizer + InternVL-format processor: byte-level BPE trained with `tokenizers` on the world's text,
the special tokens InternVLProcessor reads, a ChatML chat template, and an image processor sized by the preset.

Why byte-level BPE with single digits: decoding is exact for any string (no <unk>, no lost spaces), and boxes
such as `[120,080,450,400]` tokenize digit by digit, so they round-trip exactly and the model can copy numbers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, IM_START, IM_END = "<|pad|>", "<|im_start|>", "<|im_end|>"
IMG_START, IMG_END, IMG_CONTEXT, VIDEO = "<img>", "</img>", "<IMG_CONTEXT>", "<video>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END, IMG_START, IMG_END, IMG_CONTEXT, VIDEO]

# ChatML. The image part becomes the *context* image token: InternVLProcessor expands it to
# <img> + image_seq_length x <IMG_CONTEXT> + </img>. Content may be a plain string or a list of parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<IMG_CONTEXT>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Words the template itself emits, so BPE learns them as single tokens (shorter sequences, faster training).
_TEMPLATE_TEXT = ["user\n", "assistant\n", "system\n"] * 50


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts) + _TEMPLATE_TEXT, trainer=trainer)
    return tok


def build_processor(texts: Iterable[str], out_dir: str | Path | None, preset: str | dict = "tiny"):
    """Train the tokenizer on `texts`, wrap it in an InternVLProcessor for `preset`, and save it to out_dir
    (when given) so that AutoProcessor.from_pretrained(out_dir) returns the same processor."""
    from transformers import InternVLProcessor, PreTrainedTokenizerFast
    from transformers.models.got_ocr2.image_processing_got_ocr2 import GotOcr2ImageProcessor
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

    from vila2_model.presets import load_preset

    p = load_preset(preset)
    tok = train_tokenizer(texts, vocab_size=min(int(p.get("vocab_size", 2048)), 8192))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=IM_END, pad_token=PAD, padding_side="left",
        extra_special_tokens={"start_image_token": IMG_START, "end_image_token": IMG_END,
                              "context_image_token": IMG_CONTEXT, "video_token": VIDEO},
        chat_template=CHAT_TEMPLATE,
    )
    size = {"height": p["image_size"], "width": p["image_size"]}
    # crop_to_patches off AND max_patches=1: InternVLProcessor passes crop_to_patches=True by default at call
    # time, and max_patches=1 is what keeps that call from tiling a fixed-size image into several crops.
    image_processor = GotOcr2ImageProcessor(size=size, crop_to_patches=False, min_patches=1, max_patches=1)
    video_processor = InternVLVideoProcessor(size=size)  # required by InternVLProcessor even for images only
    processor = InternVLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                  video_processor=video_processor, image_seq_length=image_seq_length(p),
                                  chat_template=CHAT_TEMPLATE)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        processor.save_pretrained(str(out_dir))
    return processor


def image_seq_length(preset: dict) -> int:
    """Image tokens per image: (image_size / patch)^2 patches, times downsample_ratio^2 after pixel shuffle."""
    grid = preset["image_size"] // preset["vision"]["patch_size"]
    return int(grid * grid * preset.get("downsample_ratio", 0.5) ** 2)
