"""Targets for vila2_model.distributed.launch in tests: each runs on every rank of a real gloo group."""
from __future__ import annotations

import torch
import torch.distributed as dist

from vila2_model.distributed import init_from_env


def fail_on_rank_one() -> None:
    """Rank 1 fails after the group formed; rank 0 waits in a collective that can never finish."""
    r = init_from_env()
    dist.barrier()
    if r.rank == 1:
        raise ValueError("rank 1 cannot read shard 7")
    dist.all_reduce(torch.ones(1))
    dist.barrier()
