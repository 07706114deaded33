"""ElasticFace: a random margin per sample, the same distribution for every class.

Boutros et al., "ElasticFace: Elastic Margin Loss for Deep Face Recognition", CVPR
Workshops 2022. Each labelled sample draws its own margin ``m_n ~ N(mean, std^2)``:

- ElasticFace-Arc: target ``s * cos(theta_y + m_n)`` (an angle in radians; mean 0.5);
- ElasticFace-Cos: target ``s * (cos theta_y - m_n)`` (a cosine; mean 0.35);

the other logits stay ``s * cos theta_j``. The "+" variant (ElasticFace+) hands the batch's
draws out by how close each sample is to its class: sorted, the smallest margin goes to the
sample with the highest target cosine and the largest to the hardest one (the paper's
stated rule). The authors' code indexes the ascending margins with the descending-cosine
order, which permutes the draws without that pairing; we implement the paper's pairing.

The draws are not clamped (as in the authors' code); the ArcFace angle is clipped to [0, pi]
as everywhere in this package (:func:`~leap_plugin.core.cloud.arcface_logits`), where the
authors' code would let ``theta + m`` pass pi. It is the published form of LEAP's
``uniform`` control: noise of one size for every class, nothing transferred from head to tail.
"""
from __future__ import annotations

from typing import Optional

import torch

from .cloud import arcface_logits, check_labels, cosface_logits

__all__ = ["ELASTIC_KINDS", "paper_std", "elastic_margins", "pair_by_cosine", "elastic_logits", "target_cosines"]

#: ``"arc"``: ElasticFace-Arc (angular margin, radians); ``"cos"``: ElasticFace-Cos (cosine margin).
ELASTIC_KINDS = ("arc", "cos")

# The paper's standard deviations (its Sec. 4 and the authors' config): 0.05 for the plain
# forms, smaller for the sorted "+" forms.
_PAPER_STD = {("arc", False): 0.05, ("cos", False): 0.05, ("arc", True): 0.0175, ("cos", True): 0.02}


def paper_std(kind: str, plus: bool = False) -> float:
    """The std of the margin draws the paper uses for ElasticFace-``kind`` (``+`` with ``plus``)."""
    if kind not in ELASTIC_KINDS:
        raise ValueError(f"kind must be one of {ELASTIC_KINDS}, got {kind!r}")
    return _PAPER_STD[(kind, bool(plus))]


def pair_by_cosine(margins: torch.Tensor, target_cos: torch.Tensor) -> torch.Tensor:
    """ElasticFace+'s assignment: the same values as ``margins`` (R,), reordered so that the
    k-th highest ``target_cos`` (R,) gets the k-th smallest margin (ties: the earlier row first)."""
    order = torch.argsort(target_cos, descending=True, stable=True)
    out = torch.empty_like(margins)
    out[order] = torch.sort(margins).values
    return out


def elastic_margins(
    normal: torch.Tensor, mean: float, std: float, target_cos: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Per-row margins ``mean + std * normal`` (N,) from standard normal draws ``normal`` (N,).

    With ``target_cos`` (N,), ElasticFace+: the draws are paired with the rows by
    :func:`pair_by_cosine` among the rows whose target cosine is not NaN (rows with no class
    have NaN and keep their own draw, which no logit uses).
    """
    margins = mean + std * normal.float()
    if target_cos is None:
        return margins
    rows = (~torch.isnan(target_cos)).nonzero(as_tuple=True)[0]
    margins[rows] = pair_by_cosine(margins[rows], target_cos[rows].float())
    return margins


def target_cosines(cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``cos[n, y_n]`` (N,) float32, NaN for rows labelled -1."""
    labels = check_labels(labels, cos.shape[1])
    out = torch.full((cos.shape[0],), float("nan"), device=cos.device)
    rows = (labels != -1).nonzero(as_tuple=True)[0]
    out[rows] = cos[rows, labels[rows]].detach().float()
    return out


def elastic_logits(
    kind: str,
    cos: torch.Tensor,
    labels: torch.Tensor,
    scale: float,
    mean: float,
    std: float,
    plus: bool = False,
    normal: Optional[torch.Tensor] = None,
    target_cos: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """ElasticFace-Arc / -Cos scaled logits of cosines ``cos`` (N, C).

    Args:
        kind: ``"arc"`` or ``"cos"``.
        labels: (N,) or (N, 1) target column per row; -1 = no target among these columns.
        scale: s. mean, std: of the margin draws (radians for ``arc``, a cosine for ``cos``).
        plus: ElasticFace+ (:func:`pair_by_cosine`).
        normal: (N,) standard normal draws, one per row (default: from torch's global
            generator). A row labelled -1 consumes its draw without using it, so that a row's
            margin does not depend on which rows of the batch have their class here.
        target_cos: with ``plus``, (N,) target cosines that decide the pairing, NaN for rows
            without a class (default: :func:`target_cosines` of ``cos``). Pass the whole
            batch's when the class columns are split across ranks.

    The gradient is the exact one of these logits (the margin draws have none).
    """
    if kind not in ELASTIC_KINDS:
        raise ValueError(f"kind must be one of {ELASTIC_KINDS}, got {kind!r}")
    labels = check_labels(labels, cos.shape[1])
    if normal is None:
        normal = torch.randn(cos.shape[0], device=cos.device)
    if plus and target_cos is None:
        target_cos = target_cosines(cos, labels)
    margins = elastic_margins(normal, mean, std, target_cos if plus else None).unsqueeze(1)
    if kind == "cos":
        return cosface_logits(cos, labels, scale, margins.to(cos.dtype))
    return arcface_logits(cos, labels, scale, margins)
