"""LEAP classification layers for fastreid (Eq. 7-8).

fastreid looks classification layers up by name in ``fastreid.layers.any_softmax``
(``MODEL.HEADS.CLS_LAYER``); these are added there on import. They keep fastreid's
``forward(logits, targets)`` contract (cosine logits in, scaled logits out) and take
an optional per-sample cloud variance; without it they equal ``CosSoftmax`` /
``ArcSoftmax``, so a baseline and its LEAP version differ only by alpha.
"""
from __future__ import annotations

from typing import Optional

import torch
from fastreid.layers import any_softmax

from ..core import arcface_logits, check_setting, clouded_logits, cosface_logits

__all__ = ["LeapCosSoftmax", "LeapArcSoftmax"]


class _LeapSoftmax(any_softmax.Linear):
    """Shared plumbing: ``alpha_mode`` and the alpha draw; subclasses set ``logits_fn``."""

    def __init__(self, num_classes: int, scale: float, margin: float, alpha_mode: str = "logit"):
        super().__init__(num_classes, scale, margin)
        self.alpha_mode = check_setting("alpha_mode", alpha_mode)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                variance: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Args:
            logits: (N, C) cosines. targets: (N,) class ids, -1 = not among these columns.
            variance: optional (N,) cloud variance per sample (rad^2); None or all zero = no cloud.
        """
        return clouded_logits(self.logits_fn, logits, targets, self.s, self.m, variance, self.alpha_mode)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", alpha_mode={self.alpha_mode}"


class LeapCosSoftmax(_LeapSoftmax):
    """CosFace (Eq. 1) with the feature cloud (Eq. 7); ``margin`` is the cosine margin m_c."""

    logits_fn = staticmethod(cosface_logits)


class LeapArcSoftmax(_LeapSoftmax):
    """ArcFace (Eq. 2) with the feature cloud (Eq. 8); ``margin`` is the angular margin m_a in radians."""

    logits_fn = staticmethod(arcface_logits)


for _cls in (LeapCosSoftmax, LeapArcSoftmax):
    setattr(any_softmax, _cls.__name__, _cls)
    if _cls.__name__ not in any_softmax.__all__:
        any_softmax.__all__.append(_cls.__name__)
