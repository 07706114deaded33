"""Figures of the feature-space diagnostics (Figs. 1-3) and of training runs.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` (Agg canvas, no pyplot
state, so it works on a headless machine and in threads) and written with
:func:`leap_plugin.io.atomic_write`, so a crash never leaves a truncated PNG.
"""
from __future__ import annotations

import json
import math
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ..io import atomic_write
from .stats import AngleStatistics, group_mean_var

__all__ = [
    "CURVE_KEYS", "TSNE_MIN_SAMPLES", "pick_tsne_classes", "plot_angle_distributions", "plot_training_curves",
    "plot_tsne", "read_metrics",
]

#: Scalars of fastreid's ``metrics.json`` (and of :class:`leap_plugin.reid.hooks.LeapHook`)
#: plotted by :func:`plot_training_curves`, when present.
CURVE_KEYS = ("total_loss", "loss_cls", "cls_accuracy", "leap/head_angle_var", "leap/tail_angle_var",
              "leap/clouded_classes", "leap/cloud_width", "mAP", "Rank-1")

#: Fewer points than this give t-SNE nothing to arrange.
TSNE_MIN_SAMPLES = 3

# The paper's colours: red for head classes, green for tail classes (Fig. 2).
HEAD_COLOR, TAIL_COLOR = "tab:red", "tab:green"


def _save(fig: Figure, path: str) -> str:
    FigureCanvasAgg(fig)  # Agg explicitly: never whatever backend pyplot would pick
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    return path


def _gaussian(ax, mean: float, var: float, color: str, label: str) -> None:
    """The curve N(mean, var) of Fig. 3 (the paper models angles as Gaussian, Sec. 3.1)."""
    if not (math.isfinite(mean) and math.isfinite(var)) or var <= 0:
        return
    sd = math.sqrt(var)
    x = np.linspace(max(0.0, mean - 4 * sd), mean + 4 * sd, 200)
    ax.plot(x, np.exp(-((x - mean) ** 2) / (2 * var)) / (sd * math.sqrt(2 * math.pi)), color=color,
            lw=2, label=label)


def _nanmean(x: torch.Tensor) -> float:
    x = x[torch.isfinite(x)]
    return float(x.mean()) if x.numel() else math.nan


def plot_angle_distributions(stats: AngleStatistics, tail_threshold: int, path: str) -> str:
    """Head vs tail angular spread, three panels:

    (a) angle of each sample to its class center (Eq. 3, the paper's statistic), density
        histograms with the Gaussian ``N(mu, sigma^2)`` of each group, ``mu`` and ``sigma^2``
        the means over its classes of ``mu_i`` and ``sigma_i^2`` (Eq. 6; Figs. 2-3);
    (b) the same against the center of the other samples of the class (leave-one-out);
    (c) per-class mean angle against K_i (log scale) for the three statistics: the paper's
        center angle grows with K_i even at a constant true spread; the pairwise angle does not.

    Returns ``path``.
    """
    fig = Figure(figsize=(15, 4.4))
    head_class = stats.head_mask(tail_threshold)
    head_sample = head_class[stats.labels]
    num_classes = len(stats.counts)
    panels = (("(a) angle to class center (Eq. 3)", stats.sample_center_angles),
              ("(b) angle to center of the other samples", stats.sample_loo_angles))
    for i, (title, angles) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        mean, var, _ = group_mean_var(angles, stats.labels, num_classes)
        for label, g, sample_mask, class_mask, color in (
                (f"head (K>{tail_threshold})", "h", head_sample, head_class, HEAD_COLOR),
                (f"tail (K<={tail_threshold})", "t", ~head_sample, ~head_class, TAIL_COLOR)):
            a = angles[sample_mask]
            a = a[torch.isfinite(a)].numpy()
            if len(a) == 0:
                continue
            ax.hist(a, bins=30, density=True, alpha=0.35, color=color, label=label)
            _gaussian(ax, _nanmean(mean[class_mask]), _nanmean(var[class_mask]), color, f"N(mu_{g}, sigma_{g}^2)")
        ax.set_title(title)
        ax.set_xlabel("angle (rad)")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)

    ax = fig.add_subplot(1, 3, 3)
    present = stats.sizes > 0
    k = stats.counts[present].numpy()
    for key, label, marker in (("center_angle_mean", "to class center (Eq. 3)", "o"),
                               ("loo_angle_mean", "leave-one-out", "s"),
                               ("pairwise_angle_mean", "pairwise (no center)", "^")):
        ax.scatter(k, stats.per_class[key][present].numpy(), s=14, marker=marker, alpha=0.6, label=label)
    ax.axvline(tail_threshold + 0.5, color="grey", ls="--", lw=1, label=f"T = {tail_threshold}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 10 rather than 10^1
    # minor ticks labelled at 2-5 x 10^n only: all eight crowd into each other above 50
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:e}"[0] in "2345" else ""))
    ax.set_title("(c) per-class mean angle vs samples per class")
    ax.set_xlabel("K_i (training samples of the class)")
    ax.set_ylabel("mean angle (rad)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def pick_tsne_classes(counts: torch.Tensor, sizes: torch.Tensor, tail_threshold: int,
                      max_classes: int, seed: int = 0) -> list[int]:
    """Up to ``max_classes`` classes for :func:`plot_tsne`: half head, half tail (the rest
    from the other group when one is short), drawn at random (seeded) among classes with
    at least two analysed samples; none when they hold fewer than :data:`TSNE_MIN_SAMPLES`."""
    gen = torch.Generator().manual_seed(seed)
    usable = sizes >= 2
    groups = [torch.nonzero(usable & (counts > tail_threshold)).flatten(),
              torch.nonzero(usable & (counts <= tail_threshold)).flatten()]
    groups = [g[torch.randperm(len(g), generator=gen)].tolist() for g in groups]
    want = max_classes // 2
    head = groups[0][:max(want, max_classes - len(groups[1]))]
    tail = groups[1][:max_classes - len(head)]
    picked = sorted(head + tail)
    return picked if int(sizes[picked].sum()) >= TSNE_MIN_SAMPLES else []


