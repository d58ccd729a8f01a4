"""`make demo`: the whole VILA² loop on the built-in synthetic world, on CPU.

world → vision foundation (once, cached) → ingest → SQL summary → round 0 → self-augment rounds → (--full: compute
control, round 0 at 2× the stage-2 epochs) → specialist augment (each specialist graded on its own skill) → report.
Resumable: rerunning the same command continues where it stopped (the store remembers finished steps).

    curator demo --out demo_out            # default sizes (docs/results.md has the measured wall time)
    curator demo --out demo_out --full     # + round 3, the OCR and spatial specialists, the compute control
    curator demo --out demo_out --quick    # toy sizes: a smoke run of every step (about 6 min)
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipelines.foundation import FoundationArgs, build_foundation, foundation_report, world_texts
from pipelines.self_augment import LoopConfig, RecaptionArgs, TrainArgs, run_self_augment
from pipelines.specialist_augment import SpecialistArgs, SpecialistConfig, run_specialist_augment


@dataclass
class DemoSize:
    n_pretrain: int
    n_eval: int
    rounds: int
    train: TrainArgs
    finetune: SpecialistArgs
    foundation: FoundationArgs
    world: dict = field(default_factory=dict)   # WorldConfig overrides (e.g. proper names in the alt-text)
    control: float | None = None                # also train the compute control: round 0 with this × the epochs
    specialists: tuple = ("spatial", "grounding", "ocr")   # the world's task sets the specialist phase uses
    preset: str = "tiny72"                      # the model shape (vila2_model/presets); the foundation builds it


# The recipe of the earlier demos and of the recorded probes (experiments/probe_budget.py starts from it): tower
# frozen, one SFT copy in stage 2, 4 SFT epochs. Its rounds did not separate from compute (docs/results.md).
_RECIPE = TrainArgs(epochs_align=0.25, epochs_pretrain=2.0, epochs_sft=4.0, freeze_vision=True, sft_in_pretrain=1.0)
# The paper's regime: stage 2 on the round's captions alone, the SFT stage teaches the description format
# (12 epochs; 6 leave round 0 nearly blind). Round 1 beat round 0 trained twice as long by +0.18 on two seeds
# at 16 stage-2 epochs; the demo runs it at 4 (docs/results.md "make demo").
_PAPER = replace(_RECIPE, epochs_pretrain=4.0, epochs_sft=12.0, sft_in_pretrain=0.0)

# Specialists: fine-tuned from round 2's generalist (start="sft": in the paper's regime the stage-2 checkpoint
# never saw the SFT set and its specialists learned no skill in 6-12 epochs) for 12 epochs on task + caption +
# SFT data, the tower frozen as the generalist had it. A probe from the 1,000-image world's round 2: OCR +0.065,
# grounding IoU +0.065 (6 epochs: +0.022, +0.000). A specialist below the bar (+0.05 on its own skill) writes no
# data: its wrong answers would become the generalist's training targets (docs/results.md "make demo").
_SPECIALISTS = SpecialistArgs(epochs=12.0, start="sft", min_skill_gain=0.05)
# 1,000 pool images with proper names in half the alt-texts (what the concat policy keeps); 250 task images
# per specialist.
_WORLD = {"name_prob": 0.5, "task_fraction": 0.25}
# A tower that reads: the foundation's dense labels also say which word a token shows. Without it the OCR
# specialist had nothing to learn from (the word was one class, "a word"; docs/results.md). 1,000 steps: the
# held-out accuracies stop moving there (word 0.914 at 1,000 and 1,200).
_FOUNDATION = FoundationArgs(read_words=True, steps=1000)

SIZES = {
    # Round 0, two self-augment rounds, the grounding specialist, the specialist round: the 15-minute run. The
    # OCR specialist is in --full: at this budget its gain (+0.032 in a demo, +0.065 in a probe, on 93
    # questions) does not clear the bar reliably and its fine-tune costs 130 s; no model here answers spatial
    # relation questions from the image.
    "default": DemoSize(n_pretrain=1000, n_eval=200, rounds=2, train=_PAPER, finetune=_SPECIALISTS,
                        foundation=_FOUNDATION, world=_WORLD, specialists=("grounding",), preset="tiny72-2l"),
    # + round 3, the OCR and spatial specialists and the compute control (round 0 at 2× the stage-2 epochs,
    # printed beside the rounds by `curator report`).
    "full": DemoSize(n_pretrain=1000, n_eval=200, rounds=3, train=_PAPER, finetune=_SPECIALISTS,
                     foundation=_FOUNDATION, world=_WORLD, control=2.0, preset="tiny72-2l"),
    "quick": DemoSize(n_pretrain=400, n_eval=60, rounds=2, train=_RECIPE,
                      finetune=SpecialistArgs(epochs=2.0), foundation=replace(_FOUNDATION, n_images=1000, steps=300)),
}


# One process per core (up to 2) trains (DDP over gloo) and recaptions (one shard each). On the 2-core VM this
# measured the same per step as one process with two threads (round-0 training 145 s of steps + 13 s of process
# start, against 144 s; a 2,000-image recaption 46 s, against 45-59 s: docs/performance.md); the weights agree
# with one process's to rounding (tests/test_train_ranks.py) and the captions match (tests/test_recaption.py).
PROCS = max(1, min(2, os.cpu_count() or 1))


def loop_config(size: DemoSize, seed: int, foundation: str, procs: int = PROCS) -> LoopConfig:
    """The demo's loop recipe (also what `curator run ablations --out DEMO_OUT` re-creates)."""
    return LoopConfig(rounds=size.rounds, seed=seed, train=replace(size.train, init_from=foundation, nproc=procs),
                      recaption=RecaptionArgs(procs=procs))


