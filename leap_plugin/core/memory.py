"""Class centers (Eq. 3-4), the angle memory (Eq. 5) and per-class angle statistics.

Everything lives in buffers of one module, so a toolbox's checkpointing saves and
restores it, and every update is vectorised over the batch (no Python loop over
classes or samples). Under torch.distributed the update uses the all-gathered global
batch, so all ranks hold identical state.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import logging

import torch
import torch.nn.functional as F
from torch import nn

from ..validation import require_counts
from .cloud import COS_EPS, check_labels
from .distributed import all_gather_rows
from .settings import DEFAULTS, LeapSettings
from .variance import Reduce, cloud_variance

__all__ = ["LeapMemory", "LeapStateMismatch", "group_ranks"]

logger = logging.getLogger("leap_plugin.memory")


class LeapStateMismatch(ValueError):
    """A checkpoint's LEAP state was built for other K_i or another memory factor."""


def group_ranks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort ``labels`` stably and number the samples of each class 0, 1, ... in batch order.

    Returns ``(order, rank_in_class, class_size)``, the last two aligned with ``labels[order]``.
    """
    order = torch.argsort(labels, stable=True)
    _, sizes = torch.unique_consecutive(labels[order], return_counts=True)
    starts = torch.cumsum(sizes, 0) - sizes
    n = labels.shape[0]
    rank = torch.arange(n, device=labels.device) - torch.repeat_interleave(starts, sizes)
    return order, rank, torch.repeat_interleave(sizes, sizes)


class LeapMemory(nn.Module):
    """Class centers, the angle memory and the feature-cloud widths of LEAP.

    Args:
        num_classes: C.
        feat_dim: dimension of the features whose angles are tracked.
        class_counts: K_i, the number of training samples of each class; sets the
            memory capacity ``S_i = K_i * memory_factor`` (Eq. 5). May be set later with
            :meth:`set_class_counts` (the memory is empty until then).
        settings: the LEAP settings (:class:`~leap_plugin.core.settings.LeapSettings`; the
            shipped defaults when omitted). This module uses ``center_lr`` (gamma of Eq. 4),
            ``center_update``, ``memory_factor`` (P of Eq. 5), ``version``,
            ``tail_threshold`` (T), ``statistic``, ``cloud_scale`` and ``cloud``.
        reduce: None, or a function summing a tensor over the ranks when this memory holds
            one shard of the classes (the pooled variances of Eq. 6 / 9 and the logged
            averages then cover all classes; :mod:`leap_plugin.core.variance`).
        **overrides: settings by name, replacing those of ``settings`` (``center_lr=0.2``).
    """

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        class_counts: Optional[Union[Sequence[int], torch.Tensor]] = None,
        settings: LeapSettings = DEFAULTS,
        reduce: Reduce = None,
        **overrides: Any,
    ):
        super().__init__()
        settings = settings.replace(**overrides) if overrides else settings
        self.reduce = reduce
        self.num_classes = num_classes
        self.center_lr = settings.center_lr
        self.memory_factor = settings.memory_factor
        self.version = settings.version
        self.tail_threshold = settings.tail_threshold
        self.statistic = settings.statistic
        self.center_update = settings.center_update
        self.cloud_scale = settings.cloud_scale
        self.cloud = settings.cloud
        #: feature rows left out of the updates because they were not finite (NaN / inf)
        self.dropped_rows = 0

        self.register_buffer("centers", torch.zeros(num_classes, feat_dim))
        self.register_buffer("center_seen", torch.zeros(num_classes, dtype=torch.bool))
        # sum of the squared weights of the features averaged into each center (for "loo")
        self.register_buffer("center_weight_sq", torch.zeros(num_classes))
        self.register_buffer("angle_sum", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("angle_sumsq", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("angle_mean", torch.zeros(num_classes))
        self.register_buffer("angle_var", torch.zeros(num_classes))
        self.register_buffer("stats_valid", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("cloud_var", torch.zeros(num_classes))
        counts = torch.ones(num_classes, dtype=torch.long) if class_counts is None else class_counts
        self._allocate(torch.as_tensor(counts, dtype=torch.long))
        #: whether K_i were given (constructor, set_class_counts or a checkpoint); without
        #: them every S_i = P and no statistic means anything
        self.has_counts = class_counts is not None
        #: what loading a checkpoint whose LEAP state was built for other K_i or another P does
        #: (see :meth:`match_checkpoint`)
        self.on_mismatch = "adopt"

    # ----------------------------------------------------------------- memory layout
    def _allocate(self, counts: torch.Tensor) -> None:
        if counts.shape != (self.num_classes,):
            raise ValueError(f"class_counts must have {self.num_classes} entries, got {tuple(counts.shape)}")
        if counts.numel():  # a model built for evaluation only may have no classes
            counts = require_counts(counts, "class_counts")
        device = self.centers.device
        counts = counts.to(device)
        capacity = counts * self.memory_factor
        self.register_buffer("class_counts", counts)
        self.register_buffer("memory", torch.zeros(int(capacity.sum()), device=device))
        self.register_buffer("mem_fill", torch.zeros_like(counts))
        self.register_buffer("mem_ptr", torch.zeros_like(counts))
        # Derived from class_counts, so not saved.
        self.register_buffer("mem_offset", torch.cumsum(capacity, 0) - capacity, persistent=False)

    @property
    def capacity(self) -> torch.Tensor:
        """S_i = K_i * P (Eq. 5)."""
        return self.class_counts * self.memory_factor

    def set_class_counts(self, class_counts: Union[Sequence[int], torch.Tensor]) -> None:
        """Set K_i, size the angle memory to ``K_i * P`` and empty it."""
        self._allocate(torch.as_tensor(class_counts, dtype=torch.long))
        self.reset()
        self.has_counts = True

    def reset(self) -> None:
        """Forget centers, angles and statistics (sizes stay)."""
        for name in ("centers", "center_seen", "center_weight_sq", "angle_sum", "angle_sumsq", "angle_mean",
                     "angle_var", "stats_valid", "cloud_var", "memory", "mem_fill", "mem_ptr"):
            getattr(self, name).zero_()

    #: ``on_mismatch`` values: ``"adopt"`` takes the checkpoint's K_i and memory (evaluation,
    #: analysis: nothing to compare with); ``"rebuild"`` keeps this run's empty state
    #: (fine-tuning from weights of another split); ``"require"`` raises (a resume).
    MISMATCH_POLICIES = ("adopt", "rebuild", "require")

    def match_checkpoint(self, state_dict: dict, prefix: str) -> None:
        """Reconcile this memory with the LEAP state ``state_dict`` holds under ``prefix``
        before it is loaded, following :attr:`on_mismatch` when that state was built for
        other K_i or another ``memory_factor``: never half adopted (K_i of one run, angles
        or running sums of another). In ``"rebuild"`` the checkpoint's LEAP entries are
        removed from ``state_dict``."""
        counts = state_dict.get(prefix + "class_counts")
        if counts is None:  # no LEAP state in the checkpoint (a baseline's)
            return
        memory = state_dict.get(prefix + "memory")
        counts = counts.to(torch.long)
        consistent = memory is not None and memory.numel() == int(counts.sum()) * self.memory_factor
        if consistent and torch.equal(counts.cpu(), self.class_counts.cpu()):
            return
        found = (f"K_i of {counts.numel()} classes summing to {int(counts.sum())}, memory of "
                 f"{'no' if memory is None else memory.numel()} angles")
        wanted = (f"K_i of {self.num_classes} classes summing to {int(self.class_counts.sum())}, "
                  f"MEMORY_FACTOR {self.memory_factor}")
        other_classes = counts.numel() != self.num_classes
        if self.on_mismatch == "rebuild" or (self.on_mismatch == "adopt" and other_classes):
            for key in [k for k in state_dict if k.startswith(prefix)]:
                del state_dict[key]
            if self.on_mismatch == "rebuild":
                logger.info("LEAP: the checkpoint's centers and angle memory were built for another training "
                            "set or MEMORY_FACTOR (%s; this run: %s): rebuilt empty for this run", found, wanted)
            else:  # a model built for evaluation only, without the training classes
                logger.info("LEAP: the checkpoint's LEAP state (%s) is for another number of classes than "
                            "this model (%d): not loaded; the embedding does not depend on it", found,
                            self.num_classes)
        elif self.on_mismatch == "require" or not consistent:
            raise LeapStateMismatch(
                f"the LEAP state in this checkpoint ({found}) does not fit this run ({wanted}): "
                + ("it was trained with another MEMORY_FACTOR or DATASETS / DATASETS.LONG_TAIL setting; resume "
                   "with the same ones, or start a new OUTPUT_DIR" if self.on_mismatch == "require" else
                   "it was trained with another MEMORY_FACTOR than the one configured now"))
        else:
            self._allocate(counts)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.match_checkpoint(state_dict, prefix)
        if prefix + "class_counts" in state_dict:
            self.has_counts = True
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ----------------------------------------------------------------- updates
    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor, gathered: bool = False) -> torch.Tensor:
        """Update centers (Eq. 4) and the angle memory (Eq. 5) from a mini-batch.

        Features are detached and L2-normalised; under torch.distributed the global batch
        is all-gathered first. Per class present in the batch, ``m_i`` is the mean of its
        normalised features and ``c_i <- (1 - gamma) c_i + gamma m_i`` (``center_update="ema"``)
        or ``c_i <- (1 - gamma) m_i + gamma c_i`` (``"printed"``); ``c_i <- m_i`` the first
        time. Then ``beta = arccos(cos(f_n, c_{y_n}))`` (Eq. 3) of each sample is written to
        its class's ring buffer of capacity ``K_i * P``. Rows of label -1 and rows that are
        not finite are left out (:attr:`dropped_rows` counts the latter). ``gathered``: the
        caller passes the global batch already (no all-gather here).

        Returns:
            the angles of the rows kept, in radians, in the order of the gathered batch
            (NaN where the ``loo`` statistic has no center to measure against).
        """
        labels = check_labels(labels.detach(), self.num_classes).long()
        feats = features.detach().float()
        if not gathered:
            feats, labels = all_gather_rows(feats, labels)
        finite = torch.isfinite(feats).all(dim=1)
        keep = (labels >= 0) & finite
        dropped = int((~finite).sum())
        if dropped:
            self.dropped_rows += dropped
        feats, labels = F.normalize(feats[keep], dim=1), labels[keep]
        if labels.numel() == 0:
            return feats.new_zeros(0)

        # Only the classes in the batch are touched: with 10^5 classes, whole-table
        # temporaries would cost more than the rest of the training step.
        classes, inverse = torch.unique(labels, return_inverse=True)
        n = torch.bincount(inverse, minlength=classes.numel()).to(feats.dtype)
        mean = torch.zeros(classes.numel(), feats.shape[1], device=feats.device).index_add_(0, inverse, feats)
        mean = mean / n.unsqueeze(1)
        seen = self.center_seen[classes]
        gamma = self.center_lr
        # The weight of the batch mean and of the previous center in the new center.
        w_new, w_old = (gamma, 1 - gamma) if self.center_update == "ema" else (1 - gamma, gamma)
        self.centers[classes] = torch.where(seen.unsqueeze(1), w_new * mean + w_old * self.centers[classes],
                                            mean)
        # Each center is a weighted mean of past features: a batch feature weighs
        # a = w_new / n_i (1 / n_i for a new class), older ones w_old times their previous
        # weight; S = sum of squared weights, kept per class.
        self.center_weight_sq[classes] = torch.where(
            seen, w_new ** 2 / n + w_old ** 2 * self.center_weight_sq[classes], 1.0 / n)
        self.center_seen[classes] = True

        center = self.centers[labels]
        correction = torch.ones_like(labels, dtype=feats.dtype)
        if self.statistic == "loo":
            # Leave-one-out: remove f_n's own share a_n. The rest is a mean of other samples
            # with squared-weight sum S_-n = (S - a_n^2) / (1 - a_n)^2, so it sits off the
            # true center by sqrt(S_-n) of the spread and E[angle^2] grows by (1 + S_-n):
            # divide it out (the paper's statistic instead shrinks with few samples: docs/design.md).
            a = (torch.where(seen, w_new, 1.0) / n)[inverse]
            center = center - a.unsqueeze(1) * feats
            s_rest = (self.center_weight_sq[labels] - a ** 2) / (1 - a).clamp_min(1e-12) ** 2
            correction = (1 + s_rest.clamp_min(0)).rsqrt()

        norm = center.norm(dim=1)
        cos = (feats * center).sum(1) / norm.clamp_min(1e-12)
        angles = torch.acos(cos.clamp(-1 + COS_EPS, 1 - COS_EPS)) * correction
        measurable = norm > 1e-6
        angles = torch.where(measurable, angles, torch.full_like(angles, float("nan")))
        self._write(labels[measurable], angles[measurable])
        return angles

    def _write(self, labels: torch.Tensor, angles: torch.Tensor) -> None:
        """Append angles to the per-class ring buffers, oldest entries overwritten."""
        if labels.numel() == 0:
            return
        order, rank, size = group_ranks(labels)
        labels, angles = labels[order], angles[order]
        cap = self.capacity[labels]
        # Of more than S_i new angles of one class only the last S_i survive.
        survive = rank >= size - cap
        local = (self.mem_ptr[labels] + rank) % cap
        kept, slot = labels[survive], self.mem_offset[labels[survive]] + local[survive]
        # Running per-class sums (float64) keep the statistics O(classes), not O(memory):
        # a slot below the fill level holds an angle that is now overwritten.
        new = angles[survive]
        old = torch.where(local[survive] < self.mem_fill[kept], self.memory[slot], torch.zeros_like(new))
        self.angle_sum.index_add_(0, kept, new.double() - old.double())
        self.angle_sumsq.index_add_(0, kept, new.double() ** 2 - old.double() ** 2)
        self.memory[slot] = new
        n_new = torch.bincount(labels, minlength=self.num_classes)
        self.mem_ptr.copy_((self.mem_ptr + n_new) % self.capacity)
        self.mem_fill.copy_(torch.minimum(self.mem_fill + n_new, self.capacity))

    @torch.no_grad()
    def refresh_statistics(self) -> None:
        """mu_i and the unbiased sigma_i^2 of each class's filled memory entries (from the
        running sums), and the per-class cloud variance (Eq. 6 or Eq. 9). Classes with
        fewer than two angles have no statistics and no cloud."""
        n = self.mem_fill.double()
        mean = self.angle_sum / n.clamp_min(1)
        var = ((self.angle_sumsq - self.angle_sum * mean) / (n - 1).clamp_min(1)).clamp_min(0)
        valid = self.mem_fill >= 2
        self.angle_mean.copy_(torch.where(valid, mean, 0.0).float())
        self.angle_var.copy_(torch.where(valid, var, 0.0).float())
        self.stats_valid.copy_(valid)
        self.cloud_var.copy_(cloud_variance(self.angle_var, valid, self.class_counts, self.version,
                                            self.tail_threshold, self.cloud_scale, self.cloud, self.reduce))

    def cloud_variance_of(self, labels: torch.Tensor) -> torch.Tensor:
        """The cloud variance (rad^2) of each sample's class, the variance of its alpha
        draws (Eq. 6 / 9 times ``cloud_scale^2``); 0 for labels of -1."""
        labels = labels.reshape(-1).long()
        var = self.cloud_var[labels.clamp_min(0)]
        return torch.where(labels >= 0, var, torch.zeros_like(var))

    # ----------------------------------------------------------------- reporting
    def summary(self) -> dict[str, float]:
        """Scalars for logging: head vs tail angular mean / variance (head = K_i > T; NaN
        where a group has no class with statistics), the number of clouded classes and
        the mean cloud width (std of alpha, rad), over all classes (all shards)."""
        valid = self.stats_valid
        head = valid & (self.class_counts > self.tail_threshold)
        tail = valid & (self.class_counts <= self.tail_threshold)
        clouded = self.cloud_var > 0
        width = self.cloud_var.clamp_min(0).sqrt()
        masks = (head, head, tail, tail, clouded)
        values = (self.angle_mean, self.angle_var, self.angle_mean, self.angle_var, width)
        sums = torch.stack([(x * m).sum() for x, m in zip(values, masks)] + [m.sum().float() for m in masks]
                           + [valid.sum().float()]).double()
        if self.reduce is not None:
            sums = self.reduce(sums)
        num, den = sums[:5].tolist(), sums[5:10].tolist()
        avg = [n / d if d > 0 else float("nan") for n, d in zip(num, den)]
        return {
            "leap/head_angle_mean": avg[0],
            "leap/head_angle_var": avg[1],
            "leap/tail_angle_mean": avg[2],
            "leap/tail_angle_var": avg[3],
            "leap/classes_with_stats": float(sums[10]),
            "leap/clouded_classes": den[4],
            "leap/cloud_width": avg[4],
        }
