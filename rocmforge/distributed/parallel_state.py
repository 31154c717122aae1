"""The tensor-parallel process group: init over torch.distributed and the three collectives TP needs.

NCCL when the ranks run on GPUs (rank r on cuda:r), gloo on CPU: the same code either way. A
`TPGroup` is passed explicitly to every layer that communicates (no module-global state of ours;
torch.distributed keeps its default group, which this module owns while the group lives).

    all_reduce(x):        x <- sum over ranks of x                (row-parallel outputs, embedding)
    gather_last(x, sz):   concat over ranks of x[..., :sz[r]]     (vocab-parallel logits, uneven slices)
    broadcast(x):         every rank's x <- rank 0's x            (the step's inputs)
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for the rendezvous; the OS may hand it out again later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class TPGroup:
    rank: int
    world: int
    device: torch.device  # this rank's device: cpu, or cuda:rank

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:  # any shape -> same shape, summed over ranks
        if self.world == 1:
            return x
        x = x.contiguous()
        dist.all_reduce(x)
        return x

    def gather_last(self, x: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        """x (..., sizes[rank]) on each rank -> (..., sum(sizes)), rank order. Pads to max(sizes):
        all_gather needs equal shapes."""
        if self.world == 1:
            return x
        width = max(sizes)
        pad = torch.nn.functional.pad(x, (0, width - x.shape[-1])).contiguous()  # (..., width)
        parts = [torch.empty_like(pad) for _ in range(self.world)]
        dist.all_gather(parts, pad)
        return torch.cat([p[..., :n] for p, n in zip(parts, sizes)], dim=-1)

    def broadcast(self, x: torch.Tensor) -> torch.Tensor:  # in place from rank 0
        if self.world > 1:
            dist.broadcast(x, src=0)
        return x


def init_tp_group(rank: int, world: int, init_method: str, *, device_type: str,
                  timeout_s: float) -> TPGroup:  # fmt: skip
    """Join the group as `rank` (blocks until all `world` ranks have joined, at most timeout_s; every
    collective later fails after timeout_s instead of hanging). NCCL on cuda, gloo on cpu."""
    if dist.is_initialized():
        raise RuntimeError("torch.distributed is already initialized in this process; tensor parallelism "
                           "starts its own group: run it in a process without one")  # fmt: skip
    if device_type == "cuda":
        if torch.cuda.device_count() < world:
            raise ValueError(f"tensor parallel size {world} needs {world} GPUs; torch sees "
                             f"{torch.cuda.device_count()}")  # fmt: skip
        torch.cuda.set_device(rank)
        device, backend = torch.device("cuda", rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))  # fmt: skip
    return TPGroup(rank, world, device)


def destroy_tp_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["TPGroup", "destroy_tp_group", "free_port", "init_tp_group"]
