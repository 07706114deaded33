"""Every patch this project applies to fastreid 1.4.0 (PyPI), in one place.

fastreid 1.4.0 pins torch 1.13 and was written for CUDA machines. Under Python 3.11 +
torch 2.x (measured with torch 2.14) it fails to import, silently stops training, hangs
or carries on wrongly on bad input, and cannot run on a CPU-only machine. One module per
kind of patch:

- :mod:`.imports`: modules that fail to import (torch._six, collections.Mapping);
- :mod:`.training`: version breakages that change training silently (optimizer zero_grad,
  yacs int-for-float);
- :mod:`.hardening`: no version breakage, but a hang, a lost checkpoint or a silent wrong
  result on bad input (atomic checkpoints and the resume fallback, image reading, loader
  errors, the ETA division, the pretrained download);
- :mod:`.evaluation`: the Cython ranking build that exits the process;
- :mod:`.cpu`: CUDA assumed in the data loader and the launcher (CPU-only machines only).

:func:`apply` is the single list, idempotent; it runs when :mod:`leap_plugin` is imported,
before anything imports fastreid.data / .engine / .evaluation.
"""
from __future__ import annotations

import torch

from . import cpu, evaluation, hardening, imports, training
from ._registry import APPLIED

__all__ = ["apply", "PATCHES", "CPU_PATCHES", "APPLIED"]

#: Applied everywhere, in this order (import shims first: the rest imports fastreid).
PATCHES = (
    imports.patch_torch_six,
    imports.patch_collections_abc,
    training.patch_yacs_int_for_float,
    training.patch_optimizer_zero_grad,
    hardening.patch_atomic_checkpoint,
    hardening.patch_resume_fallback,
    hardening.patch_image_reading,
    hardening.patch_loader_errors,
    hardening.patch_short_run_printer,
    hardening.patch_pretrained_download,
    evaluation.patch_ranking_build,
)
#: Applied only where CUDA is unavailable.
CPU_PATCHES = (cpu.patch_cpu_dataloader, cpu.patch_cpu_distributed)


def apply() -> None:
    """Apply every patch (idempotent)."""
    for fn in PATCHES:
        fn()
    if not torch.cuda.is_available():
        for fn in CPU_PATCHES:
            fn()
