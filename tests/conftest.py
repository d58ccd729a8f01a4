"""Shared, generic test helpers: a real Lance store in a temp dir, and the real `curator` entry point."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

CURATOR = str(Path(sys.executable).with_name("curator"))

# The vLLM engine tests run in their own venv (.venv-vllm, `make test` runs them there); where vllm is not
# installed the file is not collected at all, so it neither fails nor counts as skipped.
collect_ignore = [] if importlib.util.find_spec("vllm") else ["test_vllm.py"]


@pytest.fixture
def tmp_store(tmp_path):
    """A fresh, empty store (all seven tables) under tmp_path/store."""
    from curator.store import Store

    return Store(str(tmp_path / "store"), create=True)


def run_cli(*args: str, store: str | os.PathLike | None = None, check: bool = True, cwd=None, env=None,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run the installed `curator` command in a subprocess; returns the CompletedProcess (text mode).

    check=True asserts exit code 0 and shows stdout/stderr when it is not.
    """
    full_env = dict(os.environ)
    full_env.pop("CURATOR_STORE", None)
    if env:
        full_env.update(env)
    cmd = [CURATOR] + (["--store", str(store)] if store is not None else []) + [str(a) for a in args]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=full_env, input=input)
    if check:
        assert res.returncode == 0, f"{' '.join(cmd)} exited {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    return res


def tree_hash(root: str | os.PathLike) -> str:
    """sha256 over every file's relative path, size and bytes under root (to prove nothing changed)."""
    h = hashlib.sha256()
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(dirpath, f)
            h.update(os.path.relpath(p, root).encode())
            with open(p, "rb") as fh:
                h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()


@pytest.fixture(scope="module")
def one_torch_thread():
    """On a shared 2-core machine, torch's second intra-op thread spins against other jobs' processes and made
    training ~10x slower (measured); one thread per test process is faster and the results are identical."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