def plot_tsne(features: torch.Tensor, labels: torch.Tensor, classes: Sequence[int], head: torch.Tensor,
              path: str, seed: int = 0) -> str:
    """t-SNE of the L2-normalised features of ``classes``, like Fig. 1: dots for head
    classes, triangles for tail classes, one colour per class.

    Args:
        features: (N, D) features; labels: (N,) class ids.
        classes: the classes to show; head: (C,) bool, True for head classes.

    Returns ``path``.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    labels = torch.as_tensor(labels)
    keep = torch.isin(labels, torch.as_tensor(list(classes), dtype=labels.dtype))
    x = F.normalize(torch.as_tensor(features)[keep].double(), dim=1).numpy()
    y = labels[keep].numpy()
    if len(y) < TSNE_MIN_SAMPLES:
        raise ValueError(f"t-SNE needs at least {TSNE_MIN_SAMPLES} samples, the chosen classes have {len(y)}")
    # sklearn requires perplexity < n_samples; 30 is its default for larger sets.
    perplexity = min(30.0, max(1.0, (len(y) - 1) / 3))
    # One thread: a figure's few hundred points take about a second that way, while
    # sklearn's OpenMP threads spin-wait on a busy machine (measured on 2 loaded cores,
    # 40 points: 0.4 s with one thread, 9.6 s with the default).
    with threadpool_limits(limits=1, user_api="openmp"):
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    fig = Figure(figsize=(6.5, 6))
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["tab20"]
    for i, c in enumerate(classes):
        m = y == c
        is_head = bool(head[c])
        ax.scatter(xy[m, 0], xy[m, 1], s=28 if is_head else 40, marker="o" if is_head else "^",
                   color=cmap(i % 20), edgecolors="k" if not is_head else "none", linewidths=0.5,
                   label=f"class {c} ({'head' if is_head else 'tail'}, n={int(m.sum())})")
    ax.set_title("t-SNE of features: head (dots) vs tail (triangles)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, loc="best", ncol=1 if len(classes) <= 10 else 2)
    return _save(fig, path)


def read_metrics(path: str) -> list[dict]:
    """The records of a fastreid ``metrics.json`` (one JSON object per line).

    A truncated last line (a run still writing) is skipped; a bad line elsewhere raises
    ``ValueError`` naming the file and line. Records without ``iteration`` are dropped.
    """
    with open(path) as f:
        lines = f.read().splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON object: {e}") from e
        if isinstance(record, dict) and "iteration" in record:
            records.append(record)
    return records


def _curve(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, values) of ``key``; where a resumed run logged an iteration twice,
    the later record wins."""
    points = {int(r["iteration"]): float(r[key]) for r in records if isinstance(r.get(key), (int, float))}
    it = np.array(sorted(points), dtype=float)
    return it, np.array([points[int(i)] for i in it], dtype=float)


def plot_training_curves(runs: Mapping[str, str], path: str,
                         keys: Optional[Sequence[str]] = None) -> str:
    """One panel per scalar of ``keys`` (default :data:`CURVE_KEYS`) present in any run,
    each run overlaid (e.g. ``{"baseline": ".../metrics.json", "LEAP": ".../metrics.json"}``).

    Raises:
        FileNotFoundError: a metrics file is missing (from ``open``, naming it).
        ValueError: none of ``keys`` appears in any run.

    Returns ``path``.
    """
    records = {label: read_metrics(metrics) for label, metrics in runs.items()}
    keys = [k for k in (keys or CURVE_KEYS) if any(len(_curve(r, k)[0]) for r in records.values())]
    if not keys:
        raise ValueError(f"none of {list(CURVE_KEYS)} in {', '.join(runs.values())}")
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig = Figure(figsize=(4.6 * cols, 3.4 * rows))
    for i, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1)
        for label, recs in records.items():
            it, v = _curve(recs, key)
            if len(it):
                ax.plot(it, v, marker="o" if len(it) <= 5 else None, ms=4, label=label)
        ax.set_title(key)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=8)
    return _save(fig, path)
