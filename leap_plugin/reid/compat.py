"""Every patch this project applies to fastreid 1.4.0 (PyPI), in one place.

fastreid 1.4.0 pins torch 1.13 and was written for CUDA machines. Under Python 3.11 +
torch 2.x (measured with torch 2.14) it fails to import, silently stops training, and
cannot run on a CPU-only machine. :func:`apply` fixes each breakage; it is idempotent
and runs when :mod:`leap_plugin` is imported. The CPU-only patches apply only when CUDA
is unavailable; on a CUDA machine fastreid's own code paths run unchanged.
"""
from __future__ import annotations

import collections
import collections.abc
import functools
import logging
import math
import os
import subprocess
import sys
import types
from typing import Any, Callable

import torch

from ..io import atomic_write

logger = logging.getLogger("fastreid." + __name__)  # fastreid's setup_logger handles "fastreid.*"

_APPLIED: set[str] = set()


def _once(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def deco(fn: Callable[[], None]) -> Callable[[], None]:
        @functools.wraps(fn)
        def wrapper() -> None:
            if name not in _APPLIED:
                fn()
                _APPLIED.add(name)
        return wrapper
    return deco


# --------------------------------------------------------------------------- imports
@_once("torch_six")
def patch_torch_six() -> None:
    """torch >= 2.0 removed ``torch._six``; fastreid.data imports ``string_classes`` from it."""
    if "torch._six" not in sys.modules:
        six = types.ModuleType("torch._six")
        six.string_classes = (str, bytes)
        six.int_classes = int
        six.inf = math.inf
        six.container_abcs = collections.abc
        sys.modules["torch._six"] = six
        torch._six = six


@_once("collections_abc")
def patch_collections_abc() -> None:
    """Python >= 3.10 removed the ABC aliases in ``collections``; fastreid.data does
    ``from collections import Mapping`` (breaks fastreid.data, .engine, .evaluation)."""
    for name in ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))


@_once("yacs_int_for_float")
def patch_yacs_int_for_float() -> None:
    """yacs (every version up to 0.1.8) refuses ``CENTER_LR 1`` for a float key ("Type
    mismatch ... float vs. int"): an integer given for a float key is taken as that float."""
    import yacs.config

    original = yacs.config._check_and_coerce_cfg_value_type

    @functools.wraps(original)
    def check_and_coerce(replacement, original_value, key, full_key):
        if type(original_value) is float and type(replacement) is int:
            return float(replacement)
        return original(replacement, original_value, key, full_key)

    yacs.config._check_and_coerce_cfg_value_type = check_and_coerce


# --------------------------------------------------------------------------- training
@_once("optimizer_zero_grad")
def patch_optimizer_zero_grad() -> None:
    """The silent one. ``build_optimizer`` wraps parameters in ``ContiguousParams``: the
    optimizer holds flat buffers whose ``.grad`` the model's parameters share as views.
    Since torch 2.0 ``zero_grad()`` defaults to ``set_to_none=True``, which drops that flat
    grad: the optimizer then updates nothing while the model's grads accumulate. Make
    the optimizers fastreid builds zero their grads in place (any torch >= 2.0)."""
    import fastreid.engine.defaults as defaults
    import fastreid.solver as solver
    import fastreid.solver.build as solver_build

    original = solver_build.build_optimizer

    @functools.wraps(original)
    def build_optimizer(cfg, model, contiguous=True):
        optimizer, param_wrapper = original(cfg, model, contiguous=contiguous)
        zero_grad = type(optimizer).zero_grad

        def zero_grad_in_place(self, set_to_none: bool = False) -> None:
            zero_grad(self, set_to_none=set_to_none)

        optimizer.zero_grad = types.MethodType(zero_grad_in_place, optimizer)
        return optimizer, param_wrapper

    for module in (solver_build, solver, defaults):
        module.build_optimizer = build_optimizer


@_once("atomic_checkpoint")
def patch_atomic_checkpoint() -> None:
    """fastreid writes checkpoints in place: a crash mid-write corrupts the last good
    one. Write to a temporary file in the same folder and rename it over the target.
    Loading names the file when it is not a readable checkpoint."""
    from fastreid.utils.checkpoint import Checkpointer

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        save_file = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(f"{name}.pth")

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"),
                     lambda f: f.write(last_filename_basename.encode()))

    def load_file(self, f: str):
        try:
            return torch.load(f, map_location=torch.device("cpu"), weights_only=False)
        except Exception as e:  # noqa: BLE001 - any failure means the file is not a checkpoint
            raise RuntimeError(f"checkpoint {f!r} could not be read as a torch checkpoint: {e}") from e

    Checkpointer.save = save
    Checkpointer.tag_last_checkpoint = tag_last_checkpoint
    Checkpointer._load_file = load_file


