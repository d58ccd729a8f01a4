"""The default engine: vila2_model's batched Generator (left-padded, length-sorted, KV-cached) on CPU or GPU.
Works with any local HF image-text-to-text checkpoint that carries a chat template."""
from __future__ import annotations

from curator.errors import InputError


class PromptTooLong(ValueError):
    """One request's prompt (image tokens included) does not fit the checkpoint's context."""


class TransformersEngine:
    name = "transformers"

    def __init__(self, model: str, device: str = "cpu", dtype: str | None = None):
        from vila2_model.errors import ModelError
        from vila2_model.generate import Generator

        try:
            self.gen = Generator(model, device=device, dtype=dtype)
        except ModelError as e:   # the model library's error → the curator's one-line error
            raise InputError(e.what, e.why, e.fix) from None
        cfg = self.gen.model.config
        text = getattr(cfg, "text_config", None) or cfg
        # The context the checkpoint was built for — the same limit the vLLM engine takes from it.
        self.max_model_len = int(getattr(text, "max_position_embeddings", 0) or 0) or None
        self._image_tokens: dict = {}   # image size -> tokens the placeholder expands to

    def _n_text(self, text: str) -> int:
        return len(self.gen.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_lengths(self, images, prompts) -> list[int]:
        """Prompt tokens per request as the model sees them: the rendered text's tokens plus what the image
        placeholder expands to (measured once per image size with the checkpoint's processor)."""
        out = []
        for im, p in zip(images, prompts):
            if im.size not in self._image_tokens:
                empty = self.gen.render("")
                inp = self.gen.processor(images=[im.convert("RGB") if im.mode != "RGB" else im], text=[empty],
                                         return_tensors="pt")
                self._image_tokens[im.size] = int(inp["input_ids"].shape[1]) - self._n_text(empty)
            out.append(self._n_text(self.gen.render(p)) + self._image_tokens[im.size])
        return out

    def generate(self, images, prompts, sampling: dict, batch_size: int):
        """n GenOut(text, finish_reason, n_tokens) per (image, prompt), request-major (n = sampling["n"], 1 when
        absent); a request whose prompt does not fit the context gets a PromptTooLong in its places instead."""
        n = int(sampling.get("n", 1))
        ok = list(range(len(images)))
        results: list = [None] * (len(images) * n)
        if self.max_model_len:
            lengths = self.prompt_lengths(images, prompts)
            ok = []
            for i, k in enumerate(lengths):
                if k > self.max_model_len:
                    results[i * n:(i + 1) * n] = [PromptTooLong(
                        f"prompt of {k} tokens is longer than the model's context of {self.max_model_len}")] * n
                else:
                    ok.append(i)
        if ok:
            outs = self.gen.generate([images[i] for i in ok], [prompts[i] for i in ok],
                                     max_new_tokens=sampling["max_new_tokens"], do_sample=sampling["do_sample"],
                                     temperature=sampling["temperature"], top_p=sampling["top_p"],
                                     seed=sampling["seed"], batch_size=batch_size, n=n)
            for r, i in enumerate(ok):
                results[i * n:(i + 1) * n] = outs[r * n:(r + 1) * n]
        return results
