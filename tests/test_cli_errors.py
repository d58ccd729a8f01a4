"""Every `curator` command, given bad arguments, exits 1 with exactly one stderr line `Error: what — why — fix`,
prints no traceback, and leaves the store's bytes as they were (every file under the store hashed before and
after) and no file behind. The table runs in-process (CliRunner); real subprocesses check the last-resort guard.

Not in the table, by design: a malformed record inside a manifest, folder or shard is a counted, reasoned
rejection of that record (valid records still land; tests/test_ingest.py), not a command-line error."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from curator.cli import cli

ROOT = Path(__file__).resolve().parents[1]
ONE_LINE = re.compile(r"^Error: [^—\n]+\S — \S[^—\n]* — \S[^\n]*$")
HUGE = "99999999999999999999"


def tree_hash(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A small real store (4 synthetic images, tagged round-0) and a directory of bad inputs."""
    d = tmp_path_factory.mktemp("cli")
    store = d / "store"
    r = CliRunner().invoke(cli, ["--store", str(store), "ingest", "--synthetic", "4", "--json"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["--store", str(store), "tag", "round-0"])
    assert r.exit_code == 0, r.output
    files = d / "in"
    files.mkdir()
    (files / "a_file.txt").write_text("not a directory\n")
    (files / "bad.sql").write_text("SELEC * FORM captions WHERE\n")
    (files / "write.sql").write_text("DELETE FROM captions\n")
    (files / "binary.sql").write_bytes(b"\xff\xfe\x00SELECT\x81")
    (files / "bad.yaml").write_text("prompts: [unclosed\n  - : :\n")
    (files / "list.yaml").write_text("- just\n- a list\n")
    (files / "unknown_keys.yaml").write_text("no_such_knob: 3\n")
    (files / "bad.json").write_text("{not json")
    (files / "foreign").mkdir()
    (files / "foreign" / "keep.txt").write_text("someone's work\n")
    (files / "empty_dir").mkdir()
    (d / "cwd").mkdir()
    return {"store": store, "in": files, "tmp": d}


def cases(e) -> list[tuple[str, list[str]]]:
    """(id, argv after `--store STORE`). Paths: {in}/… bad inputs, {tmp}/… scratch, {store} the store itself."""
    i, t, s = str(e["in"]), str(e["tmp"]), str(e["store"])
    missing = f"{t}/no/such/path"
    return [
        # the store itself
        ("store missing", ["--store", missing, "sql", "SELECT 1"]),
        ("store is a file", ["--store", f"{i}/a_file.txt", "rounds"]),
        ("store is a foreign dir", ["--store", f"{i}/foreign", "builds"]),
        # ingest
        ("ingest nothing", ["ingest"]),
        ("ingest folder missing", ["ingest", "--folder", missing]),
        ("ingest folder is a file", ["ingest", "--folder", f"{i}/a_file.txt"]),
        ("ingest manifest missing", ["ingest", "--manifest", f"{missing}.jsonl"]),
        ("ingest manifest is a dir", ["ingest", "--manifest", f"{i}/empty_dir"]),
        ("ingest captions missing", ["ingest", "--folder", f"{i}/empty_dir", "--captions", f"{missing}.jsonl"]),
        ("ingest hf missing", ["ingest", "--hf", missing]),
        ("ingest webdataset missing", ["ingest", "--webdataset", f"{missing}.tar"]),
        ("ingest synthetic negative", ["ingest", "--synthetic", "-1"]),
        ("ingest synthetic huge", ["ingest", "--synthetic", HUGE]),
        ("ingest batch size 0", ["ingest", "--synthetic", "2", "--batch-size", "0"]),
        # sql
        ("sql syntax error", ["sql", "SELEC 1"]),
        ("sql empty", ["sql", ""]),
        ("sql write", ["sql", "DELETE FROM captions"]),
        ("sql out dir missing", ["sql", "SELECT 1 AS x", "--out", f"{missing}/x.csv"]),
        ("sql out is a dir", ["sql", "SELECT 1 AS x", "--out", f"{i}/empty_dir"]),
        ("sql unknown tag", ["sql", "--at", "no-such-tag", "SELECT count(*) FROM captions"]),
        ("sql unknown version", ["sql", "--version", "9999", "SELECT count(*) FROM captions"]),
        ("sql negative version", ["sql", "--version", "-1", "SELECT count(*) FROM captions"]),
        ("sql huge version", ["sql", "--version", HUGE, "SELECT count(*) FROM captions"]),
        ("sql at and version", ["sql", "--at", "round-0", "--version", "1", "SELECT 1"]),
        ("sql parquet to stdout", ["sql", "--format", "parquet", "SELECT 1"]),
        ("sql negative max rows", ["sql", "--max-rows", "-1", "SELECT 1"]),
        # build
        ("build no round", ["build"]),
        ("build negative round", ["build", "--round", "-1"]),
        ("build huge round", ["build", "--round", HUGE]),
        ("build sql missing", ["build", "--round", "0", "--sql", f"{missing}.sql"]),
        ("build sql malformed", ["build", "--round", "0", "--sql", f"{i}/bad.sql"]),
        ("build sql writes", ["build", "--round", "0", "--sql", f"{i}/write.sql"]),
        ("build sql binary", ["build", "--round", "0", "--sql", f"{i}/binary.sql"]),
        ("build sql is a dir", ["build", "--round", "0", "--sql", f"{i}/empty_dir"]),
        ("build unknown tag", ["build", "--round", "0", "--at", "no-such-tag"]),
        ("build rows per shard 0", ["build", "--round", "0", "--rows-per-shard", "0"]),
        ("build unknown version", ["build", "--round", "0", "--at", "99999"]),
        ("build out is a file", ["build", "--round", "0", "--out", f"{i}/a_file.txt"]),
        ("build out is the store", ["build", "--round", "0", "--out", s, "--overwrite"]),
        ("build out is foreign", ["build", "--round", "0", "--out", f"{i}/foreign", "--overwrite"]),
        ("build manifest missing", ["build", "--from-manifest", f"{missing}.json"]),
        ("build manifest malformed", ["build", "--from-manifest", f"{i}/bad.json"]),
        # tag, rounds, builds, compact
        ("tag exists", ["tag", "round-0"]),
        ("tag empty name", ["tag", ""]),
        ("tag bad name", ["tag", "bad name/with..dots"]),
        # train, train-specialist, eval, models
        ("train unknown build", ["train", "--data", "nosuchbuild", "--sft", f"{i}/bad.json", "--out", f"{t}/m"]),
        ("train sft missing", ["train", "--data", "x", "--sft", f"{missing}.json", "--out", f"{t}/m"]),
        ("train unknown recipe", ["train", "--data", "x", "--sft", f"{i}/bad.json", "--out", f"{t}/m",
                                  "--recipe", "no-such-recipe"]),
        ("train negative round", ["train", "--data", "x", "--sft", f"{i}/bad.json", "--out", f"{t}/m",
                                  "--round", "-1"]),
        ("train out is a file", ["train", "--data", "x", "--sft", f"{i}/bad.json", "--out", f"{i}/a_file.txt"]),
        ("train-specialist unknown model", ["train-specialist", "--from", "nosuchmodel", "--task", f"{i}/bad.json",
                                            "--role", "spatial", "--out", f"{t}/sp"]),
        ("train-specialist task missing", ["train-specialist", "--from", "x", "--task", f"{missing}.json",
                                           "--role", "spatial", "--out", f"{t}/sp"]),
        ("train-specialist sft missing", ["train-specialist", "--from", "x", "--task", f"{i}/bad.json",
                                          "--role", "spatial", "--sft", f"{missing}.json", "--out", f"{t}/sp"]),
        ("eval unknown model", ["eval", "--model", "nosuchmodel", "--eval", f"{i}/bad.json"]),
        ("eval file missing", ["eval", "--model", f"{i}/empty_dir", "--eval", f"{missing}.json"]),
        ("eval negative limit", ["eval", "--model", f"{i}/empty_dir", "--eval", f"{i}/bad.json", "--limit", "-1"]),
        # recaption, prompts, filter
        ("recaption negative round", ["recaption", "--round", "-1", "--model", f"{i}/empty_dir"]),
        ("recaption huge round", ["recaption", "--round", HUGE, "--model", f"{i}/empty_dir"]),
        ("recaption round 0", ["recaption", "--round", "0", "--model", f"{i}/empty_dir"]),
        ("recaption model missing", ["recaption", "--round", "1", "--model", missing]),
        ("recaption model not a checkpoint", ["recaption", "--round", "1", "--model", f"{i}/empty_dir"]),
        ("recaption bad shard", ["recaption", "--round", "1", "--model", f"{i}/empty_dir", "--shard", "3/2"]),
        ("recaption shard of zero", ["recaption", "--round", "1", "--model", f"{i}/empty_dir", "--shard", "0/0"]),
        ("recaption shard text", ["recaption", "--round", "1", "--model", f"{i}/empty_dir", "--shard", "half"]),
        ("recaption prompts file malformed", ["recaption", "--round", "1", "--model", f"{i}/empty_dir",
                                              "--prompts-file", f"{i}/bad.yaml"]),
        ("recaption batch size 0", ["recaption", "--round", "1", "--model", f"{i}/empty_dir", "--batch-size", "0"]),
        ("prompts file missing", ["prompts", "--prompts-file", f"{missing}.yaml"]),
        ("prompts file malformed", ["prompts", "--prompts-file", f"{i}/bad.yaml"]),
        ("prompts file a list", ["prompts", "--prompts-file", f"{i}/list.yaml"]),
        ("filter empty round", ["filter", "--round", "7"]),
        ("filter negative round", ["filter", "--round", "-1"]),
        ("filter huge round", ["filter", "--round", HUGE]),
        ("filter unknown filter", ["filter", "--round", "0", "--filters", "nope"]),
        ("filter bad threshold", ["filter", "--round", "1", "--threshold", "length.min_words"]),
        ("filter threshold not a number", ["filter", "--round", "1", "--threshold", "length.min_words=many"]),
        ("filter bad n", ["filter", "--round", "1", "--param", "ngram.n=0"]),
        ("filter report empty round", ["filter", "--round", "7", "--report-only"]),
        ("filter unknown kind", ["filter", "--round", "1", "--kind", "no-such-kind"]),
        ("recaption bad where", ["recaption", "--round", "1", "--model", f"{i}/empty_dir", "--where", "split = ("]),
        # inspect, show, diff
        ("inspect bad rounds", ["inspect", "--rounds", "one,two", "--no-launch"]),
        ("inspect negative limit", ["inspect", "--limit", "-1", "--no-launch"]),
        ("inspect unknown tag", ["inspect", "--at", "no-such-tag", "--no-launch"]),
        ("show unknown image", ["show", "ffffffffffff"]),
        ("show short prefix", ["show", "ab"]),
        ("show unknown tag", ["show", "--at", "no-such-tag", "ffffffffffff"]),
        ("show unknown version", ["show", "--at", "99999", "ffffffffffff"]),
        ("inspect bad where", ["inspect", "--where", "source = (", "--no-launch"]),
        ("diff unknown tag", ["diff", "--round", "0", "--round", "1", "--at", "no-such-tag"]),
        ("diff one round", ["diff", "--round", "0"]),
        ("diff negative round", ["diff", "--round", "-1", "--round", "0"]),
        # world, foundation, the loops, report, demo
        ("world out is a file", ["world", "--out", f"{i}/a_file.txt", "--n", "4"]),
        ("world negative n", ["world", "--out", f"{t}/w", "--n", "-1"]),
        ("world config missing", ["world", "--out", f"{t}/w", "--config", f"{missing}.yaml"]),
        ("world config malformed", ["world", "--out", f"{t}/w", "--config", f"{i}/bad.yaml"]),
        ("world config unknown keys", ["world", "--out", f"{t}/w", "--config", f"{i}/unknown_keys.yaml"]),
        ("foundation world missing", ["foundation", "--world", missing, "--out", f"{t}/f"]),
        ("foundation not a world", ["foundation", "--world", f"{i}/empty_dir", "--out", f"{t}/f"]),
        ("self-augment no world", ["run", "self-augment"]),
        ("self-augment world missing", ["run", "self-augment", "--world", missing]),
        ("self-augment not a world", ["run", "self-augment", "--world", f"{i}/empty_dir"]),
        ("self-augment negative rounds", ["run", "self-augment", "--world", f"{i}/empty_dir", "--rounds", "-1"]),
        ("self-augment huge rounds", ["run", "self-augment", "--world", f"{i}/empty_dir", "--rounds", HUGE]),
        ("self-augment foundation missing", ["run", "self-augment", "--world", f"{i}/empty_dir",
                                             "--foundation", missing]),
        ("specialist bad data", ["run", "specialist-augment", "--specialist-data", "spatial"]),
        ("specialist no data", ["run", "specialist-augment", "--specialists", "charts"]),
        ("specialist not a world", ["run", "specialist-augment", "--world", f"{i}/empty_dir"]),
        ("ablations out missing", ["run", "ablations", "--out", missing]),
        ("report out dir missing", ["report", "--out", f"{missing}/r.html"]),
        ("report unknown tag", ["report", "--at", "no-such-tag", "--out", f"{t}/r.html"]),
        ("report unknown version", ["report", "--at", "99999", "--out", f"{t}/r.html"]),
        ("report negative gallery", ["report", "--gallery", "-1", "--out", f"{t}/r.html"]),
        ("demo quick and full", ["demo", "--quick", "--full", "--out", f"{t}/d"]),
        ("demo out is a file", ["demo", "--quick", "--out", f"{i}/a_file.txt"]),
        # the command line itself
        ("unknown command", ["frobnicate"]),
        ("unknown option", ["rounds", "--no-such-option"]),
        ("missing argument", ["show"]),
    ]


def _ids():
    return [c[0] for c in cases({"in": "", "tmp": "", "store": ""})]


@pytest.mark.parametrize("case", _ids())
def test_bad_arguments_give_one_line_and_touch_nothing(env, case, monkeypatch):
    argv = dict(cases(env))[case]
    monkeypatch.chdir(env["tmp"] / "cwd")        # default output paths (builds/…, report.html) land here
    before = tree_hash(env["store"])
    scratch_before = sorted(p.name for p in env["tmp"].iterdir())
    r = CliRunner().invoke(cli, ["--store", str(env["store"])] + argv)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 1, (case, r.exit_code, r.output, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit), (case, repr(r.exception))
    assert len(lines) == 1 and ONE_LINE.match(lines[0]), (case, r.stderr)
    assert "Traceback" not in r.output and not lines[0].startswith("Error: unexpected"), (case, r.output)
    assert tree_hash(env["store"]) == before, f"{case}: the store's bytes changed"
    assert sorted(p.name for p in env["tmp"].iterdir()) == scratch_before, f"{case}: left files behind"
    assert not any((env["tmp"] / "cwd").iterdir()), f"{case}: wrote into the working directory"
    assert not Path(f"{env['tmp']}/no").exists()


def test_empty_round_says_so(env):
    r = CliRunner().invoke(cli, ["--store", str(env["store"]), "filter", "--round", "7"])
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: round 7 has no recaptions to filter — ")


def test_unexpected_error_is_one_line_with_where_the_traceback_is(env, tmp_path):
    """A bug (here injected: `rounds` hits a RuntimeError) prints one line that says where the traceback is;
    CURATOR_DEBUG=1 shows the traceback itself. Real subprocesses, as a user runs them."""
    code = ("import sys\nfrom curator.store import Store\n"
            "def boom(self):\n    raise RuntimeError('injected failure')\n"
            "Store.tag_versions = boom\nfrom curator.cli import main\n"
            f"sys.argv = ['curator', '--store', {str(env['store'])!r}, 'rounds']\nmain()\n")
    base = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))
    base.pop("CURATOR_DEBUG", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=base, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    line, = r.stderr.strip().splitlines()
    assert ONE_LINE.match(line) and line.startswith("Error: unexpected RuntimeError: injected failure — "), line
    log = Path(re.search(r"traceback in ([^\s)]+)", line).group(1))
    assert "Traceback" in log.read_text() and "injected failure" in log.read_text()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(base, CURATOR_DEBUG="1"), cwd=tmp_path)
    assert r.returncode == 1 and "Traceback (most recent call last)" in r.stderr and "injected failure" in r.stderr
