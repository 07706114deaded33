"""``LongTailMarginLoss``: the peer long-tail methods behind arcface_torch's margin contract.

``margin_loss(logits, labels) -> scaled logits``, like ``CombinedMarginLoss`` and
:class:`~leap_plugin.face.LeapMarginLoss`, with the methods of
:data:`leap_plugin.core.longtail.COUNT_METHODS` (the same table as the fastreid layers):

- ``"ldam"``: LDAM (Cao et al., NeurIPS 2019): target ``s * (cos_y - m_y)``,
  ``m_i = C / K_i^(1/4)`` with the rarest class at ``max_m``;
- ``"balanced_softmax"``: Balanced Softmax / logit adjustment (Ren et al., NeurIPS 2020;
  Menon et al., ICLR 2021): every logit ``+ tau * log(pi_j)``, on top of the CosFace margin
  ``m3`` of ``margin_list`` (0 for the papers' plain softmax);
- ``"adaptive_arc"``: ArcFace with frequency-adaptive margins (Ha et al., 2020):
  target ``s * cos(theta_y + m_y)``, ``m_i = a * K_i^(-lambda) + b``;
- ``"gcl"``: Gaussian Clouded Logit (Li et al., CVPR 2022): every cosine loses
  ``a_j * |eps_nj|``, ``eps ~ N(0, (1/3)^2)`` clamped to [-1, 1], a fresh draw per element,
  ``a_j = noise_mul * (ln K_max - ln K_j) / (ln K_max - ln K_min)``; then the CosFace margin
  ``m3`` of ``margin_list`` on the target (0 in the paper).

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

from ..core.cloud import check_labels
from ..core.longtail import COUNT_METHODS
from .elastic import ElasticMarginLoss
from .margin import check_margin_list

__all__ = ["LongTailMarginLoss", "LONG_TAIL_METHODS", "peer_margin_loss"]

#: ``long_tail_loss.method`` -> its hyperparameters and their defaults (the papers' values):
#: the count-aware methods, and ElasticFace (whose mean margin and form, Arc or Cos, come
#: from ``margin_list``; ``std`` None: the paper's).
LONG_TAIL_METHODS = {**{name: method.options for name, method in COUNT_METHODS.items()},
                     "elastic_face": {"std": None, "plus": False}}


def peer_margin_loss(s: float, class_counts, method: str, margin_list: Sequence[float], **options) -> nn.Module:
    """The margin callable of ``long_tail_loss = dict(method=..., **options)``."""
    if method == "elastic_face":
        return ElasticMarginLoss(s, *margin_list, **options)
    return LongTailMarginLoss(s, class_counts, method, margin_list, **options)


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
        if method not in COUNT_METHODS:
            raise ValueError(f"method must be one of {sorted(COUNT_METHODS)}, got {method!r}")
        if s <= 0:
            raise ValueError(f"scale s must be > 0, got {s}")
        self.method = COUNT_METHODS[method]
        _, _, self.m3 = check_margin_list(margin_list, self.method)
        self.s = float(s)
        counts = torch.as_tensor(class_counts, dtype=torch.long).reshape(-1)
        vector = self.method.per_class(counts, **{k: float(v) for k, v in options.items()})
        self.options = {**self.method.options, **{k: float(v) for k, v in options.items()}}
        self.register_buffer("class_counts", counts)
        #: per-class margins (rad or cosine) or logit offsets, indexed by global class id.
        self.register_buffer("per_class", vector)
        #: ``"logit"``: the logits take one standard normal draw per element (GCL), which
        #: :class:`LeapPartialFC` supplies as ``normal=`` so they do not depend on the sharding.
        self.draws = "logit" if self.method.random else None

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, columns: Optional[torch.Tensor] = None,
                normal: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scaled logits. ``logits``: (N, C) cosines; ``labels``: (N,) or (N, 1) column of
        each row's class, -1 if not among these columns; ``columns``: (C,) global class id
        of every column (default: column j is class j); ``normal``: for GCL, (N, C) standard
        normal draws (default: torch's global generator)."""
        labels = check_labels(labels, logits.shape[1]).long()
        if columns is None and logits.shape[1] != self.per_class.numel():
            raise ValueError(f"{logits.shape[1]} logit columns but {self.per_class.numel()} classes: "
                             "pass columns= (the global class id of every column)")
        return self.method.logits(logits, labels, self.s, self.per_class, self.m3, columns, normal)

    def extra_repr(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"method={self.method.name}, s={self.s}, classes={self.per_class.numel()}, {options}"
