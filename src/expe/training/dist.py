"""Process-group setup for multi-GPU training under torchrun (DDP). The training loop only asks
`rank`, `world_size` and `is_main`; everything about process groups lives here.

    torchrun --standalone --nproc_per_node N -m expe.cli train ...          # one node
    srun torchrun --nnodes $NODES --nproc_per_node G --rdzv_backend c10d \\
         --rdzv_endpoint $HEAD:29500 -m expe.cli train ...                  # several nodes (Slurm)

Without torchrun's environment (WORLD_SIZE unset or 1) this is a single process and no process
group is created. NCCL on CUDA, gloo on CPU (which lets the tests run DDP on this machine).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from expe.errors import ConfigError
from expe.runtime import resolve_device


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any (e.g. a SIGTERM seen by one rank)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean of a tensor over ranks (every rank gets it)."""
        if not self.enabled:
            return t
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t / self.world_size

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def setup(device: str = "auto") -> Dist:
    """Join the process group torchrun describes (if any) and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1:
        return Dist(device=dev)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(f"gpus: rank {rank} needs GPU {local} but only {torch.cuda.device_count()} are visible")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world,
                                device_id=dev if dev.type == "cuda" else None)
    return Dist(rank=rank, world_size=world, local_rank=local, device=dev)
