"""CLI commands for this area (see curator/cli.py). Each command's help ends with an example."""
import click


def register(cli: click.Group) -> None:
    pass
