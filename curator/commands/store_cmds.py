"""CLI for the store area: ingest, sql, build, builds, tag, rounds. Each command wraps one library call;
each command's help ends with an example."""
from __future__ import annotations

import json

import click

from curator.build import POLICIES
from curator.commands.common import COUNT, POSITIVE, ROUND, check_out_file
from curator.errors import InputError

SYNTHETIC_MAX = 100_000_000


def _example(*lines: str) -> str:
    """Help epilog: click prints it after the options, so every --help ends with the example."""
    return "\b\nExample:\n" + "\n".join("  " + line for line in lines)


def _read_sql(path: str) -> str:
    """A policy SELECT from a file (UTF-8 text)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise InputError(f"--sql {path} is not UTF-8 text", f"byte {e.start} cannot be decoded",
                         "save the policy as a plain-text .sql file") from None
    except OSError as e:
        raise InputError(f"cannot read --sql {path}", e.strerror or str(e), "pass a readable .sql file") from None


def _at(at: str | None, version: int | None):
    if at and version is not None:
        raise InputError("--at and --version both given", "they name two different past states", "pass one of them")
    return version if version is not None else at


@click.command("ingest", epilog=_example('curator ingest --folder photos/ --captions photos/captions.jsonl', 'curator ingest --synthetic 1000 --seed 0'))
@click.option("--folder", type=click.Path(exists=True, file_okay=False), help="A folder of images (recursive); captions from --captions or <stem>.txt.")
@click.option("--captions", type=click.Path(exists=True, dir_okay=False), help="Captions file for --folder: .jsonl/.csv/.parquet with file + caption.")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False), help="A .jsonl/.parquet manifest: file (relative to it) + caption [+ meta].")
@click.option("--hf", type=click.Path(exists=True), help="A local Hugging Face dataset (save_to_disk dir, parquet or imagefolder).")
@click.option("--image-column", default="image", show_default=True, help="Image column for --hf.")
@click.option("--caption-column", default=None, help="Caption column for --hf (default: caption/text/alt_text).")
@click.option("--webdataset", multiple=True, type=click.Path(), help="WebDataset .tar shards (img2dataset layout); a folder or glob works.")
@click.option("--synthetic", type=click.IntRange(1, SYNTHETIC_MAX), default=None, help="Generate N synthetic-world images (with --seed).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --synthetic.")
@click.option("--split", default="train", show_default=True, help="images.split for what lands (train = pretraining pool).")
@click.option("--batch-size", type=POSITIVE, default=2048, show_default=True, help="Rows per commit.")
@click.option("--max-pixels", type=POSITIVE, default=None, help="Decompression-bomb cap (default 40,000,000 pixels).")
@click.option("--json", "as_json", is_flag=True, help="Print the run's counts as JSON instead of the summary.")
@click.pass_context
def ingest_cmd(ctx, folder, captions, manifest, hf, image_column, caption_column, webdataset, synthetic, seed,
               split, batch_size, max_pixels, as_json):
    """Put images and their original captions (round 0) into the store.

    Bad files never stop the run: each is counted with its reason in the summary and in the run's
    counts (SELECT counts FROM runs). Re-running the same input adds nothing.
    """
    from curator.commands.common import open_store
    from curator.ingest import DEFAULT_MAX_PIXELS, ingest

    store = open_store(ctx, create=True)
    rep = ingest(store, folder=folder, captions=captions, manifest=manifest, hf=hf, image_column=image_column,
                 caption_column=caption_column, webdataset=list(webdataset) or None, synthetic=synthetic, seed=seed,
                 split=split, batch_size=batch_size, max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
                 progress=not as_json)
    if as_json:
        click.echo(json.dumps(dict(rep.counts, run_id=rep.run_id), sort_keys=True))
    else:
        click.echo("\n".join(rep.summary_lines()))


@click.command("sql", epilog=_example('curator sql "SELECT round, kind, count(*) FROM captions GROUP BY ALL ORDER BY ALL"', 'curator sql --at round-0 "SELECT * FROM captions LIMIT 5" --out sample.csv'))
@click.argument("query")
@click.option("--at", default=None, help="Read a tagged state, e.g. round-2.")
@click.option("--version", type=COUNT, default=None, help="Read store version N (captions table version).")
@click.option("--out", type=click.Path(), default=None, help="Write the result to a file instead of stdout.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default=None,
              help="Output format (default: from --out's extension, else table).")
@click.option("--max-rows", type=POSITIVE, default=50, show_default=True, help="Rows shown in table format.")
@click.pass_context
def sql_cmd(ctx, query, at, version, out, fmt, max_rows):
    """Run one read-only SELECT over the store's tables.

    Tables: images, captions, verdicts, runs, models, builds, failures; views: latest_verdicts and
    rejected_captions (the acceptance rule). Writes, COPY, ATTACH,
    INSTALL/LOAD, SET/PRAGMA, file readers and multiple statements are refused; the store is never modified.
    """
    from curator import sql as sqlmod
    from curator.commands.common import open_store

    f = sqlmod.infer_format(out, fmt)
    if f == "parquet" and not out:
        raise InputError("--format parquet needs --out", "Parquet is binary", "pass --out result.parquet")
    if out:
        check_out_file(out)          # before the query runs: a bad path fails fast
    table = sqlmod.run_sql(open_store(ctx), query, at=_at(at, version))
    if out:
        sqlmod.write(table, out, f)
        click.echo(f"wrote {table.num_rows} rows to {out}", err=True)
    else:
        click.echo(sqlmod.render(table, f, max_rows=max_rows), nl=False)


@click.command("build", epilog=_example('curator build --round 1 --policy concat --format parquet --out builds/r1', 'curator build --policy concat --show-sql > my_policy.sql', 'curator build --from-manifest builds/r1/manifest.json --out builds/r1-again'))
@click.option("--round", "round_", type=ROUND, default=None, help="Round N: uses captions with round <= N.")
@click.option("--policy", type=click.Choice(list(POLICIES)), default="concat",
              show_default=True, help="Named policy (SQL; see --show-sql).")
@click.option("--sql", "sql_file", type=click.Path(), default=None, help="Your own policy SELECT from FILE (replaces --policy).")
@click.option("--show-sql", is_flag=True, help="Print the policy's SQL and exit.")
@click.option("--prompts-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Prompts YAML whose question pools add to the built-in ones (specialist policies).")
@click.option("--format", "fmt", type=click.Choice(["llava", "parquet", "webdataset"]), default="parquet", show_default=True)
@click.option("--out", type=click.Path(), default=None, help="Output directory (default builds/round<N>-<policy>-<format>-<id>).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed (specialist shuffling / question draw).")
@click.option("--at", default=None, help="Build from a tagged state, e.g. round-1.")
@click.option("--rows-per-shard", type=POSITIVE, default=100_000, show_default=True, help="Rows per Parquet file / tar shard.")
@click.option("--from-manifest", type=click.Path(), default=None, help="Reproduce a recorded build byte for byte.")
@click.option("--overwrite", is_flag=True, help="Replace a previous build's output directory (nothing else is ever replaced).")
@click.pass_context
def build_cmd(ctx, round_, policy, sql_file, show_sql, prompts_file, fmt, out, seed, at, rows_per_shard, from_manifest,
              overwrite):
    """Materialise the training set for round N from a policy.

    Policies: original | recaption | concat (original + latest accepted recaption; default) |
    specialist-qa. An image without an accepted recaption falls back to its original caption (counted).
    """
    from curator import build as b
    from curator.commands.common import open_store

    if show_sql:
        click.echo(b.policy_sql(policy, prompts_file), nl=False)
        return
    store = open_store(ctx)
    if from_manifest:
        res = b.build_from_manifest(store, from_manifest, out=out, overwrite=overwrite)
        click.echo(f"rebuilt {res.build_id}: {res.rows} rows, same bytes (content {res.manifest['content_hash'][:16]}) "
                   f"→ {res.out_dir}")
        return
    if round_ is None:
        raise InputError("--round is required", "a build is for one round's retraining", "e.g. --round 1")
    sql = None
    if sql_file:
        sql = _read_sql(sql_file)
        if ctx.get_parameter_source("policy") == click.core.ParameterSource.DEFAULT:
            policy = None   # recorded as "custom"
    res = b.build(store, round_, policy, fmt, out=out, sql=sql, seed=seed, at=at, rows_per_shard=rows_per_shard,
                  prompts_file=prompts_file,
                  overwrite=overwrite)
    click.echo("\n".join(b.summary_lines(res)))


@click.command("builds", epilog=_example('curator builds'))
@click.pass_context
def builds_cmd(ctx):
    """List the builds recorded in the store.
    """
    from curator import sql as sqlmod
    from curator.build import list_builds
    from curator.commands.common import open_store

    click.echo(sqlmod.render(list_builds(open_store(ctx)), "table"), nl=False)


@click.command("tag", epilog=_example('curator tag round-0 && curator sql --at round-0 "SELECT count(*) FROM captions"'))
@click.argument("name")
@click.option("--replace", is_flag=True, help="Move an existing tag to the current versions.")
@click.pass_context
def tag_cmd(ctx, name, replace):
    """Tag the current version of every table (e.g. round-2) for time travel with --at.
    """
    from curator.commands.common import open_store

    v = open_store(ctx).tag(name, replace=replace)
    click.echo(f"tagged {name}: " + ", ".join(f"{t}@{n}" for t, n in v.items()))


@click.command("rounds", epilog=_example('curator rounds'))
@click.pass_context
def rounds_cmd(ctx):
    """List tags (completed rounds) with the table versions they name, and the current versions.
    """
    from curator.commands.common import open_store

    store = open_store(ctx)
    for name, vs in store.tag_versions().items():
        click.echo(f"{name:<16}" + " ".join(f"{t}@{v}" for t, v in vs.items()))
    click.echo(f"{'(current)':<16}" + " ".join(f"{t}@{v}" for t, v in store.versions().items()))


@click.command("compact", epilog=_example("curator compact"))
@click.pass_context
def compact_cmd(ctx):
    """Merge each table's small fragments (many small commits slow scans down); run it between rounds.

    Old versions stay readable, so tags and --at keep working.
    """
    from curator.commands.common import open_store

    store = open_store(ctx)
    before = store.versions()
    after = store.compact()
    changed = [t for t in after if after[t] != before[t]]
    click.echo(f"compacted {', '.join(changed) or 'nothing (already one fragment per table)'}; versions: "
               + " ".join(f"{t}@{v}" for t, v in after.items()))


def register(cli: click.Group) -> None:
    for c in (ingest_cmd, sql_cmd, build_cmd, builds_cmd, tag_cmd, rounds_cmd, compact_cmd):
        cli.add_command(c)
