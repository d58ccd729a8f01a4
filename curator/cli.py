"""`curator` — the thin CLI over the Python API. Each command calls one library function.

Commands live in curator/commands/*.py (one file per area) and register themselves here.
Errors: a CuratorError becomes one line `Error: what — why — how to fix` and exit code 1.
"""
from __future__ import annotations

import sys

import click

from curator.commands import inspect_cmds, model_cmds, recaption_cmds, run_cmds, store_cmds
from curator.commands.common import DEFAULT_STORE, STORE_ENV
from curator.errors import CuratorError


class CuratorGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CuratorError as e:
            click.echo(f"Error: {e.one_line()}", err=True)
            sys.exit(1)


@click.group(cls=CuratorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", "store_uri", envvar=STORE_ENV, default=DEFAULT_STORE, show_default=True,
              help=f"Store location: a local path or s3://bucket/prefix (env {STORE_ENV}).")
@click.pass_context
def cli(ctx: click.Context, store_uri: str):
    """vila2-curator: versioned caption store and the VILA² recaptioning loop.

    \b
    Example:
      curator ingest --synthetic 1000 --seed 0 && curator sql "SELECT count(*) FROM captions"
    """
    ctx.ensure_object(dict)
    ctx.obj["store_uri"] = store_uri


for _m in (store_cmds, model_cmds, recaption_cmds, inspect_cmds, run_cmds):
    _m.register(cli)


def main():
    cli(prog_name="curator")


if __name__ == "__main__":
    main()
