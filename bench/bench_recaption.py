"""Recaption throughput on CPU: the transformers engine (batched, length-sorted, KV-cached, decode/resize
prefetched, one commit per batch) vs a naive loop (one image at a time: load, generate, commit), same
random-weight checkpoint and images, same run. Greedy, fixed max_new_tokens.

    .venv/bin/python bench/bench_recaption.py [--preset tiny] [--n 96] [--batch-size 32]
    .venv/bin/python bench/bench_recaption.py --preset tiny72 --n 512 --batch-size 64 --max-new-tokens 96 --workers 2
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from summary import record  # noqa: E402  (bench/ is sys.path[0])

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0,
                    help="also recaption with N local single-thread processes (one shard each), same images")
    a = ap.parse_args()

    import torch

    from curator import schema
    from curator.engines.work import decode_resize, model_input_size, recaption
    from engines_toy import internvl_ckpt, make_store
    from vila2_model.generate import Generator

    tmp = Path(tempfile.mkdtemp())
    ckpt = str(internvl_ckpt(tmp / "ckpt", preset=a.preset))
    store, ids = make_store(tmp / "s", n=a.n)
    size, _ = model_input_size(ckpt)

    # Naive: one image at a time, decode → generate → commit.
    gen = Generator(ckpt)
    prompt = "Describe the image in details."
    t0 = time.perf_counter()
    for i in ids:
        im = decode_resize(store.image_bytes([i])[i], size, None)
        out = gen.generate([im], [prompt], max_new_tokens=a.max_new_tokens, batch_size=1)[0]
        store.add_captions([{"caption_id": schema.caption_key(i, 9, "naive", "x", "long-v1"), "image_id": i,
                             "round": 9, "kind": "naive", "text": out.text, "captioner": "x", "prompt_id": "long-v1",
                             "prompt": prompt, "sampling": "{}", "sample_idx": 0, "finish_reason": out.finish_reason,
                             "n_tokens": out.n_tokens, "parent_caption_id": "", "transform": "", "run_id": "naive"}])
    naive = time.perf_counter() - t0
    del gen

    t0 = time.perf_counter()
    c = recaption(store, 1, ckpt, batch_size=a.batch_size, max_new_tokens=a.max_new_tokens, progress=False)
    engine = time.perf_counter() - t0   # includes model load, like a real run
    assert c["added"] == a.n, c
    print(f"recaption, preset {a.preset}, {a.n} images, max_new_tokens {a.max_new_tokens}, torch threads "
          f"{torch.get_num_threads()}")
    print("| path | seconds | images/s |")
    print("|---|---|---|")
    print(f"| naive loop (batch 1, commit per image) | {naive:.1f} | {a.n / naive:.2f} |")
    print(f"| transformers engine (batch {a.batch_size}, incl. model load) | {engine:.1f} | {a.n / engine:.2f} |")
    if a.workers > 1:
        from curator.recaption import recaption_in_processes

        t0 = time.perf_counter()
        c = recaption_in_processes(store, 2, ckpt, workers=a.workers, batch_size=a.batch_size,
                                   max_new_tokens=a.max_new_tokens)
        procs = time.perf_counter() - t0   # includes starting the processes and each one's model load
        assert c["added"] == a.n, c
        print(f"| {a.workers} local processes, 1 thread each (incl. start + load) | {procs:.1f} | {a.n / procs:.2f} |")
        print(f"{a.workers} processes vs one process with {torch.get_num_threads()} threads: {engine / procs:.2f}x")
        record("bench_recaption", f"{a.workers} local processes, {a.n} images", a.n / procs, "images/s",
               f"transformers engine, 1 process, {torch.get_num_threads()} threads", engine / procs)
    print(f"speed-up: {naive / engine:.1f}x")
    record("bench_recaption", f"transformers engine, {a.n} images", a.n / engine, "images/s",
           "naive loop (batch 1, commit per image)", naive / engine)


if __name__ == "__main__":
    main()
