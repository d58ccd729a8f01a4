"""CLI for the model area: train, train-specialist, eval, models. Each command wraps one function of
curator/training.py; each command's help ends with an example."""
from __future__ import annotations

import json

import click

from curator.commands.common import POSITIVE, ROUND, open_store

OUT_DIR = click.Path(file_okay=False)
EPOCHS = click.FloatRange(min=0, min_open=True)


def _example(*lines: str) -> str:
    return "\b\nExample:\n" + "\n".join("  " + line for line in lines)


@click.command("train", epilog=_example(
    "curator train --data BUILD_ID --sft world/sft/data.json --out models/round-0",
    "curator train --data builds/r1 --sft world/sft/data.json --out models/r1 --round 1 --recipe round0-cpu",
    "curator train --data BUILD_ID --sft world/sft/data.json --out models/r0 --nproc 2",
    "curator train --data BUILD_ID --sft sft.json --out models/r0 --vision-from siglip --llm-from qwen2",
    "torchrun --nproc_per_node 8 -m curator.cli train --data BUILD_ID --sft sft.json --out m --recipe gpu-8b"))
@click.option("--data", required=True, help="Pretraining set: a build_id (see `curator builds`) or a build output path.")
@click.option("--sft", required=True, type=click.Path(exists=True), help="SFT set (LLaVA data.json or a build dir).")
@click.option("--out", "out_dir", required=True, type=OUT_DIR, help="Checkpoint directory (one subdir per stage).")
@click.option("--round", "round_", type=ROUND, default=None, help="Round of this model (default: the build's round).")
@click.option("--recipe", default=None, help="YAML recipe: a name in vila2_model/presets (round0-cpu, gpu-8b) or a path.")
@click.option("--preset", default=None, help="Model preset (see `curator models --presets`); overrides the recipe.")
@click.option("--epochs-align", type=EPOCHS, default=None)
@click.option("--epochs-pretrain", type=EPOCHS, default=None)
@click.option("--epochs-sft", type=EPOCHS, default=None)
@click.option("--batch-size", type=POSITIVE, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--device", default=None, help="cpu | cuda (bf16 autocast is on by default on GPU).")
@click.option("--max-steps", type=POSITIVE, default=None, help="Cap each stage at N steps (smoke runs).")
@click.option("--parent", default="", help="model_id to record as the align stage's parent (lineage across rounds).")
@click.option("--nproc", type=POSITIVE, default=None,
              help="Data-parallel training processes on this machine (gloo on CPU, nccl on GPU); "
                   "--batch-size stays the global batch. Under torchrun, leave it out.")
@click.option("--micro-batch-size", type=POSITIVE, default=None,
              help="Samples per process per forward pass; a smaller number than the per-process batch accumulates.")
@click.option("--vision-from", type=click.Path(exists=True), default=None,
              help="Start from a pretrained vision tower: a local SigLIP or InternViT checkpoint (with --llm-from).")
@click.option("--llm-from", type=click.Path(exists=True), default=None,
              help="Start from a pretrained LLM: a local Qwen2 or Llama checkpoint with its tokenizer.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def train_cmd(ctx, data, sft, out_dir, round_, recipe, preset, epochs_align, epochs_pretrain, epochs_sft, batch_size,
              seed, device, max_steps, parent, nproc, micro_batch_size, vision_from, llm_from, quiet):
    """Train a VLM from scratch: align (projector) -> pretrain (projector + LLM + vision) -> SFT (all).

    Every stage's checkpoint is an HF directory with its content hash as model_id, registered in the
    `models` table with round, stage, build and parent. Rerunning with the same arguments reuses
    finished stages. With --nproc N (or under torchrun) training is data-parallel; only rank 0 writes
    checkpoints and only it touches the store.
    """
    import os

    from curator.training import train

    store = open_store(ctx) if os.environ.get("RANK", "0") == "0" else None   # torchrun: rank 0 alone
    res = train(store, out_dir, data, sft, round=round_, recipe=recipe, parent_model_id=parent,
                preset=preset, epochs_align=epochs_align, epochs_pretrain=epochs_pretrain, epochs_sft=epochs_sft,
                batch_size=batch_size, seed=seed, device=device, max_steps=max_steps, nproc=nproc,
                micro_batch_size=micro_batch_size, vision_from=vision_from, llm_from=llm_from,
                progress=False if quiet else None)
    for stage, mid in res["models"].items():
        click.echo(f"{stage:<9} {mid[:16]}  {res['paths'][stage]}")


@click.command("train-specialist", epilog=_example(
    "curator train-specialist --from MODEL_ID --task world/tasks/spatial --role spatial "
    "--captions world/sft/data.json --out models/spatial"))
@click.option("--from", "stage2", required=True, help="Stage-2 (pretrain) checkpoint: model_id or path.")
@click.option("--task", "task_data", required=True, type=click.Path(exists=True), help="The specialist's task set.")
@click.option("--role", required=True, help="Specialist name: spatial | grounding | ocr | your own.")
@click.option("--captions", "caption_data", type=click.Path(exists=True), default=None,
              help="Caption/SFT data mixed in so the specialist keeps writing prose.")
@click.option("--mix-ratio", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Caption samples per task sample.")
@click.option("--sft", "sft_data", type=click.Path(), default=None,
              help="The SFT set (LLaVA JSON), mixed in whole so the specialist still answers like the generalist.")
@click.option("--out", "out_dir", required=True, type=OUT_DIR)
@click.option("--epochs", type=EPOCHS, default=None)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--seed", type=int, default=None)
@click.option("--device", default=None)
@click.option("--max-steps", type=POSITIVE, default=None)
@click.option("--nproc", type=POSITIVE, default=None, help="Data-parallel fine-tuning processes on this machine.")
@click.option("--freeze-vision", is_flag=True, default=False,
              help="Keep the vision tower frozen, as the generalist trained with a pretrained tower (a foundation).")
@click.pass_context
def train_specialist_cmd(ctx, stage2, task_data, role, caption_data, mix_ratio, sft_data, out_dir, epochs, lr, seed,
                         device, max_steps, nproc, freeze_vision):
    """Fine-tune a specialist from a stage-2 checkpoint on task data mixed with caption and SFT data (VILA² §2)."""
    from curator.training import train_specialist

    res = train_specialist(open_store(ctx), out_dir, stage2, task_data, role, caption_data=caption_data,
                           mix_ratio=mix_ratio, sft_data=sft_data, epochs=epochs, lr=lr, seed=seed, device=device,
                           max_steps=max_steps, nproc=nproc, freeze_vision=freeze_vision)
    click.echo(f"{role} {res['model_id'][:16]}  {res['path']}")


@click.command("eval", epilog=_example("curator eval --model models/round-0/sft --eval world/eval/eval.json",
                                       "curator eval --model 3f2a9c --eval world/eval/eval.json --json"))
@click.option("--model", required=True, help="A checkpoint directory or a model_id (prefix) from `curator models`.")
@click.option("--eval", "eval_json", required=True, type=click.Path(), help="The world's eval/eval.json.")
@click.option("--out", "out_json", type=click.Path(), default=None, help="Metrics + predictions JSON (default: CKPT/eval.json).")
@click.option("--limit", type=POSITIVE, default=None, help="Only the first N eval items.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--no-grounding", is_flag=True, help="Skip the grounded-narration prompt.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics as JSON.")
@click.pass_context
def eval_cmd(ctx, model, eval_json, out_json, limit, device, no_grounding, as_json):
    """Grade a model on the held-out synthetic eval set: caption precision / recall / P x R / length
    (vs. the alt-text), VQA accuracy per skill, grounding IoU. Metrics go to the models table and a JSON file."""
    from curator.training import evaluate

    res = evaluate(open_store(ctx), model, eval_json, out_json=out_json, limit=limit, device=device,
                   grounding=not no_grounding)
    if as_json:
        click.echo(json.dumps({"model_id": res["model_id"], "metrics": res["metrics"], "alt_text": res["alt_text"]}))
        return
    m, a = res["metrics"], res["alt_text"]
    click.echo(f"model {res['model_id'][:16]}  ({m['n_eval']} eval images)")
    click.echo(f"{'captions':<10} {'precision':>9} {'recall':>7} {'P x R':>7} {'words':>6}")
    for name, d in (("alt-text", a), ("model", m)):
        click.echo(f"{name:<10} {d.get('caption_precision', 0):>9.3f} {d.get('caption_recall', 0):>7.3f} "
                   f"{d.get('caption_p_x_r', 0):>7.3f} {d.get('caption_length_words', 0):>6.1f}")
    for k in sorted(k for k in m if k.startswith("vqa_acc")):
        click.echo(f"{k:<24} {m[k]:.3f}")
    if "grounding_iou" in m:
        click.echo(f"{'grounding_iou':<24} {m['grounding_iou']:.3f}")
    click.echo(f"written: {res['json']}")


@click.command("models", epilog=_example("curator models", "curator models --presets"))
@click.option("--presets", is_flag=True, help="List the model presets and training recipes instead.")
@click.pass_context
def models_cmd(ctx, presets):
    """List registered models (lineage + headline metrics), or the available presets and recipes."""
    if presets:
        from vila2_model.presets import list_presets, list_recipes, load_preset

        for name in list_presets():
            p = load_preset(name)
            click.echo(f"preset  {name:<24} {p['image_size']:>4}px  "
                       f"vision {p['vision']['num_hidden_layers']}x{p['vision']['hidden_size']}  "
                       f"llm {p['text']['num_hidden_layers']}x{p['text']['hidden_size']}"
                       + ("  (GPU only)" if p.get("gpu_only") else ""))
        for name in list_recipes():
            click.echo(f"recipe  {name}")
        return
    from curator.training import list_models

    rows = list_models(open_store(ctx)).to_pylist()
    if not rows:
        click.echo("no models registered yet (curator train ...)")
    for r in rows:
        m = json.loads(r["metrics"] or "{}")
        score = f"P×R {m['caption_p_x_r']:.3f}" if "caption_p_x_r" in m else ""
        click.echo(f"{r['model_id'][:16]}  round {r['round'] if r['round'] is not None else '-':<2} "
                   f"{r['role']:<11} {r['stage']:<10} {r['preset']:<6} parent {(r['parent_model_id'] or '-')[:8]:<8} {score}")


def register(cli: click.Group) -> None:
    for cmd in (train_cmd, train_specialist_cmd, eval_cmd, models_cmd):
        cli.add_command(cmd)
