"""Generation throughput: the batched Generator vs a naive one-image-at-a-time `model.generate` loop, same run,
same checkpoint, same images, same greedy settings (target: >= 10x).

    python bench/bench_generate.py                       # tiny preset, random weights, 128 images
    python bench/bench_generate.py --ckpt /tmp/round0/sft --images 256

Random weights never emit end-of-turn, so every caption runs to --max-new-tokens in both paths: a fair,
fixed amount of decoding work. Numbers are noisy on a shared machine; compare the ratio, measured in one run.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from vila2_model.generate import Generator
from summary import record  # noqa: E402  (bench/ is sys.path[0])

PROMPT = "Describe the image in details."


def _random_ckpt(preset: str) -> str:
    from vila2_model.checkpoint import save_checkpoint
    from vila2_model.model import build_model
    from vila2_model.tokenizer import build_processor

    d = tempfile.mkdtemp(prefix="bench_gen_")
    texts = ["a small red circle at the top left. a large blue square at the bottom right.", PROMPT] * 50
    proc = build_processor(texts, None, preset)
    save_checkpoint(build_model(preset, proc, seed=0), proc, d)
    return d


def _images(n: int) -> list[Image.Image]:
    g = torch.Generator().manual_seed(0)
    return [Image.fromarray((torch.rand(64, 64, 3, generator=g) * 255).byte().numpy()) for _ in range(n)]


@torch.inference_mode()
def naive(gen: Generator, images: list[Image.Image], max_new_tokens: int) -> float:
    """What a first script does: one processor call and one generate() per image."""
    t = time.perf_counter()
    for im in images:
        inp = gen.processor(images=[im], text=[gen.render(PROMPT)], return_tensors="pt")
        gen.model.generate(**inp, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=gen.pad_id)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="checkpoint dir (default: a random-weight tiny checkpoint)")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--naive-images", type=int, default=16, help="the naive loop runs on the first N (per-image cost)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3, help="alternating repeats; each path's best time is kept")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    gen = Generator(a.ckpt or _random_ckpt(a.preset))
    images = _images(a.images)
    gen.generate(images[:2], [PROMPT] * 2, max_new_tokens=4)  # warm-up (allocations, lazy inits)
    # Other jobs share the CPU: alternate the two paths and keep each one's best time, so a burst of
    # contention during one measurement does not decide the ratio.
    t_batched = t_naive = float("inf")
    for _ in range(a.repeats):
        t = time.perf_counter()
        outs = gen.generate(images, [PROMPT] * len(images), max_new_tokens=a.max_new_tokens,
                            batch_size=a.batch_size)
        t_batched = min(t_batched, time.perf_counter() - t)
        t_naive = min(t_naive, naive(gen, images[: a.naive_images], a.max_new_tokens))
    ips_b, ips_n = len(images) / t_batched, a.naive_images / t_naive
    toks = sum(o.n_tokens for o in outs)
    print(f"\nGeneration ({Path(gen.ckpt_dir).name}, {a.max_new_tokens} new tokens/image, torch threads "
          f"{torch.get_num_threads()}; shared machine: noisy)")
    print(f"{'path':<34} {'images':>6} {'seconds':>8} {'images/s':>9} {'tokens/s':>9}")
    print(f"{'naive loop (1 image per generate)':<34} {a.naive_images:>6} {t_naive:>8.2f} {ips_n:>9.2f} "
          f"{ips_n * a.max_new_tokens:>9.0f}")
    print(f"{f'Generator (batch {a.batch_size}, KV cache)':<34} {len(images):>6} {t_batched:>8.2f} {ips_b:>9.2f} "
          f"{toks / t_batched:>9.0f}")
    print(f"speed-up: {ips_b / ips_n:.1f}x")
    record("bench_generate", f"Generator, batch {a.batch_size}", ips_b, "images/s", "one image per generate", ips_b / ips_n)


if __name__ == "__main__":
    main()
