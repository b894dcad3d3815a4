"""Several processes: ``torchrun --nproc_per_node N`` sets RANK/WORLD_SIZE/LOCAL_RANK; we read them.

Backends: NCCL when the process has a GPU, gloo on CPUs. Rank 0 writes files; every rank trains.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["DistEnv", "init_distributed", "all_gather_objects"]


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: ``rank`` of ``world_size`` processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: nn.Module, find_unused: bool = False) -> nn.Module:
        """``DistributedDataParallel(module)`` when distributed (and the module trains), else ``module``.

        ``find_unused=True`` for models whose forward may leave some trainable parameters out (the
        torchvision detectors use all of theirs in every training step, even on images without boxes).
        """
        if not self.distributed or not any(p.requires_grad for p in module.parameters()):
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean of a tensor over all processes (the tensor itself when alone)."""
        if not self.distributed:
            return values
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values / self.world_size


def init_distributed(device: str | torch.device | None = None) -> DistEnv:
    """Join the process group that torchrun describes in the environment (idempotent).

    Without ``WORLD_SIZE`` > 1 in the environment this returns a single-process :class:`DistEnv`.
    Under torchrun each process takes ``cuda:LOCAL_RANK`` when CUDA is present (unless ``device`` says
    ``cpu``) and uses NCCL; CPU processes use gloo.
    """
    from ..device import default_device

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv(device=default_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    want = default_device(device)
    if want.type == "cuda":
        want = torch.device("cuda", local_rank)
        torch.cuda.set_device(want)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if want.type == "cuda" else "gloo")
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=want)


def all_gather_objects(env: DistEnv, obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` when alone)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out
