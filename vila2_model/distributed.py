"""Data-parallel ranks: which rank this process is, joining the group that torchrun (or `launch`) describes,
and `launch`, which starts N local processes and turns a crash on any of them into one error.

Two ways in, one code path: `torchrun --nproc_per_node N ...` on a cluster sets RANK / WORLD_SIZE /
MASTER_ADDR / MASTER_PORT and every rank runs the same command; `launch(N, "module:function", kwargs)` does
the same on one machine from Python (what `train_vlm(nproc=N)` and `curator train --nproc N` use). Backends:
gloo on CPU, nccl on GPU (one GPU per local rank).
"""
from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from vila2_model.errors import ModelError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0            # this process's rank in the group
    world: int = 1           # processes in the group
    local_rank: int = 0      # rank on this machine (picks the GPU)

    @property
    def main(self) -> bool:
        """Rank 0: the only rank that writes checkpoints and logs."""
        return self.rank == 0


def ranks() -> Ranks:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return Ranks()


def env_world_size() -> int:
    """WORLD_SIZE as torchrun (or launch) set it; 1 outside a launched group."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: str = "cpu") -> Ranks:
    """Join the process group described by the environment (idempotent; a no-op for a single process).
    gloo for CPU tensors, nccl when the device is CUDA."""
    import datetime

    import torch
    import torch.distributed as dist

    if env_world_size() > 1 and not dist.is_initialized():
        cuda = str(device).startswith("cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # A rank waiting on a dead peer fails after this long instead of gloo's 30 minutes (the launcher
        # stops the group sooner; torchrun's agent does too).
        timeout = datetime.timedelta(seconds=int(os.environ.get("VILA2_DIST_TIMEOUT_S", "600")))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return ranks()


def rank_device(device: str, r: Ranks) -> str:
    """Each rank on its own GPU: "cuda" means cuda:<local_rank>; CPU ranks share the CPU."""
    if str(device) == "cuda" and r.world > 1:
        return f"cuda:{r.local_rank}"
    return str(device)


def broadcast(obj, r: Ranks):
    """Rank 0's `obj` on every rank (pickled; for small things: a processor, a decision, a hash)."""
    if r.world == 1:
        return obj
    import torch.distributed as dist

    box = [obj if r.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj, r: Ranks) -> list | None:
    """Every rank's `obj`, as a list on rank 0 (None elsewhere)."""
    if r.world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * r.world if r.main else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier(r: Ranks) -> None:
    if r.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, target: str, kwargs: dict, workdir: str | Path, poll_s: float = 0.2):
    """Run `target(**kwargs)` ("package.module:function") in `nproc` local processes that form one group;
    return rank 0's return value. The first rank to fail stops all the others (SIGTERM, then SIGKILL), and
    one ModelError names it and its error; its traceback is in workdir/error-rank<R>.txt.
    Each rank gets OMP_NUM_THREADS = cores / nproc unless the caller set it."""
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    for old in list(work.glob("error-rank*.txt")) + list(work.glob("result.pkl")):
        old.unlink()
    spec = work / "spec.pkl"
    spec.write_bytes(pickle.dumps({"target": target, "kwargs": kwargs}))
    port = _free_port()
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    procs = []
    try:
        for r in range(nproc):
            env = {**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(nproc),
                   "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
            env.setdefault("OMP_NUM_THREADS", threads)
            procs.append(subprocess.Popen([sys.executable, "-m", "vila2_model.distributed", str(spec)], env=env))
        while True:
            codes = [p.poll() for p in procs]
            if any(c not in (None, 0) for c in codes):
                break
            if all(c == 0 for c in codes):
                return pickle.loads((work / "result.pkl").read_bytes())
            time.sleep(poll_s)
        time.sleep(1.0)  # let the peers of a crashed rank record their own (secondary) errors
        raise _group_error(work, [p.poll() for p in procs], nproc)
    finally:
        _stop(procs)


def _group_error(work: Path, codes: list, nproc: int) -> ModelError:
    """The rank that failed first (earliest error record; peers of a crashed rank fail after it)."""
    records = []
    for r, c in enumerate(codes):
        f = work / f"error-rank{r}.txt"
        if f.is_file():
            t, _, rest = f.read_text().partition("\n")
            records.append((float(t), r, rest.partition("\n")[0], f))
    if records:
        _, r, line, f = min(records)
        return ModelError(f"rank {r} of {nproc} failed: {line}", "the other ranks were stopped",
                          f"see {f} for its traceback; after fixing, rerun (finished stages are reused)")
    r, c = next((r, c) for r, c in enumerate(codes) if c not in (None, 0))
    how = f"killed by signal {signal.Signals(-c).name}" if c < 0 else f"exit code {c}"
    return ModelError(f"rank {r} of {nproc} died ({how}) without an error record",
                      "the process was killed from outside (often out of memory); the other ranks were stopped",
                      "check memory (`dmesg`), lower the batch size or --nproc, and rerun")


def _stop(procs: list) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + 10
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _worker(spec_path: str) -> int:
    """One rank: run the target; rank 0 stores the result; any failure is recorded (time, one line, traceback)."""
    import importlib

    work = Path(spec_path).parent
    rank = int(os.environ["RANK"])
    try:
        spec = pickle.loads(Path(spec_path).read_bytes())
        mod, _, fn = spec["target"].partition(":")
        out = getattr(importlib.import_module(mod), fn)(**spec["kwargs"])
        if rank == 0:
            (work / "result.pkl").write_bytes(pickle.dumps(out))
        return 0
    except BaseException as e:  # noqa: BLE001 — recorded for the launcher, which raises the one error
        line = (str(e).splitlines() or [""])[0]
        (work / f"error-rank{rank}.txt").write_text(
            f"{time.time()}\n{type(e).__name__}: {line}\n{traceback.format_exc()}")
        return 1
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 — a broken group cannot always be torn down; the process exits anyway
                pass


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
