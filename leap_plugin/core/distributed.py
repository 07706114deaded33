"""All-gather of per-rank mini-batches, so that every rank updates the LEAP state
from the same global batch, so that every rank holds the same centers and angle memory."""
from __future__ import annotations

import socket

import torch
import torch.distributed as dist

__all__ = ["world_size", "rank", "all_gather_rows", "init_process_group", "free_tcp_url"]


def free_tcp_url() -> str:
    """A ``tcp://127.0.0.1:<port>`` address with a port free now (one-machine runs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def init_process_group(world: int, rank_: int, init_method: str | None = None) -> None:
    """The process group of both adapters: NCCL where CUDA is, gloo otherwise; the address
    from ``init_method`` or, without one, torchrun's environment (``MASTER_ADDR``...)."""
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    kwargs = {"init_method": init_method} if init_method else {}
    dist.init_process_group(backend=backend, world_size=world, rank=rank_, **kwargs)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_gather_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Concatenate, in rank order, the rows of each tensor from every rank.

    Ranks may hold different numbers of rows; all tensors of one call must share
    their first dimension. Without an initialised process group this returns the
    inputs unchanged, so single-process behaviour equals the 1-rank case.
    """
    if world_size() == 1:
        return tensors
    n = tensors[0].shape[0]
    sizes = [torch.zeros(1, dtype=torch.long, device=tensors[0].device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([n], dtype=torch.long, device=tensors[0].device))
    sizes = [int(s.item()) for s in sizes]
    longest = max(sizes)
    out = []
    for t in tensors:
        padded = t.new_zeros((longest, *t.shape[1:]))
        padded[:n] = t
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        out.append(torch.cat([p[:s] for p, s in zip(parts, sizes)]))
    return tuple(out)