def run_demo(out: str | Path = "demo_out", size: str = "default", seed: int = 0) -> int:
    """The whole loop on the synthetic world in `out` (world, foundation, store, checkpoints, report.html).
    `size` is one of SIZES: default, full (the README's trend run) or quick (a smoke run of every step)."""
    from curator.ingest import ingest
    from curator.report import report
    from curator.store import Store
    from curator.world.synthetic import WorldConfig, config_dict, generate_world

    size_name = size
    size = SIZES[size_name]
    out = Path(out).resolve()
    t0 = time.time()
    world_dir = out / "world"
    wcfg = WorldConfig(n_eval=size.n_eval, **size.world)
    marker = world_dir / ".complete"
    key = json.dumps({"n": size.n_pretrain, "seed": seed, "cfg": config_dict(wcfg)}, sort_keys=True, default=str)
    if not (marker.is_file() and marker.read_text() == key):
        print(f"[world] generating {size.n_pretrain} pretraining images (+ SFT, task and eval sets) in {world_dir}")
        generate_world(world_dir, n_pretrain=size.n_pretrain, seed=seed, cfg=wcfg)
        marker.write_text(key)
    else:
        print(f"[world] {world_dir} already generated")
    print("[foundation] vision tower on dense labels of a separate image stream (reused when already built)")
    _, texts = world_texts(world_dir)
    fnd = build_foundation(out / "foundation", wcfg, size.preset, texts, size.foundation)
    rep = foundation_report(fnd)
    print(f"[foundation] {rep['steps']} steps, {rep['seconds']:.0f} s; held-out per-token accuracy "
          + ", ".join(f"{k} {v:.3f}" for k, v in rep["eval_accuracy"].items()))
    store = Store(str(out / "store"), create=True)
    rep = ingest(store, manifest=str(world_dir / "pretrain" / "manifest.jsonl"))
    print("\n".join(rep.summary_lines()))
    summary = store.sql("SELECT round, kind, count(*) AS captions, round(avg(len(string_split(text, ' '))), 1) "
                        "AS mean_words FROM captions GROUP BY ALL ORDER BY ALL")
    print("\n[sql] SELECT round, kind, count(*), avg words FROM captions GROUP BY ALL")
    for r in summary.to_pylist():
        print(f"  round {r['round']}  {r['kind']:<10} {r['captions']:>6} captions  {r['mean_words']:>6} words")

    loop = loop_config(size, seed, fnd)
    sft, ev = str(world_dir / "sft" / "data.json"), str(world_dir / "eval" / "eval.json")
    res = run_self_augment(store, out, sft, ev, loop)
    if size.control:
        from pipelines.compute_control import run_compute_control

        run_compute_control(store, out, sft, ev, loop, epochs_factor=size.control)
    tasks = {n: str(world_dir / "tasks" / n / "data.json") for n in size.specialists}
    sres = run_specialist_augment(store, out, sft, ev, SpecialistConfig(specialists=tasks, loop=loop,
                                                                        finetune=size.finetune))
    path, table = report(store, out / "report.html")
    print("\n== Results (held-out synthetic eval set) ==")
    print(table)
    if res["stopped"]:
        print(res["stopped"])
    print(f"\neach specialist on its own skill vs round {sres['base_round']}'s generalist:")
    for name, v in sorted(sres["specialist_skills"].items()):
        if isinstance(v["base"], (int, float)) and isinstance(v["specialist"], (int, float)):
            print(f"  {name:<10} {v['metric']:<18} {v['base']:7.3f} → {v['specialist']:7.3f}  "
                  f"({v['specialist'] - v['base']:+.3f})")
    for name, why in sorted(sres["unused"].items()):
        print(f"  {name} wrote no data: {why}")
    if sres["metrics"] is None:
        print(f"\nno specialist lifted its own skill: specialist round {sres['round']} was not trained")
    else:
        print(f"\nspecialist round {sres['round']} vs round {sres['base_round']}:")
    for k in sorted(sres["metrics"] or {}):
        a, b = sres["metrics_before"].get(k), sres["metrics"].get(k)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            print(f"  {k:<28} {a:7.3f} → {b:7.3f}  ({b - a:+.3f})")
    print(f"\nreport: {path}")
    print(f"store:  {out / 'store'}   (try: .venv/bin/curator --store {out / 'store'} sql \"SELECT * FROM runs\")")
    print(f"wall time: {time.time() - t0:.0f} s")
    return 0