# --------------------------------------------------------------------------- data
@_once("data_errors")
def patch_data_errors() -> None:
    """fastreid's ``read_image`` hands RGBA / palette images on as 4- or 1-channel
    arrays (the transforms then fail far from the cause) and a corrupt file surfaces as
    a bare PIL error inside a loader worker; ``check_before_run`` raises a bare
    RuntimeError for a missing folder. Convert every image to RGB, name the file that
    cannot be decoded, and raise FileNotFoundError naming the missing path."""

    import fastreid.data.common as common
    import fastreid.data.data_utils as data_utils
    from fastreid.data.datasets.bases import Dataset

    original = data_utils.read_image

    @functools.wraps(original)
    def read_image(file_name, format=None):
        try:
            image = original(file_name, format)
        except (OSError, ValueError, SyntaxError) as e:
            raise RuntimeError(f"image {file_name!r} is missing, corrupt or not an image: {e}") from e
        return image.convert("RGB") if format is None and image.mode != "RGB" else image

    def check_before_run(self, required_files):
        for path in [required_files] if isinstance(required_files, str) else required_files:
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"{type(self).__name__}: data folder {path!r} not found (fastreid looks under "
                    f"$FASTREID_DATASETS, default './datasets')")

    data_utils.read_image = read_image
    common.read_image = read_image
    Dataset.check_before_run = check_before_run


@_once("short_run_printer")
def patch_short_run_printer() -> None:
    """``CommonMetricPrinter`` estimates the ETA from two writes when the iteration timer
    has no history yet (its first 3 iterations are warm-up) and divides by zero when both
    writes fall on the same iteration: a run of fewer than 4 iterations per epoch (a small
    folder data set) crashes at the end of training. Such a duplicate write is skipped."""
    from fastreid.utils.events import CommonMetricPrinter

    original = CommonMetricPrinter.write

    @functools.wraps(original)
    def write(self):
        try:
            original(self)
        except ZeroDivisionError:
            pass

    CommonMetricPrinter.write = write


# --------------------------------------------------------------------------- evaluation
def build_fast_ranking() -> bool:
    """Build fastreid's Cython ranking in place with this interpreter. Returns success."""
    import fastreid.evaluation.rank_cylib as cylib

    folder = os.path.dirname(os.path.abspath(cylib.__file__))
    try:
        ret = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=folder,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    except OSError as e:
        logger.warning("could not build fastreid's Cython ranking (%s); using the Python ranking", e)
        return False
    if ret.returncode != 0:
        logger.warning("could not build fastreid's Cython ranking; using the Python ranking:\n%s",
                       ret.stdout[-2000:])
        return False
    return True


@_once("ranking_build")
def patch_ranking_build() -> None:
    """``ReidEvaluator.__init__`` runs ``make`` in site-packages when the Cython ranking is
    missing and ``sys.exit(1)``s when that fails (no compiler, read-only site-packages).
    Try the build once; on failure fastreid's own Python ranking is used."""
    import fastreid.evaluation.reid_evaluation as reid_evaluation

    reid_evaluation.compile_helper = functools.lru_cache(maxsize=None)(build_fast_ranking)


# --------------------------------------------------------------------------- CPU only
@_once("cpu_dataloader")
def patch_cpu_dataloader() -> None:
    """``DataLoaderX`` creates a ``torch.cuda.Stream`` unconditionally and its prefetch
    thread calls ``torch.cuda.set_device``: both fail without CUDA. On a CPU-only
    machine batches are simply prefetched by fastreid's background thread."""
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

    def run(self):
        for item in self.generator:
            if self.exit_event.is_set():
                break
            self.queue.put(item)
        self.queue.put(None)

    data_utils.DataLoaderX.__init__ = __init__
    data_utils.DataLoaderX.preload = preload
    data_utils.DataLoaderX.__next__ = __next__
    data_utils.BackgroundGenerator.run = run


def _ddp(module: torch.nn.Module, device_ids=None, **kwargs) -> torch.nn.parallel.DistributedDataParallel:
    """``DistributedDataParallel`` that drops ``device_ids`` for a CPU module (gloo)."""
    if next(module.parameters()).device.type == "cpu":
        device_ids = None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids, **kwargs)


@_once("cpu_distributed")
def patch_cpu_distributed() -> None:
    """``launch`` asserts CUDA and uses NCCL; ``DefaultTrainer`` wraps the model in DDP
    with ``device_ids=[local_rank]``. On a CPU-only machine: gloo processes, no device ids,
    so ``--num-gpus N`` trains with N CPU processes."""
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
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dist_url = f"tcp://127.0.0.1:{s.getsockname()[1]}"
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
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    dist.init_process_group(backend="nccl" if cuda else "gloo", init_method=dist_url,
                            world_size=world_size, rank=global_rank)
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


def apply() -> None:
    """Apply every patch (idempotent). Import-time shims first: fastreid.data and
    fastreid.engine cannot be imported before them."""
    patch_torch_six()
    patch_collections_abc()
    patch_yacs_int_for_float()
    patch_optimizer_zero_grad()
    patch_atomic_checkpoint()
    patch_data_errors()
    patch_short_run_printer()
    patch_ranking_build()
    if not torch.cuda.is_available():
        patch_cpu_dataloader()
        patch_cpu_distributed()


if __name__ == "__main__":
    # Set-up step: build the Cython ranking when a compiler is there; without one,
    # evaluation falls back to fastreid's Python ranking, so this never fails.
    logging.basicConfig(level=logging.INFO)
    apply()
    print("fastreid Cython ranking:", "built" if build_fast_ranking() else "not built, Python ranking used")
