"""CLI commands of the engines area: recaption, prompts, filter. Each calls one library function."""
from __future__ import annotations

import click

from curator.commands.common import POSITIVE, ROUND, open_store
from curator.errors import InputError


def register(cli: click.Group) -> None:
    cli.add_command(recaption_cmd)
    cli.add_command(prompts_cmd)
    cli.add_command(filter_cmd)


@click.command("recaption")
@click.option("--round", "round_", type=ROUND, required=True, help="Round to write (round k = captions by the round k-1 model).")
@click.option("--model", required=True, type=click.Path(exists=True, file_okay=False),
              help="Local HF image-text-to-text checkpoint directory (with a chat template).")
@click.option("--prompts", default="vila2", show_default=True, help="Prompt set or prompt id (see `curator prompts`).")
@click.option("--prompts-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A prompts YAML to use instead of the packaged one.")
@click.option("--kind", default="self", show_default=True, help="self, or a specialist name (spatial, grounding, ocr, ...).")
@click.option("--engine", type=click.Choice(["transformers", "vllm", "ray"]), default="transformers", show_default=True)
@click.option("--where", default=None, help="SQL condition over the images table (default: split = 'train').")
@click.option("--limit", type=POSITIVE, default=None, help="At most this many images (the first by image_id).")
@click.option("--shard", default=None, help="i/n: only images whose id hashes to shard i of n.")
@click.option("--batch-size", type=POSITIVE, default=32, show_default=True, help="Images per engine call and per commit.")
@click.option("--max-new-tokens", type=POSITIVE, default=128, show_default=True)
@click.option("--sample/--greedy", "do_sample", default=False, show_default=True, help="Sampling or greedy decoding.")
@click.option("--temperature", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Prompt-draw and sampling seed.")
@click.option("--n", "n", type=int, default=1, show_default=True,
              help="Sampled captions per image (needs --sample); each is its own caption version (sample_idx).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@click.option("--image-size", type=POSITIVE, default=None, help="Resize images to this square size (default: the model's).")
@click.option("--address", default=None, help="Ray cluster address (ray engine); default starts a local one.")
@click.option("--workers", "num_workers", type=POSITIVE, default=1, show_default=True, help="Ray actors / vLLM replicas.")
@click.option("--worker-engine", type=click.Choice(["transformers", "vllm"]), default=None,
              help="Ray engine: the engine each actor loads (default: transformers on CPU, ray.data.llm's vLLM on GPU).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def recaption_cmd(ctx, round_, model, prompts, prompts_file, kind, engine, where, limit, shard, batch_size,
                  max_new_tokens, do_sample, temperature, top_p, seed, n, device, image_size, address, num_workers,
                  worker_engine, quiet):
    """Recaption the round's pretraining images with a checkpoint (exactly-once, one commit per batch).

    Skips images already captioned for this round/kind/captioner/prompt draw and says how many; failures
    are recorded in the `failures` table and retried by the next run.

    \b
    Example:
      curator recaption --round 1 --model runs/r0/sft --prompts vila2 --batch-size 64
      curator recaption --round 1 --model runs/r0/sft --engine ray --shard 0/2
      curator recaption --round 1 --model runs/r0/sft --engine ray --worker-engine vllm --workers 2
      curator recaption --round 1 --model runs/r0/sft --engine vllm --sample --n 4   # 4 candidates per image
    """
    from curator.recaption import format_summary, parse_shard, recaption

    counts = recaption(open_store(ctx), round_, model, prompts=prompts, kind=kind, engine=engine, where=where,
                       limit=limit, shard=parse_shard(shard), batch_size=batch_size, max_new_tokens=max_new_tokens,
                       do_sample=do_sample, temperature=temperature, top_p=top_p, seed=seed, device=device,
                       image_size=image_size, prompts_file=prompts_file, address=address, num_workers=num_workers,
                       worker_engine=worker_engine, n=n, progress=not quiet)
    click.echo(format_summary(counts))


@click.command("prompts")
@click.option("--prompts-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A prompts YAML to list instead of the packaged one.")
def prompts_cmd(prompts_file):
    """List the recaption prompts, the prompt sets, and the specialist question pools.

    \b
    Example:
      curator prompts
    """
    from curator.prompts import load_prompts

    book = load_prompts(prompts_file)
    click.echo(f"prompts ({book.path}):")
    for pid, text in book.prompts.items():
        click.echo(f"  {pid:<11} {text}")
    click.echo("sets (one prompt drawn per image, seeded by image id):")
    for name, ids in book.sets.items():
        click.echo(f"  {name:<11} {', '.join(ids)}")
    click.echo("question pools (specialist-qa build):")
    for kind, qs in book.pools.items():
        for q in qs:
            click.echo(f"  {kind:<11} {q}")


@click.command("filter")
@click.option("--round", "round_", type=ROUND, required=True, help="Round whose recaptions to score.")
@click.option("--filters", "filter_names", default=None,
              help="Comma-separated filters (default: repetition,ngram,length,truncation,charset,template; "
                   "add grounding for the model-in-the-loop score, clip for open_clip).")
@click.option("--threshold", "thresholds", multiple=True,
              help="filter.param=value, e.g. length.max_words=300 (re-applies stored scores; no recompute).")
@click.option("--param", "params", multiple=True, help="Score parameter, e.g. ngram.n=4 or clip.weights=PATH.")
@click.option("--kind", default=None, help="Only captions of this kind (default: all but original).")
@click.option("--model", default=None, type=click.Path(exists=True, file_okay=False),
              help="Captioner checkpoint for the grounding filter (default: its path in the models table).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--batch-size", type=POSITIVE, default=64, show_default=True)
@click.option("--report", is_flag=True, help="After filtering, print counts by filter and reason (latest verdicts).")
@click.option("--report-only", is_flag=True, help="Only print the report; score nothing.")
@click.pass_context
def filter_cmd(ctx, round_, filter_names, thresholds, params, kind, model, device, batch_size, report, report_only):
    """Score a round's recaptions and store one verdict per caption × filter (captions are never deleted).

    The repetition cut stores the cut text as a new caption version (transform=repcut). Changing a
    threshold writes new verdict rows from the stored scores.

    \b
    Example:
      curator filter --round 1
      curator filter --round 1 --threshold length.min_words=8 --report
      curator filter --round 1 --filters grounding --model runs/r0/sft
      curator filter --round 1 --report-only
    """
    from curator.filters import filter_report, parse_thresholds, run_filters

    store = open_store(ctx)
    names = [f.strip() for f in filter_names.split(",") if f.strip()] if filter_names else None
    if not report_only:
        counts = run_filters(store, round_, filters=names, thresholds=parse_thresholds(list(thresholds)),
                             params=parse_thresholds(list(params)), kind=kind, model=model, device=device,
                             batch_size=batch_size, progress=True)
        click.echo(f"run {counts['run_id']}: {counts['captions']} captions, "
                   f"{counts.get('repcut_versions', 0)} repetition-cut versions written")
        for name, c in counts["filters"].items():
            extra = f"  skipped {c['skipped']}" if c.get("skipped") else ""
            click.echo(f"  {name:<11} kept {c['kept']:>7}  rejected {c['rejected']:>7}  "
                       f"computed {c['computed']:>7}  reused {c['reused']:>7}  new verdicts {c['written']:>7}{extra}")
    if report or report_only:
        r = filter_report(store, round_, kind)
        if r["captions"] == 0:
            raise InputError(f"round {round_} has no recaptions{f' of kind {kind}' if kind else ''} to report on",
                             "filters judge recaptions (round ≥ 1), and none are stored for it",
                             f"run `curator recaption --round {round_} …` first, or pick a round from `curator rounds`")
        click.echo(f"round {round_}: {r['captions']} captions, {r['accepted']} accepted (no latest verdict rejects)")
        for row in r["by_reason"]:
            if not row["keep"]:
                click.echo(f"  {row['filter']:<11} {row['n']:>7}  {row['reason']}")
