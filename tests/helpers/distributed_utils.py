"""Run a function in N real torch.distributed processes (gloo on CPU)."""
import os
import socket

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, fn, world_size, port, args):
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=world_size, rank=rank)
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def run(fn, world_size: int, *args) -> None:
    """``fn(rank, world_size, *args)`` in ``world_size`` gloo processes; raises if one fails."""
    mp.spawn(_entry, args=(fn, world_size, free_port(), args), nprocs=world_size, join=True)


def memory_worker(rank, world_size, batches, out_dir):
    """Feed rank r's share of each batch to a LeapMemory and save its state."""
    import torch

    from leap_plugin.core.memory import LeapMemory

    mem = LeapMemory(6, 4, class_counts=[8, 3, 2, 5, 1, 4], center_lr=0.2, memory_factor=1)
    for feats, labels, split in batches:
        lo, hi = split[rank], split[rank + 1]
        mem.update(feats[lo:hi], labels[lo:hi])
        mem.refresh_statistics()
    torch.save(mem.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
