"""vLLM recaption throughput at real size (random weights, fixed ~150 output tokens): images/s per GPU,
compared with the method's 10.6 images/s per H100. Needs the `gpu` extra and an NVIDIA GPU; elsewhere it
says so and exits 0 (so `make bench` runs on CPU machines too).

    .venv/bin/python bench/bench_vllm.py [--preset siglip400m-llama3-8b] [--n 512] [--out-tokens 150]

The checkpoint is built once on the GPU in bf16 (VILA-8B-like shape: SigLIP-400M-like tower at 392 px →
196 image tokens, Llama-3-8B-like LLM) and saved under --work; images are 392 px noise, resized before the
engine like recaption does. Output length is fixed (ignore_eos) so the figure does not depend on when
random weights happen to stop.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="siglip400m-llama3-8b")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--out-tokens", type=int, default=150)
    ap.add_argument("--work", default="/tmp/vila2_bench_vllm")
    a = ap.parse_args()
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        print("bench_vllm: skipped — vllm (the 'gpu' extra) is not installed; run on a GPU machine")
        return 0
    if not torch.cuda.is_available():
        print("bench_vllm: skipped — no NVIDIA GPU visible")
        return 0

    import numpy as np
    from PIL import Image

    from curator.engines.vllm_engine import VLLMEngine
    from vila2_model.checkpoint import save_checkpoint
    from vila2_model.model import build_model
    from vila2_model.presets import load_preset
    from vila2_model.tokenizer import build_processor

    ckpt = Path(a.work) / a.preset
    if not (ckpt / "config.json").is_file():
        t0 = time.perf_counter()
        proc = build_processor(["a red circle at the top left of the image ."] * 200, None, a.preset)
        torch.set_default_dtype(torch.bfloat16)
        with torch.device("cuda"):
            model = build_model(a.preset, proc, seed=0)
        save_checkpoint(model, proc, ckpt)
        del model
        torch.cuda.empty_cache()
        torch.set_default_dtype(torch.float32)
        print(f"built {a.preset} in {time.perf_counter() - t0:.0f} s")
    size = load_preset(a.preset)["image_size"]
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(a.n)]
    eng = VLLMEngine(str(ckpt), dtype="bfloat16", max_model_len=2048)
    prompts = ["Describe the image in details.", "Elaborate on the visual and narrative elements of the image in detail."]
    reqs = [{"prompt": eng.render(prompts[i % 2]), "multi_modal_data": {"image": im}} for i, im in enumerate(images)]
    sp = vllm.SamplingParams(max_tokens=a.out_tokens, min_tokens=a.out_tokens, ignore_eos=True, temperature=0.0)
    eng.llm.generate(reqs[:16], sp, use_tqdm=False)   # warm-up (CUDA graphs, caches)
    t0 = time.perf_counter()
    outs = eng.llm.generate(reqs, sp, use_tqdm=False)
    dt = time.perf_counter() - t0
    toks = sum(len(o.outputs[0].token_ids) for o in outs)
    ips = a.n / dt
    print(f"GPU: {torch.cuda.get_device_name(0)}; preset {a.preset}; {a.n} images; {a.out_tokens} output tokens each")
    print("| engine | images/s per GPU | output tokens/s | paper (H100) |")
    print("|---|---|---|---|")
    print(f"| vLLM {vllm.__version__}, bf16, random weights | {ips:.1f} | {toks / dt:,.0f} | 10.6 images/s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
