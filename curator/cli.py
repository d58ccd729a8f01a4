"""`curator` — the thin CLI over the Python API. Each command calls one library function.

Commands live in curator/commands/*.py (one file per area) and register themselves here.
Errors: every failure is one stderr line `Error: what — why — how to fix` and exit code 1 — a CuratorError from
the library, a command line click cannot parse, and, as a last resort, an unexpected exception (a bug), whose
traceback goes to a file named in the line (CURATOR_DEBUG=1 prints it instead).
"""
from __future__ import annotations

import os
import sys
import tempfile
import traceback

import click

from curator.commands import inspect_cmds, model_cmds, recaption_cmds, run_cmds, store_cmds
from curator.commands.common import DEFAULT_STORE, STORE_ENV
from curator.errors import CuratorError

DEBUG_ENV = "CURATOR_DEBUG"


def _fail(line: str, code: int = 1):
    click.echo(f"Error: {line}", err=True)
    sys.exit(code)


def _usage_line(e: click.UsageError) -> str:
    """click's usage errors (several lines, exit 2) as one line."""
    where = e.ctx.command_path if e.ctx else "curator"
    what = " ".join(e.format_message().split()).rstrip(".")
    return f"{what} — the command line does not match `{where}`'s arguments — see `{where} --help`"


def _bug_line(e: BaseException) -> str:
    """Last resort for an exception no code turned into an error message: one line, traceback to a file."""
    fd, path = tempfile.mkstemp(prefix="curator-traceback-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write("".join(traceback.format_exception(e)))
    msg = " ".join(str(e).split())[:300] or "(no message)"
    return (f"unexpected {type(e).__name__}: {msg} — this is a bug in curator, not in your input "
            f"(traceback in {path}) — rerun with {DEBUG_ENV}=1 to print it, and report it with the command line")


class CuratorGroup(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except CuratorError as e:
            _fail(e.one_line())
        except click.exceptions.NoArgsIsHelpError as e:   # `curator`, `curator run`: the help is the answer
            click.echo(e.ctx.get_help())
            sys.exit(0)
        except click.UsageError as e:
            _fail(_usage_line(e))
        except click.ClickException as e:
            _fail(f"{e.format_message()} — the command could not start — see `curator --help`")
        except (click.Abort, KeyboardInterrupt):
            _fail("interrupted — Ctrl-C — rerun the same command: committed work is kept and skipped", 130)
        except BrokenPipeError:
            sys.stderr.close()          # the reader went away (`curator sql … | head`): nothing more to say
            sys.exit(1)
        except Exception as e:
            if os.environ.get(DEBUG_ENV):
                raise
            _fail(_bug_line(e))
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


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
