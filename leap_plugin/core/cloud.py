"""The feature cloud in the loss: perturbed CosFace / ArcFace logits (Eq. 7-8).

A sample of a class whose angular variance is below the target variance gets a
random angle ``alpha ~ N(0, v)`` added to the angle ``theta_j`` between its
feature and every class weight ``W_j`` before the margin and the scale are applied.
All angles are in radians.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch

__all__ = ["ALPHA_MODES", "sample_alpha", "cosface_logits", "arcface_logits", "COS_EPS"]

#: ``"logit"``: one draw per logit (the paper's alpha in R^{1xC});
#: ``"sample"``: one draw per sample, shared by all its logits.
ALPHA_MODES = ("logit", "sample")

#: Cosines are clamped to [-1 + COS_EPS, 1 - COS_EPS] before arccos, so that the
#: arccos gradient -1/sqrt(1 - x^2) stays finite. The trigonometry runs in float32
#: even for half-precision inputs, where 1 - 1e-6 would round to 1.
COS_EPS = 1e-6


def sample_alpha(
    variance: torch.Tensor,
    num_logits: int,
    mode: str = "logit",
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Draw the feature-cloud angles ``alpha ~ N(0, variance)`` (Sec. 3.4, Eq. 7-8).

    Args:
        variance: (N,) cloud variance of each sample in rad^2; 0 means no cloud.
        num_logits: number of logits C per sample.
        mode: ``"logit"`` gives an (N, C) tensor of independent draws,
            ``"sample"`` an (N, 1) tensor that broadcasts over the logits.
        generator: optional RNG for reproducible draws.

    Returns:
        alpha in radians, float32, no gradient.
    """
    if mode not in ALPHA_MODES:
        raise ValueError(f"alpha mode must be one of {ALPHA_MODES}, got {mode!r}")
    std = variance.detach().float().clamp_min(0).sqrt().unsqueeze(1)
    cols = num_logits if mode == "logit" else 1
    noise = torch.randn(
        (variance.shape[0], cols), generator=generator, device=variance.device, dtype=torch.float32
    )
    return noise * std


def _angles(cos: torch.Tensor) -> torch.Tensor:
    return torch.acos(cos.float().clamp(-1.0 + COS_EPS, 1.0 - COS_EPS))


def _target_mask(cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Boolean one-hot of each row's target column; all False where the label is -1."""
    labels = labels.reshape(-1)
    one_hot = torch.zeros_like(cos, dtype=torch.bool)
    idx = (labels != -1).nonzero(as_tuple=True)[0]
    one_hot[idx, labels[idx]] = True
    return one_hot


def cosface_logits(
    cos: torch.Tensor,
    labels: torch.Tensor,
    scale: float,
    margin: Union[float, torch.Tensor],
    alpha: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """CosFace logits with the feature cloud (Eq. 7).

    target: ``s * (cos(clip(theta_y + alpha)) - m_c)``, others ``s * cos(clip(theta_j + alpha))``,
    ``clip`` = clamp to [0, pi]. With ``alpha=None`` this is stock CosFace (Eq. 1):
    ``s * (cos_y - m_c)`` and ``s * cos_j``, without an arccos round trip.

    Args:
        cos: (N, C) cosines between normalised features and normalised class weights.
        labels: (N,) or (N, 1) target column per row; -1 = target not among these columns.
        scale: s. margin: m_c, a cosine margin (unitless), or an (N, 1) tensor of per-sample
            margins (count-dependent margins, :mod:`leap_plugin.core.longtail`).
        alpha: None, or (N, C) / (N, 1) angles in radians from :func:`sample_alpha`.
    """
    if alpha is not None:
        cos = torch.cos((_angles(cos) + alpha).clamp(0.0, math.pi)).to(cos.dtype)
    one_hot = _target_mask(cos, labels)
    return scale * (cos - margin * one_hot.to(cos.dtype))


def arcface_logits(
    cos: torch.Tensor,
    labels: torch.Tensor,
    scale: float,
    margin: Union[float, torch.Tensor],
    alpha: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """ArcFace logits with the feature cloud (Eq. 8).

    target: ``s * cos(clip(theta_y + alpha + m_a))``, others ``s * cos(clip(theta_j + alpha))``.
    With ``alpha=None`` the non-target logits are ``s * cos_j`` exactly (Eq. 2), and the
    target equals fastreid's ``ArcSoftmax`` wherever ``theta_y + m_a <= pi``.

    Args:
        cos: (N, C) cosines. labels: (N,) or (N, 1), -1 = target not among these columns.
        scale: s. margin: m_a, an angular margin in radians, or an (N, 1) tensor of per-sample
            margins in radians.
        alpha: None, or (N, C) / (N, 1) angles in radians.
    """
    one_hot = _target_mask(cos, labels)
    theta = _angles(cos)
    if alpha is not None:
        theta = theta + alpha
    theta = theta + margin * one_hot.to(theta.dtype)
    perturbed = torch.cos(theta.clamp(0.0, math.pi)).to(cos.dtype)
    if alpha is None:
        # Non-target logits keep the exact input cosine (no arccos round trip).
        perturbed = torch.where(one_hot, perturbed, cos)
    return scale * perturbed
