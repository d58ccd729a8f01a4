"""CLI: `curator world`, `curator foundation`, `curator run self-augment | specialist-augment | ablations`,
`curator report`, `curator demo`. One function per command; `register` adds them to the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import click

from curator.commands.common import COUNT, POSITIVE, ROUND, check_out_file, open_store
from curator.errors import InputError

OUT_DIR = click.Path(file_okay=False)              # an output directory: may not exist yet, never a file
EPOCHS = click.FloatRange(min=0, min_open=True)


def _world_paths(world: str | None, sft: str | None, eval_: str | None) -> tuple[str, str]:
    if world:
        w = Path(world)
        sft = sft or str(w / "sft" / "data.json")
        eval_ = eval_ or str(w / "eval" / "eval.json")
    if not sft or not eval_:
        raise InputError("the loop needs an SFT set and an eval set", "neither --world nor --sft/--eval was given",
                         "pass --world DIR (from `curator world`) or --sft PATH --eval PATH")
    for flag, path in (("--sft", sft), ("--eval", eval_)):
        if not Path(path).exists():
            raise InputError(f"{flag} {path} not found", f"{'--world names no world' if world else 'no such path'}"
                             " (a world directory holds sft/data.json and eval/eval.json)",
                             "generate one with `curator world --out DIR`, or pass --sft PATH --eval PATH")
    return sft, eval_


def _loop_options(f):
    opts = [
        click.option("--world", type=click.Path(), help="a directory written by `curator world` (gives --sft/--eval)."),
        click.option("--sft", type=click.Path(), help="SFT set (LLaVA JSON / Parquet / WebDataset) for stage 3."),
        click.option("--eval", "eval_", type=click.Path(), help="held-out eval.json with ground truth."),
        click.option("--work", default="curator_work", show_default=True, type=OUT_DIR,
                     help="where checkpoints, builds and eval outputs go."),
        click.option("--preset", default="tiny", show_default=True, help="model preset (vila2_model/presets)."),
        click.option("--foundation", type=click.Path(), default=None,
                     help="start every round from this vision foundation (`curator foundation`); its tower stays frozen."),
        click.option("--vision-from", type=click.Path(exists=True), default=None,
                     help="start every round from this pretrained vision tower (SigLIP / InternViT checkpoint)..."),
        click.option("--llm-from", type=click.Path(exists=True), default=None,
                     help="...and this pretrained LLM (Qwen2 / Llama checkpoint + tokenizer), with a fresh projector."),
        click.option("--nproc", type=POSITIVE, default=1, show_default=True, help="data-parallel training processes."),
        click.option("--sft-in-pretrain", type=click.FloatRange(min=0), default=None,
                     help="copies of the SFT set mixed into stage 2 (default 1 with --foundation, else 0)."),
        click.option("--epochs-pretrain", type=EPOCHS, default=2.0, show_default=True),
        click.option("--epochs-sft", type=EPOCHS, default=6.0, show_default=True),
        click.option("--max-steps", type=POSITIVE, default=None, help="cap optimizer steps per stage (smoke runs)."),
        click.option("--engine", default="transformers", show_default=True,
                     type=click.Choice(["transformers", "vllm", "ray"])),
        click.option("--batch-size", type=POSITIVE, default=64, show_default=True, help="recaption batch size."),
        click.option("--max-new-tokens", type=POSITIVE, default=128, show_default=True),
        click.option("--limit", type=POSITIVE, default=None, help="recaption at most N images per round."),
        click.option("--recaption-procs", type=POSITIVE, default=1, show_default=True,
                     help="local recaption processes, one shard each (transformers engine)."),
        click.option("--eval-limit", type=POSITIVE, default=None, help="grade only the first N eval items."),
        click.option("--device", default="cpu", show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _loop_config(rounds=3, policy="concat", min_gain=None, filters="", **kw):
    from pipelines.self_augment import LoopConfig, RecaptionArgs, TrainArgs

    flt = tuple(x for x in filters.split(",") if x) if filters else LoopConfig().filters
    return LoopConfig(
        rounds=rounds, policy=policy, min_gain=min_gain, seed=kw["seed"], eval_limit=kw["eval_limit"], filters=flt,
        train=TrainArgs(preset=kw["preset"], epochs_pretrain=kw["epochs_pretrain"], epochs_sft=kw["epochs_sft"],
                        max_steps=kw["max_steps"], device=kw["device"], init_from=_foundation(kw.get("foundation")),
                        freeze_vision=bool(kw.get("foundation")), vision_from=kw.get("vision_from"),
                        llm_from=kw.get("llm_from"), nproc=kw.get("nproc") or 1,
                        sft_in_pretrain=kw["sft_in_pretrain"] if kw.get("sft_in_pretrain") is not None
                        else (1.0 if kw.get("foundation") else 0.0)),
        recaption=RecaptionArgs(engine=kw["engine"], batch_size=kw["batch_size"], max_new_tokens=kw["max_new_tokens"],
                                limit=kw["limit"], procs=kw.get("recaption_procs") or 1))


def _foundation(path: str | None) -> str | None:
    """A foundation directory (from `curator foundation`) or its checkpoint directory."""
    if not path:
        return None
    p = Path(path)
    for c in (p / "vision", p):
        if (c / "config.json").is_file():
            return str(c.resolve())
    raise InputError(f"foundation {path} not found", "it holds no checkpoint (config.json)",
                     "build one with `curator foundation --world DIR --out DIR`")


def _print_rounds(rounds: list[dict]) -> None:
    keys = ("caption_precision", "caption_recall", "caption_p_x_r", "caption_length_words", "vqa_acc")
    click.echo("round  " + "  ".join(f"{k:>18}" for k in keys))
    for r in rounds:
        m = r["metrics"]
        click.echo(f"{r['round']:>5}  " + "  ".join(
            f"{m[k]:>18.3f}" if isinstance(m.get(k), (int, float)) else f"{'':>18}" for k in keys))


@click.command("world")
@click.option("--out", required=True, type=OUT_DIR, help="directory to write the world into.")
@click.option("--n", "n_pretrain", type=POSITIVE, default=4000, show_default=True, help="pretraining images.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="WorldConfig YAML/JSON (see examples/synthetic_world.yaml).")
def world_cmd(out, n_pretrain, seed, config_path):
    """Generate the synthetic world: pretraining images + alt-text manifest, SFT, specialist task and eval sets.

    \b
    Example:
      curator world --out world --n 2000 --seed 0
      curator ingest --manifest world/pretrain/manifest.jsonl
    """
    from curator.world.synthetic import generate_world, load_world_config

    cfg = load_world_config(config_path) if config_path else None
    paths = generate_world(out, n_pretrain=n_pretrain, seed=seed, cfg=cfg, progress=True)
    click.echo(f"world written to {paths.root}: " + json.dumps(paths.counts))


@click.command("foundation")
@click.option("--world", required=True, type=click.Path(exists=True, file_okay=False),
              help="a directory written by `curator world` (its config and text are used).")
@click.option("--out", required=True, type=OUT_DIR, help="directory for the foundation checkpoint.")
@click.option("--preset", default="tiny72", show_default=True, help="model preset (vila2_model/presets).")
@click.option("--steps", type=POSITIVE, default=1200, show_default=True)
@click.option("--images", "n_images", type=POSITIVE, default=4000, show_default=True,
              help="separate-stream images for the dense pretraining.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--read-words/--no-read-words", default=False, show_default=True,
              help="also teach the tower which word a token shows (a tower that can read, as SigLIP reads print).")
def foundation_cmd(world, out, preset, steps, n_images, seed, read_words):
    """Pretrain the vision tower on dense per-token labels of a separate stream of the world's images
    (the stand-in for a pretrained SigLIP). Pass the result to `curator run ... --foundation DIR`.

    \b
    Example:
      curator foundation --world world --out foundation
      curator run self-augment --world world --foundation foundation
    """
    from pipelines.foundation import FoundationArgs, build_foundation, foundation_report, world_texts

    cfg, texts = world_texts(world)
    ck = build_foundation(out, cfg, preset, texts, FoundationArgs(steps=steps, n_images=n_images, seed=seed,
                                                                 read_words=read_words),
                          progress=True)
    rep = foundation_report(ck)
    click.echo(f"foundation {ck}: {rep['steps']} steps in {rep['seconds']:.0f} s; held-out accuracy per token "
               + ", ".join(f"{k} {v:.3f}" for k, v in rep["eval_accuracy"].items()))


@click.group("run")
def run_group():
    """Run the VILA² loops (resumable: rerun the same command after a crash).

    \b
    Example:
      curator run self-augment --world world --rounds 3
      curator run specialist-augment --world world --specialists spatial,grounding,ocr
    """


@run_group.command("self-augment")
@click.option("--rounds", type=ROUND, default=3, show_default=True, help="self-augment rounds after round 0.")
@click.option("--policy", default="concat", show_default=True,
              type=click.Choice(["original", "recaption", "concat"]), help="build policy for rounds ≥ 1.")
@click.option("--min-gain", type=float, default=0.005, show_default=True,
              help="stop early when caption precision×recall improves by less than this.")
@click.option("--filters", default="", help="comma list of filters (default: the text filters).")
@_loop_options
@click.pass_context
def self_augment_cmd(ctx, rounds, policy, min_gain, filters, world, sft, eval_, work, **kw):
    """Round 0 on the original captions, then recaption → filter → build → retrain from scratch → eval → tag.

    \b
    Example:
      curator run self-augment --world world --rounds 3 --work runs/exp1
    """
    from pipelines.self_augment import run_self_augment

    sft, eval_ = _world_paths(world, sft, eval_)
    cfg = _loop_config(rounds, policy, min_gain, filters, **kw)
    store = open_store(ctx, create=True)
    res = run_self_augment(store, work, sft, eval_, cfg, log=click.echo)
    _print_rounds(res["rounds"])
    if res["stopped"]:
        click.echo(res["stopped"])
    click.echo(f"pipeline {res['pipeline_id']}: {len(res['ran'])} steps run, {len(res['skipped'])} resumed")


def _specialist_data(specialists: str, specialist_data: tuple[str, ...], world: str | None) -> dict[str, str]:
    """Specialist name → task data path: --specialist-data NAME=PATH first, else the world's tasks/<name>."""
    data = {}
    for item in specialist_data:
        k, sep, v = item.partition("=")
        if not sep or not k or not v:
            raise InputError(f"--specialist-data {item!r} is not NAME=PATH", "each specialist's task data is named",
                             "e.g. --specialist-data charts=charts.json")
        data[k] = v
    for name in [s for s in specialists.split(",") if s]:
        if name not in data:
            if not world:
                raise InputError(f"no task data for specialist {name!r}", "neither --world nor --specialist-data gave it",
                                 f"pass --specialist-data {name}=PATH")
            data[name] = str(Path(world) / "tasks" / name / "data.json")
    for name, path in data.items():
        if not Path(path).exists():
            raise InputError(f"task data for specialist {name!r} not found at {path}", "the path does not exist",
                             f"pass --specialist-data {name}=PATH or a --world that has tasks/{name}")
    return data


