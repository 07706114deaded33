"""Intra-class angular spread of learned features, head vs tail (Sec. 1, Sec. 3.3, Figs. 1-3).

The paper's evidence that tail classes are narrow (Sec. 1: DukeMTMC-reID with tail classes
reduced to 4 samples, angle to the class center 0.463 +- 0.030 for head classes vs
0.288 +- 0.023 for tail classes, 95% CI) measures each feature against the mean of its own
class (Eq. 3). That center is estimated from the K_i samples it is compared with, and each
sample pulls it towards itself by 1/K_i: for the same true spread, the angle to the sample
center shrinks roughly like sqrt(1 - 1/K_i). So a small angle of a 4-sample class is partly
an artefact of K_i. Besides the paper's statistic this module therefore measures spread in
ways that do not share that bias:

- ``pairwise_angle_mean``: mean angle between two distinct samples of a class (no center);
- ``loo_angle_mean``: each sample against the center of the *other* samples of its class
  (biased the other way for small K_i: that center is noisy);
- ``matched_center_angle_*``: head classes re-measured exactly like a tail class, on K
  random samples (K = the tail size), averaged over a few seeded draws.

Everything is computed per class in float64, vectorised over samples (no Python loop over
samples or classes; pairwise angles are computed in padded blocks of classes). Features are
L2-normalised here, so raw embeddings may be passed. Angles are in radians.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats as scipy_stats

from ..core.memory import group_ranks

__all__ = [
    "CI_METHOD", "STATISTICS", "AngleStatistics", "angle_statistics", "center_angles", "format_summary",
    "group_mean_var", "head_tail_summary", "matched_center_angles", "mean_ci", "pairwise_angle_mean",
]

ArrayLike = Union[torch.Tensor, np.ndarray]

#: Per-class statistics, in radians (``*_var``: rad^2, unbiased over the class's samples).
STATISTICS = (
    "center_angle_mean",           # Eq. 3 against the class's own mean feature (the paper's)
    "center_angle_var",            # its variance sigma_i^2 (Sec. 3.3)
    "pairwise_angle_mean",         # center-free
    "loo_angle_mean",              # against the mean of the other samples of the class
    "matched_center_angle_mean",   # Eq. 3 on K random samples of the class (K = tail size)
    "matched_center_angle_var",
)

#: How the confidence intervals are computed (also written into analysis.json).
CI_METHOD = "Student t: t_{(1+c)/2, n-1} * sd / sqrt(n), sd with ddof=1, n = number of classes"

# A center this short is a cancellation (a class of one sample left out, or antipodal
# features), not a direction: no angle is defined against it.
_MIN_CENTER_NORM = 1e-9


def _features(features: ArrayLike) -> torch.Tensor:
    return F.normalize(torch.as_tensor(features, dtype=torch.float64).detach().cpu(), dim=1)


def _labels(labels: ArrayLike) -> torch.Tensor:
    return torch.as_tensor(labels).detach().cpu().reshape(-1).long()


def _angle(cos: torch.Tensor) -> torch.Tensor:
    return torch.acos(cos.clamp(-1.0, 1.0))


def center_angles(features: ArrayLike, labels: ArrayLike, num_classes: int,
                  leave_one_out: bool = False) -> torch.Tensor:
    """Eq. 3: ``beta = arccos(cos(f_n, c_{y_n}))`` of every sample, with ``c_i`` the mean of
    the L2-normalised features of class i (the paper's Sec. 1 statistic).

    With ``leave_one_out`` the center is the mean of the *other* samples of the class.

    Returns:
        (N,) angles in radians; NaN where no center exists (a single-sample class when
        leaving one out).
    """
    f, y = _features(features), _labels(labels)
    # The angle does not depend on the center's length, so class sums serve as centers.
    sums = torch.zeros(num_classes, f.shape[1], dtype=f.dtype).index_add_(0, y, f)
    centers = sums[y]
    if leave_one_out:
        centers = centers - f
    norm = centers.norm(dim=1)
    angles = _angle((f * centers).sum(1) / norm.clamp_min(_MIN_CENTER_NORM))
    return torch.where(norm > _MIN_CENTER_NORM, angles, torch.full_like(angles, math.nan))


def group_mean_var(values: torch.Tensor, labels: ArrayLike,
                   num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class mean and unbiased variance of ``values`` (NaN entries ignored).

    Returns:
        ``(mean, var, n)``, each (C,): mean is NaN for classes without values, var for
        classes with fewer than two; n counts the finite values.
    """
    y = _labels(labels)
    values = values.double()
    finite = torch.isfinite(values)
    v = torch.where(finite, values, torch.zeros_like(values))
    n = torch.zeros(num_classes, dtype=torch.long).index_add_(0, y, finite.long())
    nf = n.double()
    mean = torch.zeros(num_classes, dtype=v.dtype).index_add_(0, y, v) / nf.clamp_min(1)
    dev2 = torch.where(finite, (v - mean[y]) ** 2, torch.zeros_like(v))
    var = torch.zeros(num_classes, dtype=v.dtype).index_add_(0, y, dev2) / (nf - 1).clamp_min(1)
    nan = torch.full_like(mean, math.nan)
    return torch.where(n >= 1, mean, nan), torch.where(n >= 2, var, nan), n


def pairwise_angle_mean(features: ArrayLike, labels: ArrayLike, num_classes: int,
                        max_elements: int = 1 << 24) -> torch.Tensor:
    """Mean angle over the unordered pairs of distinct samples of each class (no center).

    Classes are processed in blocks, each padded to its largest class, sized so that a
    block holds at most about ``max_elements`` numbers (features plus Gram matrices);
    classes are sorted by size so that the padding stays small.

    Returns:
        (C,) mean pairwise angle in radians; NaN for classes with fewer than two samples.
    """
    f, y = _features(features), _labels(labels)
    order, rank, _ = group_ranks(y)
    f, y = f[order], y[order]
    n = torch.bincount(y, minlength=num_classes)
    out = torch.full((num_classes,), math.nan, dtype=f.dtype)
    classes = torch.argsort(n)
    classes = classes[n[classes] >= 2]
    dim = f.shape[1]
    start = 0
    while start < len(classes):
        size = n[classes[start:]]
        # Cost of a block from `start` to k inclusive: (k - start + 1) classes padded to n_k.
        cost = torch.arange(1, len(size) + 1) * size * (size + dim)
        stop = start + max(1, int((cost <= max_elements).sum()))
        block = classes[start:stop]
        width = int(n[block].max())
        slot = torch.full((num_classes,), -1, dtype=torch.long)
        slot[block] = torch.arange(len(block))
        member = slot[y] >= 0
        padded = f.new_zeros(len(block), width, dim)
        padded[slot[y[member]], rank[member]] = f[member]
        angles = _angle(padded @ padded.transpose(1, 2))
        idx = torch.arange(width)
        pair = (idx[:, None] < idx[None, :]) & (idx[None, :] < n[block][:, None, None])
        nb = n[block].to(f.dtype)
        out[block] = (angles * pair).sum((1, 2)) / (nb * (nb - 1) / 2)
        start = stop
    return out


def matched_center_angles(features: ArrayLike, labels: ArrayLike, num_classes: int, size: int,
                          draws: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3 measured as on a tail class: per class, ``size`` samples drawn at random
    (without replacement), their own center and their angles to it; mean and unbiased
    variance of those angles, averaged over ``draws`` draws (seeded).

    Returns:
        ``(mean, var)``, each (C,); NaN for classes with fewer than ``size`` samples.
    """
    if size < 2:
        raise ValueError(f"matched size must be at least 2 samples, got {size}")
    f, y = _features(features), _labels(labels)
    gen = torch.Generator().manual_seed(seed)
    mean_sum = torch.zeros(num_classes, dtype=f.dtype)
    var_sum = torch.zeros(num_classes, dtype=f.dtype)
    for _ in range(draws):
        perm = torch.randperm(len(y), generator=gen)
        # The stable sort by label keeps the random order within each class.
        order, rank, _ = group_ranks(y[perm])
        pick = perm[order[rank < size]]
        mean, var, _ = group_mean_var(center_angles(f[pick], y[pick], num_classes), y[pick], num_classes)
        mean_sum += mean
        var_sum += var
    enough = torch.bincount(y, minlength=num_classes) >= size
    nan = torch.full_like(mean_sum, math.nan)
    return torch.where(enough, mean_sum / draws, nan), torch.where(enough, var_sum / draws, nan)


def mean_ci(values: ArrayLike, confidence: float = 0.95) -> dict[str, Optional[float]]:
    """Mean over classes with the half-width of its confidence interval (:data:`CI_METHOD`),
    the form of the paper's Sec. 1 figures (``0.463 +- 0.030``). NaN values are ignored.

    Returns:
        ``{"mean", "ci", "sd", "n"}``; ``None`` where undefined (``ci`` and ``sd`` need n >= 2).
    """
    v = torch.as_tensor(values, dtype=torch.float64)
    v = v[torch.isfinite(v)]
    n = int(v.numel())
    if n == 0:
        return {"mean": None, "ci": None, "sd": None, "n": 0}
    mean = float(v.mean())
    if n < 2:
        return {"mean": mean, "ci": None, "sd": None, "n": 1}
    sd = float(v.std(correction=1))
    half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "ci": half, "sd": sd, "n": n}


@dataclass
class AngleStatistics:
    """Result of :func:`angle_statistics`.

    Attributes:
        counts: (C,) K_i, the training samples per class (decides head vs tail).
        sizes: (C,) samples per class in the analysed features.
        per_class: name in :data:`STATISTICS` -> (C,) values (NaN = undefined for the class).
        matched_size: K of the ``matched_*`` statistics (None: no tail class to match).
        labels: (N,) class of each analysed sample.
        sample_center_angles: (N,) Eq. 3 angle of each sample to its class center.
        sample_loo_angles: (N,) angle of each sample to the center of the others of its class.
    """

    counts: torch.Tensor
    sizes: torch.Tensor
    per_class: dict[str, torch.Tensor]
    matched_size: Optional[int]
    labels: torch.Tensor
    sample_center_angles: torch.Tensor
    sample_loo_angles: torch.Tensor

    def head_mask(self, tail_threshold: int) -> torch.Tensor:
        """Head classes: K_i > T (Sec. 3.4, vanilla version); tail: K_i <= T."""
        return self.counts > tail_threshold


def angle_statistics(features: ArrayLike, labels: ArrayLike, counts: ArrayLike, tail_threshold: int,
                     matched_size: Optional[int] = None, draws: int = 5, seed: int = 0) -> AngleStatistics:
    """Every statistic of :data:`STATISTICS` for every class.

    Args:
        features: (N, D) features (L2-normalised here).
        labels: (N,) class ids in ``[0, C)``.
        counts: (C,) K_i, training samples per class.
        tail_threshold: T; tail classes have K_i <= T.
        matched_size: K of the ``matched_*`` statistics; default: the (lower) median number of
            analysed samples of the tail classes (the ``S`` of a ``<H, S>`` split).
        draws, seed: random draws averaged by the ``matched_*`` statistics, and their seed.
    """
    counts = _labels(counts)
    y = _labels(labels)
    num_classes = len(counts)
    sizes = torch.bincount(y, minlength=num_classes)
    center = center_angles(features, y, num_classes)
    loo = center_angles(features, y, num_classes, leave_one_out=True)
    center_mean, center_var, _ = group_mean_var(center, y, num_classes)
    per_class = {
        "center_angle_mean": center_mean,
        "center_angle_var": center_var,
        "pairwise_angle_mean": pairwise_angle_mean(features, y, num_classes),
        "loo_angle_mean": group_mean_var(loo, y, num_classes)[0],
    }
    if matched_size is None:
        tail_sizes = sizes[(counts <= tail_threshold) & (sizes > 0)]
        matched_size = int(tail_sizes.median()) if len(tail_sizes) else None
    if matched_size is not None and matched_size >= 2:
        m_mean, m_var = matched_center_angles(features, y, num_classes, matched_size, draws, seed)
    else:
        matched_size = None
        m_mean = m_var = torch.full((num_classes,), math.nan, dtype=torch.float64)
    per_class["matched_center_angle_mean"] = m_mean
    per_class["matched_center_angle_var"] = m_var
    return AngleStatistics(counts, sizes, per_class, matched_size, y, center, loo)


def _ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
    return num / den if num is not None and den else None


def head_tail_summary(stats: AngleStatistics, tail_threshold: int,
                      confidence: float = 0.95) -> dict:
    """Head vs tail means over classes with confidence intervals (Sec. 1), and tail/head ratios.

    Returns::

        {"tail_threshold": T, "confidence": 0.95, "ci_method": CI_METHOD,
         "matched_size": K or None,
         "head": {"classes": int, "images": int, <statistic>: mean_ci(...), ...},
         "tail": {"classes": int, "images": int, <statistic>: mean_ci(...), ...},
         "tail_head_ratio": {<statistic>: tail mean / head mean, ...}}

    The ``matched_*`` statistics are reported for head classes only, and their ratios
    compare the tail classes' ``center_angle_*`` with them: tail vs head measured the same
    way, on the same number of samples. ``tail_head_ratio["center_angle_var"]`` is the
    paper's head/tail variance gap (Sec. 1) as a ratio.
    """
    head = stats.head_mask(tail_threshold)
    groups = {"head": head, "tail": ~head}
    out: dict = {"tail_threshold": tail_threshold, "confidence": confidence, "ci_method": CI_METHOD,
                 "matched_size": stats.matched_size}
    for name, mask in groups.items():
        mask = mask & (stats.sizes > 0)
        group = {"classes": int(mask.sum()), "images": int(stats.sizes[mask].sum())}
        for key in STATISTICS:
            if name == "tail" and key.startswith("matched_"):
                continue
            group[key] = mean_ci(stats.per_class[key][mask], confidence)
        out[name] = group
    ratios = {}
    for key in STATISTICS:
        tail_key = key.replace("matched_", "")
        ratios[key] = _ratio(out["tail"][tail_key]["mean"], out["head"][key]["mean"])
    out["tail_head_ratio"] = ratios
    return out


def format_summary(summary: dict) -> str:
    """A few lines of :func:`head_tail_summary` in the paper's ``mean +- CI`` form (Sec. 1)."""

    def cell(s: dict) -> str:
        if s["mean"] is None:
            return "n/a"
        return f"{s['mean']:.4g} +- {s['ci']:.2g}" if s["ci"] is not None else f"{s['mean']:.4g}"

    t = summary["tail_threshold"]
    head, tail = summary["head"], summary["tail"]
    lines = [(f"head: K_i > {t}, {head['classes']} classes / {head['images']} images; "
              f"tail: K_i <= {t}, {tail['classes']} classes / {tail['images']} images; "
              f"{summary['confidence']:.0%} CI over classes (rad)")]
    for key in STATISTICS:
        if key.startswith("matched_"):
            if summary["matched_size"] is None:
                continue
            lines.append(f"  {key:26s} head on K={summary['matched_size']}: {cell(head[key])}")
        else:
            lines.append(f"  {key:26s} head {cell(head[key]):>18s}   tail {cell(tail[key]):>18s}")
    ratio = summary["tail_head_ratio"]["center_angle_var"]
    if ratio is not None:
        lines.append(f"  tail/head center_angle_var ratio: {ratio:.3f}")
    return "\n".join(lines)
