"""Training throughput of the CPU presets, and (with --round0) the round-0 bar on the default synthetic world.

    python bench/bench_train.py                         # samples/s for micro, tiny, small (same run, same data)
    python bench/bench_train.py --round0 /tmp/world     # round 0 from scratch + eval: model captions vs alt-text

The round-0 bar: after training on the alt-text only, the model's detailed captions must beat the
alt-text itself on held-out images in caption precision x recall — otherwise self-augmentation has nothing
to start from. Numbers are noisy on a shared machine; the table says what ran where.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from vila2_model.data import Sample, encode_samples, load_conversations, texts_of
from vila2_model.model import build_model, count_params
from vila2_model.tokenizer import build_processor
from vila2_model.train import run_stage, train_vlm
from summary import record  # noqa: E402  (bench/ is sys.path[0])


def manifest_samples(manifest: Path, limit: int | None = None) -> list[Sample]:
    """The round-0 training set straight from a world's manifest: what `curator build --policy original`
    writes (human turn "<image>" alone, gpt turn = the alt-text)."""
    from PIL import Image

    out = []
    for line in manifest.read_text().splitlines()[:limit]:
        r = json.loads(line)
        im = Image.open(manifest.parent / r["file"]).convert("RGB")
        out.append(Sample(im, [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": r["caption"]}],
                          r["file"]))
    return out


def throughput(world: Path | None, presets: list[str], steps: int, batch_size: int) -> None:
    if world is not None:
        samples = load_conversations(world / "sft" / "data.json")[: batch_size * steps]
    else:
        from PIL import Image
        samples = [Sample(Image.new("RGB", (64, 64), (k, 0, 0)),
                          [{"from": "human", "value": "<image>\nDescribe the image in details."},
                           {"from": "gpt", "value": "a small red circle at the top left. a large blue square "
                                                    "at the bottom right. the circle is above the square."}])
                   for k in range(batch_size * steps)]
    rows = []
    for name in presets:
        proc = build_processor(texts_of(samples), None, name)
        model = build_model(name, proc, seed=0)
        enc = encode_samples(proc, samples)
        tokens = sum(len(x) for x in enc.input_ids) / len(enc.input_ids)
        s = run_stage(model, proc, enc, Path(f"/tmp/bench_train_{name}"), stage="sft", epochs=1, lr=1e-3,
                      batch_size=batch_size, max_steps=steps, progress=False)
        rows.append((name, count_params(model)["total"] / 1e6, tokens, s["samples_per_s"]))
    print(f"\nTraining throughput ({platform.processor() or platform.machine()}, torch threads "
          f"{torch.get_num_threads()}, batch {batch_size}, {steps} steps; shared machine: noisy)")
    print(f"{'preset':<8} {'params (M)':>10} {'tokens/sample':>14} {'samples/s':>10}")
    for name, p, t, sps in rows:
        print(f"{name:<8} {p:>10.2f} {t:>14.1f} {sps:>10.1f}")
        record("bench_train", f"SFT training, preset {name}, batch {batch_size}", sps, "samples/s")


def round0(world: Path, out: Path, recipe: dict) -> dict:
    from curator.world.grade import grade_alt_text, grade_eval
    from vila2_model.evaluate import predict

    t0 = time.time()
    pre = manifest_samples(world / "pretrain" / "manifest.jsonl")
    paths = train_vlm(out, pre, world / "sft" / "data.json", progress=True, **recipe)
    t_train = time.time() - t0
    items = json.loads((world / "eval" / "eval.json").read_text())
    preds = predict(paths["sft"], world / "eval" / "eval.json", grounding_prompt=None)
    t_total = time.time() - t0
    model = grade_eval(preds, items)
    alt = grade_alt_text(items)
    (out / "round0_eval.json").write_text(json.dumps({"model": model, "alt_text": alt, "recipe": recipe,
                                                      "train_s": t_train, "total_s": t_total,
                                                      "examples": dict(list(preds["captions"].items())[:5])},
                                                     indent=1))
    print(f"\nRound 0 on {world} ({len(pre)} pretraining images; train {t_train:.0f} s, train+eval {t_total:.0f} s)")
    print(f"{'captions':<16} {'precision':>9} {'recall':>7} {'P x R':>7} {'words':>6}")
    for name, m in (("alt-text", alt), ("round-0 model", model)):
        print(f"{name:<16} {m['caption_precision']:>9.3f} {m['caption_recall']:>7.3f} {m['caption_p_x_r']:>7.3f} "
              f"{m['caption_length_words']:>6.1f}")
    print("VQA accuracy:", {k: round(v, 3) for k, v in model.items() if k.startswith("vqa_acc")})
    for k, v in list(preds["captions"].items())[:3]:
        print(f"  {k}: {v}")
    return {"model": model, "alt_text": alt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, help="a generate_world directory (its SFT set is the benchmark data)")
    ap.add_argument("--presets", default="micro,tiny,small")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--round0", type=Path, help="run round 0 on this world directory and grade it")
    ap.add_argument("--out", type=Path, default=Path("/tmp/round0"))
    ap.add_argument("--recipe", default="round0-cpu", help="YAML recipe (name in vila2_model/presets or a path)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.round0:
        from vila2_model.train import load_recipe
        round0(a.round0, a.out, load_recipe(a.recipe))
    else:
        throughput(a.world, a.presets.split(","), a.steps, a.batch_size)


if __name__ == "__main__":
    main()
