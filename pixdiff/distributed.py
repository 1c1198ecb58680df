"""torch.distributed set-up shared by training and sampling: under ``torchrun`` (WORLD_SIZE > 1)
the process group is initialised once (NCCL on GPUs, gloo on CPUs); alone, rank 0 of 1."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init", "rank_world", "shard_range"]


def init() -> tuple[int, int]:
    """(rank, world size), initialising the default process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank_world()


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous slice [lo, hi) of n items that ``rank`` of ``world`` handles."""
    per = -(-n // world)
    return min(n, rank * per), min(n, (rank + 1) * per)
