"""CPU-only machines: fastreid 1.4.0 assumes CUDA in its data loader and its launcher.
Applied only when CUDA is unavailable; on a CUDA machine fastreid's own paths run."""
from __future__ import annotations

import torch

from ...core.distributed import free_tcp_url, init_process_group
from ._registry import patch

__all__ = ["patch_cpu_dataloader", "patch_cpu_distributed", "launch"]


@patch("cpu_dataloader")
def patch_cpu_dataloader() -> None:
    """``DataLoaderX`` creates a ``torch.cuda.Stream`` unconditionally and moves batches
    to the GPU: without CUDA, batches are simply prefetched by fastreid's background thread."""
    from fastreid.data import data_utils

    def __init__(self, local_rank, **kwargs):
        torch.utils.data.DataLoader.__init__(self, **kwargs)
        self.local_rank = local_rank

    def preload(self):
        self.batch = next(self.iter, None)

    def __next__(self):
        batch = self.batch
        if batch is None:
            raise StopIteration
        self.preload()
        return batch

    data_utils.DataLoaderX.__init__ = __init__
    data_utils.DataLoaderX.preload = preload
    data_utils.DataLoaderX.__next__ = __next__


def _ddp(module: torch.nn.Module, device_ids=None, **kwargs) -> torch.nn.parallel.DistributedDataParallel:
    """``DistributedDataParallel`` that drops ``device_ids`` for a CPU module (gloo)."""
    if next(module.parameters()).device.type == "cpu":
        device_ids = None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids, **kwargs)


@patch("cpu_distributed")
def patch_cpu_distributed() -> None:
    """``launch`` asserts CUDA and uses NCCL; ``DefaultTrainer`` wraps the model in DDP
    with ``device_ids=[local_rank]``. Without CUDA: gloo processes, no device ids, so
    ``--num-gpus N`` trains with N CPU processes."""
    import fastreid.engine as engine
    import fastreid.engine.defaults as defaults
    import fastreid.engine.launch as launch_module

    launch_module.launch = launch
    engine.launch = launch
    defaults.DistributedDataParallel = _ddp


def launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None, args=()):
    """fastreid's ``launch`` with the worker below: NCCL on CUDA machines, gloo without CUDA."""
    import torch.multiprocessing as mp

    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        return main_func(*args)
    if dist_url == "auto":
        dist_url = free_tcp_url()  # one machine: any free local port
    mp.spawn(_distributed_worker, nprocs=num_gpus_per_machine,
             args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args),
             daemon=False)


def _distributed_worker(local_rank, main_func, world_size, num_gpus_per_machine, machine_rank,
                        dist_url, args):
    import torch.distributed as dist
    from fastreid.utils import comm

    cuda = torch.cuda.is_available()
    if cuda and num_gpus_per_machine > torch.cuda.device_count():
        raise RuntimeError(f"--num-gpus {num_gpus_per_machine} but only "
                           f"{torch.cuda.device_count()} CUDA devices are visible")
    init_process_group(world_size, machine_rank * num_gpus_per_machine + local_rank, dist_url)
    if cuda:
        torch.cuda.set_device(local_rank)
    for i in range(world_size // num_gpus_per_machine):
        ranks = list(range(i * num_gpus_per_machine, (i + 1) * num_gpus_per_machine))
        group = dist.new_group(ranks)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
