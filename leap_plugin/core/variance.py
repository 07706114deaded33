"""Which classes get a feature cloud, and how wide (Eq. 6 and Eq. 9).

All functions take per-class tensors: ``var`` the unbiased angular variance of the
class's angle memory (rad^2), ``valid`` whether that class has statistics (at least
two angles in memory), ``counts`` the number K_i of training samples of the class.
Classes without statistics are left out of every average and get no cloud.
"""
from __future__ import annotations

import torch

from .settings import CLOUDS, VERSIONS

__all__ = ["VERSIONS", "CLOUDS", "head_variance", "pooled_variance", "cloud_variance", "uniform_cloud"]


def head_variance(
    var: torch.Tensor, valid: torch.Tensor, counts: torch.Tensor, tail_threshold: int
) -> torch.Tensor:
    """Eq. 6: ``sigma_h^2``, the mean variance over head classes (K_i > T) with statistics.

    Returns a 0-d tensor; 0 when no head class has statistics yet.
    """
    head = valid & (counts > tail_threshold)
    n = head.sum()
    return torch.where(n > 0, (var * head).sum() / n.clamp_min(1), var.new_zeros(()))


def pooled_variance(var: torch.Tensor, valid: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Eq. 9: ``sigma^2 = sum_i (K_i - 1) sigma_i^2 / sum_i (K_i - 1)`` over classes with statistics.

    Returns a 0-d tensor; 0 when no class has statistics (or all have K_i = 1).
    """
    w = (counts.to(var.dtype) - 1).clamp_min(0) * valid
    total = w.sum()
    return torch.where(total > 0, (w * var).sum() / total.clamp_min(1e-12), var.new_zeros(()))


def uniform_cloud(widths: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The control of ``CLOUD: uniform``: every class with statistics gets the mean of the
    positive per-class cloud variances ``widths`` (as much angular noise as LEAP adds, with
    nothing transferred from head to tail); 0 everywhere while no class has a cloud."""
    clouded = widths > 0
    mean = torch.where(clouded.any(), (widths * clouded).sum() / clouded.sum().clamp_min(1), widths.new_zeros(()))
    return torch.where(valid, mean, torch.zeros_like(widths))


def cloud_variance(
    var: torch.Tensor,
    valid: torch.Tensor,
    counts: torch.Tensor,
    version: str = "full",
    tail_threshold: int = 0,
    cloud_scale: float = 1.0,
    cloud: str = "class",
) -> torch.Tensor:
    """Per-class variance of alpha (Sec. 3.4), times ``cloud_scale ** 2``.

    full: class i gets ``sigma^2 - sigma_i^2`` (Eq. 9) iff ``sigma_i^2 < sigma^2``.
    vanilla: tail class x (K_x <= T) gets ``max(sigma_h^2 - sigma_x^2, 0)`` (Eq. 6); head classes 0.
    ``cloud="uniform"`` replaces these widths by :func:`uniform_cloud` of them. ``cloud_scale``
    multiplies the std of alpha (1 = the paper).

    Returns:
        (C,) tensor of cloud variances in rad^2; 0 = no cloud.
    """
    if cloud not in CLOUDS:
        raise ValueError(f"cloud must be one of {CLOUDS}, got {cloud!r}")
    if version == "full":
        target = pooled_variance(var, valid, counts)
        eligible = valid
    elif version == "vanilla":
        target = head_variance(var, valid, counts, tail_threshold)
        eligible = valid & (counts <= tail_threshold)
    else:
        raise ValueError(f"LEAP version must be one of {VERSIONS}, got {version!r}")
    widths = torch.where(eligible, (target - var).clamp_min(0), torch.zeros_like(var))
    if cloud == "uniform":
        widths = uniform_cloud(widths, valid)
    return widths * float(cloud_scale) ** 2
