"""What every command shares: the store option's default and `open_store` (no command imports curator.cli)."""
from __future__ import annotations

import click

DEFAULT_STORE = "./curator_store"
STORE_ENV = "CURATOR_STORE"


def open_store(ctx: click.Context, create: bool = False):
    """The Store for --store (imported lazily so `--help` stays fast)."""
    from curator.store import Store

    return Store(ctx.obj["store_uri"], create=create)
