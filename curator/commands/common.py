"""What every command shares: the store option's default, `open_store`, the click types for rounds and counts,
and the check that an output file can be written (no command imports curator.cli)."""
from __future__ import annotations

import os

import click

from curator.errors import ROUND_MAX, InputError

DEFAULT_STORE = "./curator_store"
STORE_ENV = "CURATOR_STORE"
ROUND = click.IntRange(0, ROUND_MAX)        # a round number: 0 = the original captions
POSITIVE = click.IntRange(min=1)            # batch sizes, shard sizes, steps
COUNT = click.IntRange(min=0)               # limits and counts where 0 is meaningful


def open_store(ctx: click.Context, create: bool = False):
    """The Store for --store (imported lazily so `--help` stays fast)."""
    from curator.store import Store

    return Store(ctx.obj["store_uri"], create=create)


def check_out_file(path: str, flag: str = "--out") -> str:
    """An output file must go into an existing directory and must not be a directory itself."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise InputError(f"{flag} {path} is a directory", "it names the file to write", f"pass {flag} {path}/FILE")
    if not os.path.isdir(parent):
        raise InputError(f"{flag} {path}: directory {parent} does not exist",
                         "curator writes output files only into existing directories",
                         f"create it first (mkdir -p {parent}) or pick another path")
    return path
