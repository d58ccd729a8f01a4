"""GPU engine: vLLM's offline LLM.generate with multi-modal inputs.

The prompt text is rendered with the checkpoint's own chat template through its HF processor — the same
render the transformers engine uses — so both engines send identical prompts; vLLM expands the image
placeholder itself. Images arrive already resized to the model's input size (recaption.py), so vLLM's
processor does no large-image work on the critical path. Needs the `gpu` extra and an NVIDIA GPU.
"""
from __future__ import annotations

from curator.errors import InputError, require


class VLLMEngine:
    name = "vllm"

    def __init__(self, model: str, dtype: str | None = None, gpu_memory_utilization: float = 0.9,
                 tensor_parallel_size: int = 1, max_model_len: int | None = 4096):
        vllm = require("vllm", "gpu", "the vllm engine")
        from transformers import AutoProcessor

        from vila2_model.data import IMAGE_PLACEHOLDER, to_messages

        self._vllm = vllm
        self.processor = AutoProcessor.from_pretrained(model)
        if getattr(self.processor, "chat_template", None) is None:
            raise InputError(f"checkpoint {model} has no chat template", "prompts are sent through the chat template",
                             "save a chat_template.jinja with the processor")
        self._placeholder, self._to_messages = IMAGE_PLACEHOLDER, to_messages
        kw = dict(model=str(model), limit_mm_per_prompt={"image": 1}, gpu_memory_utilization=gpu_memory_utilization,
                  tensor_parallel_size=tensor_parallel_size, trust_remote_code=False)
        if dtype:
            kw["dtype"] = dtype
        if max_model_len:
            kw["max_model_len"] = max_model_len
        self.llm = vllm.LLM(**kw)

    def render(self, prompt: str) -> str:
        value = prompt if self._placeholder in prompt else f"{self._placeholder}\n{prompt}"
        return self.processor.apply_chat_template(self._to_messages([{"from": "human", "value": value}]),
                                                  tokenize=False, add_generation_prompt=True)

    def generate(self, images, prompts, sampling: dict, batch_size: int):
        from vila2_model.generate import GenOut

        sp = self._vllm.SamplingParams(
            max_tokens=sampling["max_new_tokens"], seed=sampling["seed"],
            temperature=sampling["temperature"] if sampling["do_sample"] else 0.0,   # 0 = greedy in vLLM
            top_p=sampling["top_p"] if sampling["do_sample"] else 1.0)
        reqs = [{"prompt": self.render(p), "multi_modal_data": {"image": im}} for im, p in zip(images, prompts)]
        # vLLM schedules continuously inside one call; batch_size only bounds how much one commit holds.
        outs = self.llm.generate(reqs, sp, use_tqdm=False)
        return [GenOut(o.outputs[0].text.strip(), "length" if o.outputs[0].finish_reason == "length" else "eos",
                       len(o.outputs[0].token_ids)) for o in outs]
