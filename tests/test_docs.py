"""Docs stay honest: every CLI command has help ending in an example and appears in the README."""
from pathlib import Path

import click
from click.testing import CliRunner

from curator.cli import cli

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: str = ""):
    for name, cmd in sorted(group.commands.items()):
        full = f"{prefix}{name}"
        yield full, cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, full + " ")


COMMANDS = list(_commands(cli))


def test_there_are_commands():
    names = {n for n, _ in COMMANDS}
    for expected in ("ingest", "sql", "build", "builds", "train", "eval", "recaption", "prompts", "filter",
                     "inspect", "show", "diff", "report", "run", "run self-augment", "run specialist-augment"):
        assert expected in names, f"missing command {expected!r}; have {sorted(names)}"


def test_every_command_has_help_with_example():
    runner = CliRunner()
    for name, _ in COMMANDS:
        res = runner.invoke(cli, name.split() + ["--help"])
        assert res.exit_code == 0, (name, res.output)
        assert "Example" in res.output, f"`curator {name} --help` has no example:\n{res.output}"


def test_every_command_is_in_readme():
    for name, _ in COMMANDS:
        assert f"curator {name}" in README, f"`curator {name}` is not documented in README.md"
