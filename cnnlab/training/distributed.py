"""DistributedDataParallel under torchrun: which rank this is, its shard of the data, summed metrics."""

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job; a plain run is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, prints and writes checkpoints."""
        return self.rank == 0

    def shard(self, order: torch.Tensor, pad: bool) -> torch.Tensor:
        """This rank's every-world_size-th index of `order`; `pad` repeats the start so all ranks
        get equally many (every rank must take the same number of gradient steps)."""
        if not self.enabled:
            return order
        if pad:
            order = torch.cat([order, order[: (-len(order)) % self.world_size]])
        return order[self.rank :: self.world_size]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over all ranks, in place (no-op for one process)."""
        if self.enabled:
            dist.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        """Wait until every rank gets here (no-op for one process)."""
        if self.enabled:
            dist.barrier()

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics) before they evaluate."""
        if self.enabled:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)


SINGLE_PROCESS = Distributed()


def from_environment(device_type: str) -> Distributed:
    """Join the torchrun job described by RANK/WORLD_SIZE/LOCAL_RANK (NCCL on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    # Weights with a size-1 dimension (1-channel input convs) have two equivalent stride layouts;
    # DDP warns about the mismatch on every run although nothing is wrong or slower.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return Distributed(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def shutdown() -> None:
    """Leave the process group, if any."""
    if dist.is_initialized():
        dist.destroy_process_group()
