"""CLI: `inspect` (FiftyOne dataset + App), `show` (one image's caption versions), `diff` (round vs round).
One function per command; `register` adds them to the CLI."""
from __future__ import annotations

import click

from curator.commands.common import COUNT, ROUND, open_store
from curator.errors import ROUND_MAX, InputError


def _rounds(text: str) -> list[int]:
    """`--rounds 0,1,2` → [0, 1, 2]."""
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        out = []
    if not out or any(not 0 <= r <= ROUND_MAX for r in out):
        raise InputError(f"invalid --rounds {text!r}", "expected comma-separated round numbers (0 = original)",
                         "e.g. --rounds 0,1,2")
    return out


def _chosen_rounds(ctx: click.Context, rounds: str, up_to: int | None) -> list[int]:
    """--round N (rounds 0..N, as every other command takes --round) or --rounds LIST, not both."""
    if up_to is None:
        return _rounds(rounds)
    if ctx.get_parameter_source("rounds") != click.core.ParameterSource.DEFAULT:
        raise InputError("--round and --rounds both given", "--round N means rounds 0 to N", "pass one of them")
    return list(range(up_to + 1))


def _serve(ins, dataset, port: int, address: str, name: str) -> None:
    """Serve the FiftyOne App until Ctrl-C (not until the last browser tab closes)."""
    session = ins.launch(dataset, port=port, address=address)
    click.echo(f"FiftyOne App: {ins.app_url(address, port, name)}  (Ctrl-C to stop)")
    try:
        session.wait(-1)
    except KeyboardInterrupt:
        click.echo("App stopped.")


@click.command("inspect")
@click.option("--rounds", default="0,1,2", show_default=True, help="Rounds whose caption versions become fields.")
@click.option("--round", "up_to", type=ROUND, default=None,
              help="Rounds 0 to N (as every other command takes --round); replaces --rounds.")
@click.option("--where", default=None, help="SQL condition on the images table choosing the sample.")
@click.option("--limit", default=500, show_default=True, type=COUNT, help="At most this many images (0 = all matching).")
@click.option("--kind", "kinds", multiple=True, help="Only these caption kinds (repeatable; default all).")
@click.option("--name", default="curator", show_default=True, help="FiftyOne dataset name (persistent; reruns update it).")
@click.option("--port", default=5151, show_default=True, type=click.IntRange(1, 65535), help="App port.")
@click.option("--address", default="127.0.0.1", show_default=True, help="App address (0.0.0.0 to serve remotely).")
@click.option("--no-launch", is_flag=True, help="Build/update the dataset only; do not serve the App.")
@click.option("--cache-dir", default=None, help="Where image files are written for FiftyOne "
              "[default: ~/.cache/vila2-curator/images].")
@click.option("--at", default=None, help="Read the store as of a tag (e.g. round-1) or version number.")
@click.option("--database-uri", default=None, envvar="FIFTYONE_DATABASE_URI",
              help="Use this MongoDB instead of FiftyOne's bundled mongod (env FIFTYONE_DATABASE_URI).")
@click.pass_context
def inspect_cmd(ctx, rounds, up_to, where, limit, kinds, name, port, address, no_launch, cache_dir, at, database_uri):
    """Look at images next to every round's captions in the FiftyOne App.

    Builds (or updates, keyed by image_id) a FiftyOne dataset from a SQL sample of the store: one
    sample per image, a field per caption version (r0_original, r1_self, r2_spatial, …), verdicts as
    tags (rejected:r1_self:repetition), and for synthetic images each caption's precision, recall and
    hallucinated facts. Then serves the App until Ctrl-C.

    \b
    Example:
      curator inspect --round 1 --no-launch
      curator inspect --rounds 0,1,2 --where "source = 'synthetic'" --limit 200
      curator inspect --no-launch --name round2 --rounds 2 --kind self --kind spatial
    """
    from curator import inspect as ins

    chosen = _chosen_rounds(ctx, rounds, up_to)
    res = ins.build_dataset(open_store(ctx), rounds=chosen, where=where, limit=limit or None, name=name,
                            cache_dir=cache_dir, database_uri=database_uri, kinds=list(kinds) or None, at=at)
    click.echo(f"dataset {res.name}: {res.added} added, {res.updated} updated, "
               f"{len(res.dataset)} samples; caption fields: {', '.join(res.caption_fields) or '-'}")
    if no_launch:
        click.echo(f"not launched; to view: curator inspect --name {res.name} (or fiftyone app launch {res.name})")
        return
    _serve(ins, res.dataset, port, address, res.name)


@click.command("show")
@click.argument("image_id")
@click.option("--at", default=None, help="Read the store as of a tag (e.g. round-1) or version number.")
@click.pass_context
def show_cmd(ctx, image_id, at):
    """Print every caption version of one image with provenance and verdicts.

    IMAGE_ID is the image's sha256 (a unique prefix of 6+ characters is enough).

    \b
    Example:
      curator show 3fa9c1d2
    """
    from curator.show import render_show, show

    click.echo(render_show(show(open_store(ctx), image_id, at=at)))


@click.command("diff")
@click.option("--round", "rounds", type=ROUND, multiple=True, required=True,
              help="Give twice: the earlier round A, then round B.")
@click.option("--kind", default="self", show_default=True, help="Caption kind for rounds ≥ 1 (round 0 is 'original').")
@click.option("--where", default=None, help="SQL condition on the images table.")
@click.option("--limit", default=20, show_default=True, type=COUNT,
              help="List at most this many images (the drift summary covers all).")
@click.option("--at", default=None, help="Read the store as of a tag (e.g. round-1) or version number.")
@click.pass_context
def diff_cmd(ctx, rounds, kind, where, limit, at):
    """Per-image caption changes from round A to round B, and the aggregate drift.

    Compares the latest round×kind version per image: length in words and text; on synthetic images
    recall, precision and the facts (true and hallucinated) gained and lost, graded against ground truth.

    \b
    Example:
      curator diff --round 0 --round 1 --limit 5
    """
    from curator.show import diff, render_diff

    if len(rounds) != 2:
        raise InputError(f"diff got {len(rounds)} --round value(s)", "it compares exactly two rounds",
                         "e.g. curator diff --round 0 --round 1")
    click.echo(render_diff(diff(open_store(ctx), rounds[0], rounds[1], kind=kind, where=where, at=at), limit=limit))


def register(cli: click.Group) -> None:
    for cmd in (inspect_cmd, show_cmd, diff_cmd):
        cli.add_command(cmd)
