"""``LeapMarginLoss``: arcface_torch's ``CombinedMarginLoss`` contract with the feature cloud.

arcface_torch (``recognition/arcface_torch`` in deepinsight/insightface) calls its margin as
``margin_loss(logits, labels) -> scaled logits`` with cosine logits in and labels shaped
(N, 1) or (N,), where -1 means "this row's class is not among these columns" (another rank's
shard). ``margin_list = (m1, m2, m3)`` selects the loss exactly as arcface_torch reads it:
``(1.0, m2, 0.0)`` is ArcFace (Eq. 2, angular margin m2 in radians), ``(1.0, 0.0, m3)`` is
CosFace (Eq. 1, cosine margin m3). With a per-sample cloud variance (or explicit alpha) the
logits become LEAP's Eq. 7 / Eq. 8, computed by :mod:`leap_plugin.core.cloud`.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..core import arcface_logits, check_setting, clouded_logits, cosface_logits
from ..core.cloud import check_labels, cloud_rows
from ..core.longtail import CountMethod
from ..validation import fail, is_number

__all__ = ["LeapMarginLoss", "check_margin_list"]


def check_margin_list(margin_list: Sequence[float], method: Optional[CountMethod] = None) -> tuple[float, float, float]:
    """arcface_torch's ``margin_list = (m1, m2, m3)`` as this adapter reads it: ``(1.0, m_a, 0.0)``
    ArcFace, ``(1.0, 0.0, m_c)`` CosFace (margins >= 0, at most one non-zero; m1, the
    multiplicative margin, must be 1.0). A count-aware peer ``method`` sets the margin itself:
    ``(1.0, 0.0, 0.0)``, or ``(1.0, 0.0, m_c)`` where it keeps a CosFace margin.

    Raises:
        ConfigError: naming ``margin_list`` and what is allowed.
    """
    allowed = "use (1.0, m_a, 0.0) for ArcFace or (1.0, 0.0, m_c) for CosFace, margins >= 0"
    if method is not None:
        allowed = (f"{method.name} sets the margins itself: use (1.0, 0.0, 0.0)"
                   + (", or (1.0, 0.0, m_c) for a CosFace margin" if method.uses_margin else ""))
    if not isinstance(margin_list, (list, tuple)) or len(margin_list) != 3 or not all(map(is_number, margin_list)):
        fail("margin_list", margin_list, allowed)
    m1, m2, m3 = (float(m) for m in margin_list)
    bad = m1 != 1.0 or m2 < 0 or m3 < 0 or (m2 > 0 and m3 > 0)
    if method is not None:
        bad = bad or m2 != 0 or (m3 != 0 and not method.uses_margin)
    if bad:
        fail("margin_list", tuple(margin_list), allowed)
    return m1, m2, m3


class _ScaledPassThrough(torch.autograd.Function):
    """Forward: the margin logits ``compute()``; backward: ``d logit / d cos = scale``.

    This is arcface_torch's gradient: its ``CombinedMarginLoss`` applies the ArcFace
    arccos/cos under ``torch.no_grad()``, so the margin (and here the cloud) changes the
    logit values, hence the softmax probabilities, while the gradient reaching the cosines
    is ``s * (p - y)`` as for a plain scaled softmax. For CosFace without a cloud this is
    the exact derivative.
    """

    @staticmethod
    def forward(ctx, cos: torch.Tensor, compute: Callable[[], torch.Tensor], scale: float):
        ctx.scale = scale
        return compute()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None, None


class LeapMarginLoss(nn.Module):
    """CombinedMarginLoss(s, m1, m2, m3, interclass_filtering_threshold) plus the feature cloud.

    Args:
        s: scale of the logits (64 in the paper's face experiments).
        m1: multiplicative angular margin; only 1.0 is supported (as in arcface_torch).
        m2: additive angular margin m_a in radians (ArcFace, Eq. 2 / 8; 0.5 in the paper).
        m3: additive cosine margin m_c (CosFace, Eq. 1 / 7; 0.35 in the paper, 0.4 in
            arcface_torch's configs). At most one of m2, m3 may be non-zero.
        interclass_filtering_threshold: as in arcface_torch, non-target cosines above this
            value are set to 0 (treated as label noise); 0 disables it.
        alpha_mode: ``"logit"`` (one alpha draw per logit, the paper's alpha in R^{1xC}) or
            ``"sample"`` (one draw per sample shared by its logits).
        exact_grad: False (default) keeps arcface_torch's gradient (see
            :class:`_ScaledPassThrough`), so that with the cloud off this module trains
            exactly like ``CombinedMarginLoss``; True differentiates Eq. 7 / 8 exactly.
    """

    def __init__(
        self,
        s: float,
        m1: float,
        m2: float,
        m3: float,
        interclass_filtering_threshold: float = 0,
        alpha_mode: str = "logit",
        exact_grad: bool = False,
    ):
        super().__init__()
        if s <= 0:
            raise ValueError(f"scale s must be > 0, got {s}")
        m1, m2, m3 = check_margin_list((m1, m2, m3))
        check_setting("alpha_mode", alpha_mode)
        self.s = float(s)
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)
        self.interclass_filtering_threshold = float(interclass_filtering_threshold)
        self.alpha_mode = alpha_mode
        self.exact_grad = bool(exact_grad)
        # arcface_torch's rule: m3 > 0 is CosFace, otherwise ArcFace (m2 = 0 is NormFace).
        self.kind = "cosface" if self.m3 > 0 else "arcface"
        self._margin = self.m3 if self.kind == "cosface" else self.m2
        self._logits_fn = cosface_logits if self.kind == "cosface" else arcface_logits

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        variance: Optional[torch.Tensor] = None,
        alpha: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        rows: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Scaled margin logits, with the feature cloud where asked for.

        Args:
            logits: (N, C) cosines in [-1, 1].
            labels: (N,) or (N, 1) target column per row, -1 = not among these columns.
            variance: optional (N,) cloud variance (rad^2) per sample; alpha is drawn
                (mode ``alpha_mode``, from ``generator``) only for rows with variance > 0,
                the other rows get the plain margin.
            alpha: optional angles in radians to use instead of drawing: (N, C) or (N, 1),
                or one row per entry of ``rows``.
            rows: with ``alpha``, the rows it perturbs (ascending); the others get the plain margin.
        """
        labels = check_labels(labels, logits.shape[1]).long()
        if self.interclass_filtering_threshold > 0:
            logits = self._filter(logits, labels)

        def compute() -> torch.Tensor:
            if alpha is not None:
                target = torch.arange(logits.shape[0], device=logits.device) if rows is None else rows
                return cloud_rows(self._logits_fn, logits, labels, self.s, self._margin, target, alpha)
            # Only clouded rows pay for the perturbation of Eq. 7 / 8.
            return clouded_logits(self._logits_fn, logits, labels, self.s, self._margin, variance,
                                  self.alpha_mode, generator)

        if self.exact_grad:
            return compute()
        return _ScaledPassThrough.apply(logits, compute, self.s)

    def _filter(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Zero non-target cosines above the threshold (arcface_torch's inter-class filtering)."""
        dirty = logits > self.interclass_filtering_threshold
        idx = (labels != -1).nonzero(as_tuple=True)[0]
        dirty[idx, labels[idx]] = False
        return logits.masked_fill(dirty, 0.0)

    def extra_repr(self) -> str:
        return (f"s={self.s}, margin_list=({self.m1}, {self.m2}, {self.m3}) [{self.kind}], "
                f"alpha_mode={self.alpha_mode}, exact_grad={self.exact_grad}")