@run_group.command("specialist-augment")
@click.option("--specialists", default="spatial,grounding,ocr", show_default=True,
              help="comma list; task data from --world tasks/<name>/data.json or --specialist-data.")
@click.option("--specialist-data", multiple=True, help="NAME=PATH task data for a specialist (repeatable).")
@click.option("--prompts-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="prompts YAML with the specialists' prompt sets and question pools.")
@click.option("--policy", default="concat-specialist-qa", show_default=True,
              type=click.Choice(["specialist-qa", "concat-specialist-qa"]),
              help="first turn = the concat target (keeps the recaption) or the original caption alone (the "
                   "paper's wording; it lost caption P×R on the synthetic world, docs/results.md).")
@click.option("--ft-epochs", type=EPOCHS, default=4.0, show_default=True, help="specialist fine-tune epochs.")
@click.option("--ft-max-steps", type=POSITIVE, default=None)
@click.option("--ft-start", default="pretrain", show_default=True, type=click.Choice(["pretrain", "sft"]),
              help="fine-tune from the base round's stage-2 checkpoint (the method) or from its SFT generalist.")
@click.option("--ft-min-gain", type=float, default=None,
              help="a specialist whose own skill gains less than this over the base generalist writes no data "
                   "(default: every specialist recaptions).")
@_loop_options
@click.pass_context
def specialist_cmd(ctx, specialists, specialist_data, prompts_file, policy, ft_epochs, ft_max_steps, ft_start,
                   ft_min_gain, world, sft, eval_, work, **kw):
    """Fine-tune specialists from the latest generalist's stage-2 checkpoint (or, --ft-start sft, its SFT model)
    on task data mixed with caption and SFT data, recaption with each, build with --policy, retrain the
    generalist from scratch, evaluate.

    \b
    Example:
      curator run specialist-augment --world world --specialists spatial,grounding,ocr --work runs/exp1
    """
    from pipelines.specialist_augment import SpecialistArgs, SpecialistConfig, run_specialist_augment

    sft, eval_ = _world_paths(world, sft, eval_)
    data = _specialist_data(specialists, specialist_data, world)
    if prompts_file:
        from curator.prompts import load_prompts

        load_prompts(prompts_file)      # a malformed file fails here, before any work
    store = open_store(ctx)
    cfg = SpecialistConfig(specialists=data, loop=_loop_config(**kw), prompts_file=prompts_file, policy=policy,
                           finetune=SpecialistArgs(epochs=ft_epochs, max_steps=ft_max_steps, start=ft_start,
                                                   min_skill_gain=ft_min_gain))
    res = run_specialist_augment(store, work, sft, eval_, cfg, log=click.echo)
    if res["metrics"] is None:
        click.echo(f"round {res['round']} not trained: no specialist lifted its own skill by {ft_min_gain:+.3f}")
        return
    click.echo(f"round {res['round']} (specialists) vs round {res['base_round']}:")
    for k in sorted(res["metrics"]):
        a, b = res["metrics_before"].get(k), res["metrics"].get(k)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            click.echo(f"  {k:<28} {a:7.3f} → {b:7.3f}  ({b - a:+.3f})")


@run_group.command("ablations")
@click.option("--out", default="demo_out", show_default=True, type=click.Path(),
              help="a finished `curator demo` directory (world, foundation, store).")
@click.option("--size", default="default", show_default=True, type=click.Choice(["default", "full", "quick"]),
              help="the demo size the directory came from.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs-factor", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="the compute control's pretraining-epoch multiple.")
def ablations_cmd(out, size, seed, epochs_factor):
    """The method's ablations on a demo directory: round-1 target (original / recaption / concat) and the
    compute control (round 0 trained longer).

    \b
    Example:
      curator run ablations --out demo_out --size full
    """
    from pipelines.ablations import run_ablations_on_demo

    click.echo(run_ablations_on_demo(out, size, seed, epochs_factor))


@click.command("report")
@click.option("--out", default="report.html", show_default=True, type=click.Path(dir_okay=False),
              help="HTML file to write.")
@click.option("--gallery", type=COUNT, default=8, show_default=True, help="images in the gallery.")
@click.option("--at", default=None, help="a tag or version to report on (default: now).")
@click.pass_context
def report_cmd(ctx, out, gallery, at):
    """Write the round report (one self-contained HTML file) and print the per-round metrics table.

    \b
    Example:
      curator report --out report.html
    """
    from curator.report import report

    path, table = report(open_store(ctx), check_out_file(out), gallery_size=gallery, at=at)
    click.echo(table)
    click.echo(f"report: {path}")


@click.command("demo")
@click.option("--out", default="demo_out", show_default=True, type=OUT_DIR,
              help="working directory (world, foundation, store, checkpoints, report).")
@click.option("--quick", is_flag=True, help="toy sizes: a smoke run of every step in about 6 minutes.")
@click.option("--full", is_flag=True, help="+ round 3, the OCR and spatial specialists and the compute control.")
@click.option("--seed", type=int, default=0, show_default=True)
def demo_cmd(out, quick, full, seed):
    """The whole VILA² loop on the built-in synthetic world, on CPU (what `make demo` runs). Resumable.

    \b
    Example:
      curator demo --out demo_out --quick
    """
    from pipelines.demo import run_demo

    if quick and full:
        raise InputError("--quick and --full both given", "they pick different sizes", "pass one of them")
    run_demo(out, "quick" if quick else "full" if full else "default", seed)


def register(cli: click.Group) -> None:
    for cmd in (world_cmd, foundation_cmd, run_group, report_cmd, demo_cmd):
        cli.add_command(cmd)
