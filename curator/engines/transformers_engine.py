"""The default engine: vila2_model's batched Generator (left-padded, length-sorted, KV-cached) on CPU or GPU.
Works with any local HF image-text-to-text checkpoint that carries a chat template."""
from __future__ import annotations

from curator.errors import InputError


class TransformersEngine:
    name = "transformers"

    def __init__(self, model: str, device: str = "cpu", dtype: str | None = None):
        from vila2_model.errors import ModelError
        from vila2_model.generate import Generator

        try:
            self.gen = Generator(model, device=device, dtype=dtype)
        except ModelError as e:   # the model library's error → the curator's one-line error
            raise InputError(e.what, e.why, e.fix) from None

    def generate(self, images, prompts, sampling: dict, batch_size: int):
        """One GenOut(text, finish_reason, n_tokens) per (image, prompt)."""
        return self.gen.generate(images, prompts, max_new_tokens=sampling["max_new_tokens"],
                                 do_sample=sampling["do_sample"], temperature=sampling["temperature"],
                                 top_p=sampling["top_p"], seed=sampling["seed"], batch_size=batch_size)
