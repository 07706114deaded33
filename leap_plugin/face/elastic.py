"""``ElasticMarginLoss``: ElasticFace behind arcface_torch's margin contract.

``margin_loss(logits, labels) -> scaled logits`` like ``CombinedMarginLoss``: drop it into
arcface_torch's ``PartialFC_V2`` or :class:`~leap_plugin.face.LeapPartialFC` (LEAP off). The
margin of each labelled row is drawn afresh at every call from ``N(mean, std^2)``
(:mod:`leap_plugin.core.elastic`): ``margin_list = (1.0, m, 0.0)`` is ElasticFace-Arc with
mean ``m`` radians, ``(1.0, 0.0, m)`` ElasticFace-Cos with mean ``m``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..core.cloud import check_labels
from ..core.elastic import elastic_logits, paper_std
from .margin import check_margin_list

__all__ = ["ElasticMarginLoss"]


class ElasticMarginLoss(nn.Module):
    """ElasticFace(-Arc / -Cos, optionally "+") as an arcface_torch margin callable.

    Args:
        s: scale of the logits (64 in the paper).
        m1, m2, m3: arcface_torch's ``margin_list``: ``(1.0, m_a, 0.0)`` ElasticFace-Arc with
            mean margin ``m_a`` radians (the paper: 0.5), ``(1.0, 0.0, m_c)`` ElasticFace-Cos
            with mean ``m_c`` (the paper: 0.35). One of them must be > 0.
        std: std of the margin draws (None: the paper's, 0.05; with ``plus`` 0.0175 Arc,
            0.02 Cos).
        plus: ElasticFace+: the batch's draws sorted so that the sample with the highest
            target cosine gets the smallest margin.

    The gradient is the exact one of the margin logits, as in the authors' code.
    Under :class:`LeapPartialFC` the draws come from a generator shared by every rank
    (``normal=``) and, for ``plus``, the pairing uses the whole batch's target cosines
    (``target_cos=``), so a sharded run equals a one-process run.
    """

    draws = "row"  # LeapPartialFC supplies one standard normal draw per row of the global batch

    def __init__(self, s: float, m1: float, m2: float, m3: float, std: Optional[float] = None,
                 plus: bool = False):
        super().__init__()
        if s <= 0:
            raise ValueError(f"scale s must be > 0, got {s}")
        _, m2, m3 = check_margin_list((m1, m2, m3))
        if m2 == 0 and m3 == 0:
            raise ValueError("ElasticFace needs a mean margin: margin_list (1.0, m, 0.0) for ElasticFace-Arc "
                             "or (1.0, 0.0, m) for ElasticFace-Cos, m > 0")
        self.kind = "cos" if m3 > 0 else "arc"
        self.s = float(s)
        self.mean = float(m3 if self.kind == "cos" else m2)
        self.plus = bool(plus)
        self.std = paper_std(self.kind, self.plus) if std is None else float(std)
        if self.std < 0:
            raise ValueError(f"std must be >= 0, got {self.std}")
        self.needs_target_cos = self.plus

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, normal: Optional[torch.Tensor] = None,
                target_cos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scaled logits of (N, C) cosines; ``labels`` (N,) or (N, 1), -1 = not among these
        columns; ``normal`` (N,) standard normal draws (default: torch's global generator);
        ``target_cos`` (N,) target cosines of the whole batch for ``plus`` (NaN: no class)."""
        labels = check_labels(labels, logits.shape[1]).long()
        return elastic_logits(self.kind, logits, labels, self.s, self.mean, self.std, self.plus, normal, target_cos)

    def extra_repr(self) -> str:
        return f"ElasticFace-{self.kind.capitalize()}{'+' if self.plus else ''}, s={self.s}, mean={self.mean}, std={self.std}"
