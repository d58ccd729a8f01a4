"""Batched, KV-cached generation for any local HF image-text-to-text checkpoint with a chat template
(InternVL, LLaVA, Qwen2-VL ...), plus the log-likelihood of given targets (for likelihood-based filters).

Why the batching details matter: requests are sorted by prompt length so each batch pads little; padding is on
the left so every row's next token sits in the last column and the KV cache is shared by one `generate` call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from PIL import Image

from vila2_model.data import IMAGE_PLACEHOLDER, to_messages
from vila2_model.errors import ModelError


@dataclass
class GenOut:
    text: str             # decoded, special tokens removed, stripped
    finish_reason: str    # "eos" (the model stopped) | "length" (max_new_tokens reached)
    n_tokens: int         # generated tokens, not counting the stop token


class Generator:
    def __init__(self, ckpt_dir: str | Path, device: str = "cpu", dtype: torch.dtype | str | None = None,
                 attn_implementation: str | None = None):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        d = Path(ckpt_dir)
        if not (d / "config.json").is_file():
            raise ModelError(f"{d} is not a model checkpoint", "it has no config.json",
                             "pass a directory written by `curator train` (or any local HF image-text-to-text model)")
        self.ckpt_dir, self.device = str(d), device
        self.processor = AutoProcessor.from_pretrained(self.ckpt_dir)
        if getattr(self.processor, "chat_template", None) is None:
            raise ModelError(f"checkpoint {d} has no chat template", "prompts are sent through the chat template",
                             "save a chat_template.jinja with the processor")
        kw = {"attn_implementation": attn_implementation} if attn_implementation else {}
        if dtype is not None:
            kw["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.model = AutoModelForImageTextToText.from_pretrained(self.ckpt_dir, **kw).to(device).eval()
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        eos = self.model.generation_config.eos_token_id
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        self._model_id = None

    @property
    def model_id(self) -> str:
        from vila2_model.checkpoint import content_hash

        if self._model_id is None:
            self._model_id = content_hash(self.ckpt_dir)
        return self._model_id

    def render(self, prompt: str, target: str | None = None) -> str:
        """The chat-template text for one image + prompt (a `<image>` in the prompt marks where the image goes;
        otherwise the image comes first), ending with the assistant header, plus `target` when given."""
        value = prompt if IMAGE_PLACEHOLDER in prompt else f"{IMAGE_PLACEHOLDER}\n{prompt}"
        text = self.processor.apply_chat_template(to_messages([{"from": "human", "value": value}]),
                                                  tokenize=False, add_generation_prompt=True)
        return text if target is None else text + target

    def _batches(self, texts: list[str], batch_size: int) -> list[list[int]]:
        lengths = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
        return [order[k:k + batch_size] for k in range(0, len(order), batch_size)]

    def _inputs(self, images: list[Image.Image], texts: list[str]):
        imgs = [im.convert("RGB") if im.mode != "RGB" else im for im in images]
        inp = self.processor(images=imgs, text=texts, padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in inp.items()}

    @torch.inference_mode()
    def generate(self, images: list[Image.Image], prompts: list[str], max_new_tokens: int = 128,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                 batch_size: int = 32, n: int = 1, progress: str | None = None) -> list[GenOut]:
        """One GenOut per (image, prompt); with n > 1 (sampling), n per request, request-major
        (sample j of request i at i * n + j). `progress` names a tqdm bar (with an ETA) over the requests,
        shown when stderr is a terminal."""
        if len(images) != len(prompts):
            raise ModelError("generate got mismatched inputs", f"{len(images)} images but {len(prompts)} prompts",
                             "pass one prompt per image")
        if n > 1 and not do_sample:
            raise ModelError(f"generate got n={n} with greedy decoding", "greedy decoding gives one caption",
                             "pass do_sample=True for several samples")
        texts = [self.render(p) for p in prompts]
        results: list[GenOut | None] = [None] * (len(texts) * n)
        bar = tqdm(total=len(texts), desc=progress, unit="req", disable=None if progress else True, leave=False)
        for b, idx in enumerate(self._batches(texts, batch_size)):
            inp = self._inputs([images[i] for i in idx], [texts[i] for i in idx])
            kw = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=self.pad_id,
                      eos_token_id=sorted(self.eos_ids), use_cache=True)
            if do_sample:
                # Seeded per batch: the same requests with the same batch_size draw the same samples.
                torch.manual_seed(seed * 100003 + b)
                kw.update(temperature=temperature, top_p=top_p, num_return_sequences=n)
            else:
                kw.update(temperature=None, top_p=None, top_k=None)
            out = self.model.generate(**inp, **kw)
            new = out[:, inp["input_ids"].shape[1]:].tolist()
            for r, row in enumerate(new):
                i = idx[r // n] * n + r % n
                stop = next((k for k, t in enumerate(row) if t in self.eos_ids), None)
                toks = row if stop is None else row[:stop]
                if stop is None:
                    toks = [t for t in toks if t != self.pad_id] if self.pad_id not in self.eos_ids else toks
                results[i] = GenOut(self.tokenizer.decode(toks, skip_special_tokens=True).strip(),
                                    "length" if stop is None else "eos", len(toks))
            bar.update(len(idx))
        bar.close()
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def loglikelihood(self, images: list[Image.Image], prompts: list[str], targets: list[str],
                      batch_size: int = 32) -> list[float]:
        """Mean log p(target tokens | image, prompt) per request (nan for an empty target). Filters compare a
        caption's value with the real image against a blank image to spot captions the image does not support."""
        if not (len(images) == len(prompts) == len(targets)):
            raise ModelError("loglikelihood got mismatched inputs",
                             f"{len(images)} images, {len(prompts)} prompts, {len(targets)} targets",
                             "pass one prompt and one target per image")
        prefixes = [self.render(p) for p in prompts]
        fulls = [pre + t for pre, t in zip(prefixes, targets)]
        # Target length from the text alone: the image expansion sits in the prefix, so it cancels.
        n_target = [len(self.tokenizer(f, add_special_tokens=False)["input_ids"])
                    - len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for f, p in zip(fulls, prefixes)]
        results = [math.nan] * len(fulls)
        for idx in self._batches(fulls, batch_size):
            inp = self._inputs([images[i] for i in idx], [fulls[i] for i in idx])
            # Left padding shifts each row; positions must count real tokens only (as generate() does).
            # (Qwen2-VL-style models build their own 3-D rope positions from the attention mask.)
            kw = {}
            if not self.model.config.model_type.startswith(("qwen2_vl", "qwen2_5_vl", "qwen3_vl")):
                kw["position_ids"] = (inp["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
            logits = self.model(**inp, **kw).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            ids = inp["input_ids"][:, 1:]
            tok_lp = logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)   # log p(token t | tokens < t)
            for r, i in enumerate(idx):
                k = n_target[i]
                if k > 0:
                    results[i] = tok_lp[r, -k:].mean().item()   # left padding: targets are the last k tokens
        return results
