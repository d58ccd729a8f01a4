"""Benchmark: the pixels the model sees from a large photo — `decode_resize` (JPEG decoded at a reduced DCT
scale, then resized) against the baseline of a full decode then the same resize, both in this run, on
photo-sized JPEGs (smooth gradients + noise, quality 90) resized to a 448×448 model input.

Usage: python bench/bench_decode.py [--megapixels 12,24] [--size 448] [--repeats 3]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from curator.engines.work import decode_resize  # noqa: E402
from summary import record  # noqa: E402  (bench/ is sys.path[0])


def photo_jpeg(megapixels: float, seed: int = 0) -> bytes:
    """A 4:3 JPEG of about `megapixels`, built small and upscaled (cheap), with noise like a sensor's."""
    w = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    h = w * 3 // 4
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).resize((w, h), Image.BILINEAR)
    a = np.asarray(small, dtype=np.int16) + rng.integers(-8, 8, (h, w, 3), dtype=np.int16)
    b = io.BytesIO()
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(b, "JPEG", quality=90)
    return b.getvalue()


def full_decode(data: bytes, size: int) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), Image.BICUBIC)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megapixels", default="12,24")
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"decode_resize to {args.size}x{args.size} (best of {args.repeats}; {os.cpu_count()} cores)\n")
    print("| photo | JPEG | full decode + resize | decode_resize | speed-up | mean abs pixel diff |")
    print("|---|---:|---:|---:|---:|---:|")
    ratio = None
    for mp in [float(x) for x in args.megapixels.split(",")]:
        data = photo_jpeg(mp)
        w, h = Image.open(io.BytesIO(data)).size
        t_full = best_of(lambda: full_decode(data, args.size), args.repeats)
        t_ours = best_of(lambda: decode_resize(data, (args.size, args.size), None), args.repeats)
        diff = np.abs(np.asarray(full_decode(data, args.size), dtype=int)
                      - np.asarray(decode_resize(data, (args.size, args.size), None), dtype=int)).mean()
        ratio = t_full / t_ours
        print(f"| {w}x{h} ({mp:g} MP) | {len(data) / 1e6:.1f} MB | {t_full:.3f} s | {t_ours:.3f} s | "
              f"{ratio:.1f}× | {diff:.2f} |")
    record("bench_decode", f"decode_resize {args.megapixels.split(',')[-1]} MP JPEG → {args.size} px", t_ours, "s",
           "full decode + resize", t_ours / t_full)


if __name__ == "__main__":
    main()
