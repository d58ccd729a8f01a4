"""Docs stay honest: every CLI command has help ending in an example, the README's command table and the CLI
list the same commands, the README stays short, and its links point at files that exist."""
import re
from pathlib import Path

import click
from click.testing import CliRunner

from curator.cli import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


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


def _readme_command_table() -> list[str]:
    block = README.split("<!-- commands:start -->")[1].split("<!-- commands:end -->")[0]
    return re.findall(r"^\| `curator ([a-z -]+?)` \|", block, flags=re.M)


def test_readme_command_table_and_cli_agree():
    table = _readme_command_table()
    assert len(table) == len(set(table)), f"a command is listed twice: {table}"
    cli_names = {n for n, _ in COMMANDS}
    assert sorted(cli_names - set(table)) == [], "commands missing from the README's table"
    assert sorted(set(table) - cli_names) == [], "the README's table lists commands the CLI does not have"


def test_readme_is_short_and_its_links_exist():
    assert len(README.splitlines()) <= 300
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_readme_speaks_of_the_toolkit_not_of_how_it_was_made():
    making = (r"\bengineers?\b|\bissue \d+|\bthe issue\b|#\d+\b|\bthe lead\b|\blead probes\b|\bother agents\b"
              r"|\b(this|that|one|every|first|second|third|last|earlier|previous|later) sessions?\b")
    pages = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    code = [p for pkg in ("curator", "pipelines", "vila2_model", "bench", "experiments") for p in (ROOT / pkg).rglob("*.py")]
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in pages + code
             for m in re.finditer(making, p.read_text(encoding="utf-8"), flags=re.I)]
    assert found == [], f"words about the making of the project: {found}"
