"""Which classes get a feature cloud, and how wide (Eq. 6 and Eq. 9).

All functions take per-class tensors: ``var`` the unbiased angular variance of the
class's angle memory (rad^2), ``valid`` whether that class has statistics (at least
two angles in memory), ``counts`` the number K_i of training samples of the class.
Classes without statistics are left out of every average and get no cloud.

The averages are ratios of sums over classes. ``reduce`` (default: none) is applied to
each partial sum before the ratio is taken: with the classes sharded across ranks
(``LeapPartialFC``), an all-reduce over the ranks gives every rank the sums of all
classes, so each shard's widths equal the one-process ones.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .settings import DEFAULTS, check_setting

__all__ = ["head_variance", "pooled_variance", "cloud_variance", "uniform_cloud", "Reduce"]

#: Sums a tensor over the shards of the classes (identity in one process).
Reduce = Optional[Callable[[torch.Tensor], torch.Tensor]]


def _ratio(num: torch.Tensor, den: torch.Tensor, reduce: Reduce) -> torch.Tensor:
    """``num / den`` of the (reduced) sums; 0 where ``den`` is 0."""
    if reduce is not None:
        both = reduce(torch.stack([num, den.to(num.dtype)]))
        num, den = both[0], both[1]
    return torch.where(den > 0, num / den.clamp_min(1e-12), num.new_zeros(()))


def head_variance(
    var: torch.Tensor, valid: torch.Tensor, counts: torch.Tensor, tail_threshold: int, reduce: Reduce = None
) -> torch.Tensor:
    """Eq. 6: ``sigma_h^2``, the mean variance over head classes (K_i > T) with statistics.

    Returns a 0-d tensor; 0 when no head class has statistics yet.
    """
    head = valid & (counts > tail_threshold)
    return _ratio((var * head).sum(), head.sum(), reduce)


def pooled_variance(var: torch.Tensor, valid: torch.Tensor, counts: torch.Tensor,
                    reduce: Reduce = None) -> torch.Tensor:
    """Eq. 9: ``sigma^2 = sum_i (K_i - 1) sigma_i^2 / sum_i (K_i - 1)`` over classes with statistics.

    Returns a 0-d tensor; 0 when no class has statistics (or all have K_i = 1).
    """
    w = (counts.to(var.dtype) - 1).clamp_min(0) * valid
    return _ratio((w * var).sum(), w.sum(), reduce)


def uniform_cloud(widths: torch.Tensor, valid: torch.Tensor, reduce: Reduce = None) -> torch.Tensor:
    """The control of ``CLOUD: uniform``: every class with statistics gets the mean of the
    positive per-class cloud variances ``widths`` (as much angular noise as LEAP adds, with
    nothing transferred from head to tail); 0 everywhere while no class has a cloud."""
    clouded = widths > 0
    return torch.where(valid, _ratio((widths * clouded).sum(), clouded.sum(), reduce), torch.zeros_like(widths))


def cloud_variance(
    var: torch.Tensor,
    valid: torch.Tensor,
    counts: torch.Tensor,
    version: str = DEFAULTS.version,
    tail_threshold: int = DEFAULTS.tail_threshold,
    cloud_scale: float = DEFAULTS.cloud_scale,
    cloud: str = DEFAULTS.cloud,
    reduce: Reduce = None,
) -> torch.Tensor:
    """Per-class variance of alpha (Sec. 3.4), times ``cloud_scale ** 2``.

    full: class i gets ``sigma^2 - sigma_i^2`` (Eq. 9) iff ``sigma_i^2 < sigma^2``.
    vanilla: tail class x (K_x <= T) gets ``max(sigma_h^2 - sigma_x^2, 0)`` (Eq. 6); head classes 0.
    ``cloud="uniform"`` replaces these widths by :func:`uniform_cloud` of them. ``cloud_scale``
    multiplies the std of alpha (1 = the paper).

    Returns:
        (C,) tensor of cloud variances in rad^2; 0 = no cloud.
    """
    check_setting("cloud", cloud)
    if check_setting("version", version) == "full":
        target = pooled_variance(var, valid, counts, reduce)
        eligible = valid
    else:  # vanilla
        target = head_variance(var, valid, counts, tail_threshold, reduce)
        eligible = valid & (counts <= tail_threshold)
    widths = torch.where(eligible, (target - var).clamp_min(0), torch.zeros_like(var))
    if cloud == "uniform":
        widths = uniform_cloud(widths, valid, reduce)
    return widths * float(cloud_scale) ** 2
