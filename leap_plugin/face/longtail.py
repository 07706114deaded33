"""``LongTailMarginLoss``: the peer long-tail methods behind arcface_torch's margin contract.

``margin_loss(logits, labels) -> scaled logits``, like ``CombinedMarginLoss`` and
:class:`~leap_plugin.face.LeapMarginLoss`, with the per-class vectors of
:mod:`leap_plugin.core.longtail` (the same math as the fastreid layers in
:mod:`leap_plugin.reid.peers`):

- ``"ldam"``: LDAM (Cao et al., NeurIPS 2019): target ``s * (cos_y - m_y)``,
  ``m_i = C / K_i^(1/4)`` with the rarest class at ``max_m``;
- ``"balanced_softmax"``: Balanced Softmax / logit adjustment (Ren et al., NeurIPS 2020;
  Menon et al., ICLR 2021): every logit ``+ tau * log(pi_j)``, on top of the CosFace margin
  ``m3`` of ``margin_list`` (0 for the papers' plain softmax);
- ``"adaptive_arc"``: ArcFace with frequency-adaptive margins (Ha et al., 2020):
  target ``s * cos(theta_y + m_y)``, ``m_i = a * K_i^(-lambda) + b``.

Called by arcface_torch's own ``PartialFC_V2`` (one process, ``sample_rate = 1``) the logit
columns are the class ids. Sharded or sampled, they are not: :class:`LeapPartialFC` passes
``columns=`` (the global class id of every column) so margins and offsets follow the class.
Class-balanced re-weighting and DRW weight the loss, not the logits, so they are not a margin
and are only in the fastreid adapter.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from ..core import arcface_logits, cosface_logits
from ..core.longtail import adaptive_arc_margins, ldam_margins, logit_adjustment, per_sample

__all__ = ["LongTailMarginLoss", "LONG_TAIL_METHODS"]

#: method -> its hyperparameters and their defaults (the papers' values, see the fastreid layers).
LONG_TAIL_METHODS = {
    "ldam": {"max_m": 0.5},
    "balanced_softmax": {"tau": 1.0},
    "adaptive_arc": {"a": 0.5, "lam": 0.25, "b": 0.05},
}


class LongTailMarginLoss(nn.Module):
    """A class-count-aware margin callable for arcface_torch's (Leap)PartialFC.

    Args:
        s: scale of the logits.
        class_counts: K_i of every class, indexed by global class id (all >= 1).
        method: one of :data:`LONG_TAIL_METHODS`.
        margin_list: arcface_torch's ``(m1, m2, m3)``; only ``"balanced_softmax"`` uses it
            (``m3``, a CosFace margin on the target); LDAM and the adaptive ArcFace margin
            replace the margin, so they need ``m2 = m3 = 0`` (the default).
        **options: the method's hyperparameters (defaults in :data:`LONG_TAIL_METHODS`).

    The derivative is the exact one of the margin logits, as in the methods' papers.
    """

    uses_columns = True  # LeapPartialFC passes the global class id of each logit column

    def __init__(self, s: float, class_counts: Union[Sequence[int], torch.Tensor], method: str,
                 margin_list: Sequence[float] = (1.0, 0.0, 0.0), **options: float):
        super().__init__()
        if method not in LONG_TAIL_METHODS:
            raise ValueError(f"method must be one of {sorted(LONG_TAIL_METHODS)}, got {method!r}")
        unknown = sorted(set(options) - set(LONG_TAIL_METHODS[method]))
        if unknown:
            raise ValueError(f"unknown options {unknown} for {method!r}; allowed: "
                             f"{sorted(LONG_TAIL_METHODS[method])}")
        if s <= 0:
            raise ValueError(f"scale s must be > 0, got {s}")
        m1, m2, m3 = (float(m) for m in margin_list)
        if m1 != 1.0 or m2 != 0.0 or m3 < 0 or (m3 > 0 and method != "balanced_softmax"):
            raise ValueError(f"margin_list ({m1}, {m2}, {m3}) is not allowed with {method!r}: use "
                             "(1.0, 0.0, 0.0), or (1.0, 0.0, m_c) with balanced_softmax")
        self.s, self.method, self.m3 = float(s), method, m3
        self.options = {**LONG_TAIL_METHODS[method], **{k: float(v) for k, v in options.items()}}
        counts = torch.as_tensor(class_counts, dtype=torch.long).reshape(-1)
        if method == "ldam":
            vector = ldam_margins(counts, self.options["max_m"])
        elif method == "balanced_softmax":
            vector = logit_adjustment(counts, self.options["tau"])
        else:
            vector = adaptive_arc_margins(counts, self.options["a"], self.options["lam"], self.options["b"])
        self.register_buffer("class_counts", counts)
        #: per-class margins (rad or cosine) or logit offsets, indexed by global class id.
        self.register_buffer("per_class", vector)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor,
                columns: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scaled logits. ``logits``: (N, C) cosines; ``labels``: (N,) or (N, 1) column of
        each row's class, -1 if not among these columns; ``columns``: (C,) global class id
        of every column (default: column j is class j)."""
        labels = labels.reshape(-1).long()
        if columns is None:
            if logits.shape[1] != self.per_class.numel():
                raise ValueError(f"{logits.shape[1]} logit columns but {self.per_class.numel()} classes: "
                                 "pass columns= (the global class id of every column)")
            columns = torch.arange(logits.shape[1], device=logits.device)
        per_class = self.per_class.to(logits.device)[columns]
        if self.method == "balanced_softmax":
            return cosface_logits(logits, labels, self.s, self.m3) + per_class.to(logits.dtype)
        margins = per_sample(per_class, labels)  # (N, 1); rows with label -1 have no target
        if self.method == "ldam":
            return cosface_logits(logits, labels, self.s, margins.to(logits.dtype))
        return arcface_logits(logits, labels, self.s, margins)

    def extra_repr(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"method={self.method}, s={self.s}, classes={self.per_class.numel()}, {options}"
