"""The feature cloud in the loss: perturbed CosFace / ArcFace logits (Eq. 7-8).

A sample of a class whose angular variance is below the target variance gets a
random angle ``alpha ~ N(0, v)`` added to the angle ``theta_j`` between its
feature and every class weight ``W_j`` before the margin and the scale are applied.
All angles are in radians.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Optional, Union

import torch
from torch.autograd.function import once_differentiable

from .settings import ALPHA_MODES, check_setting

logger = logging.getLogger("leap_plugin.cloud")

__all__ = ["ALPHA_MODES", "COS_EPS", "sample_alpha", "perturbed_cos", "use_fused", "cosface_logits", "arcface_logits",
           "clouded_logits", "cloud_rows", "check_labels"]

#: Cosines are clamped to [-1 + COS_EPS, 1 - COS_EPS] before the angle is taken, so that
#: the gradient -1/sqrt(1 - x^2) stays finite. The trigonometry runs in float32 even for
#: half-precision inputs, where 1 - 1e-6 would round to 1.
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
    check_setting("alpha_mode", mode)
    std = variance.detach().float().clamp_min(0).sqrt().unsqueeze(1)
    cols = num_logits if mode == "logit" else 1
    noise = torch.randn(
        (variance.shape[0], cols), generator=generator, device=variance.device, dtype=torch.float32
    )
    return noise.mul_(std)


def perturbed_cos(cos: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``cos(clip(theta + alpha))`` with ``theta = arccos(cos)``, ``clip`` = clamp to [0, pi]
    (the angle arithmetic of Eq. 7-8), in float32, without an arccos.

    ``cos(theta + alpha) = cos_theta cos_alpha - sin_theta sin_alpha`` with
    ``sin_theta = sqrt(1 - cos^2) >= 0`` (theta lies in [0, pi]). The clip is exact: for
    ``alpha < 0``, ``theta + alpha < 0`` iff ``theta < -alpha``, i.e. ``cos > cos(alpha)``
    (or ``alpha <= -pi``), and the result is 1; for ``alpha > 0``, ``theta + alpha > pi`` iff
    ``cos < -cos(alpha)`` (or ``alpha >= pi``), and the result is -1. Values and gradients
    equal ``torch.cos((acos(cos) + alpha).clamp(0, pi))`` (cosines clamped by COS_EPS first).

    Implementations of these values: with :func:`use_fused` on, one fused kernel compiled
    by ``torch.compile`` (values and gradients; a machine without a working compiler falls
    back to eager, saying so); else an in-place evaluation of the same operations, bit for
    bit, without gradients (arcface_torch's pass-through margin) or with the hand-written
    gradient of :class:`_PerturbedCos` (bit for bit autograd's); plain autograd operations
    only where ``alpha`` itself needs a gradient.

    Args:
        cos: (N, C) cosines. alpha: angles in radians, broadcastable to (N, C).
    """
    alpha = torch.as_tensor(alpha, dtype=torch.float32, device=cos.device)
    fused = _fused_kernel()
    if fused is not None:
        try:
            return fused(cos, alpha)
        except Exception as e:  # noqa: BLE001 - no compiler, an unsupported device: eager then
            _FUSED["kernel"] = None
            logger.warning("LEAP: the fused perturbation could not be compiled (%s: %s); using eager PyTorch",
                           type(e).__name__, str(e).splitlines()[0] if str(e) else "")
    if torch.is_grad_enabled() and alpha.requires_grad:
        return _perturbed_cos(cos, alpha)
    if torch.is_grad_enabled() and cos.requires_grad:
        return _PerturbedCos.apply(cos, alpha)
    return _perturbed_cos_no_grad(cos, alpha)


def _perturbed_cos(cos: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    c = cos.float().clamp(-1.0 + COS_EPS, 1.0 - COS_EPS)
    sin_theta = (1.0 - c * c).sqrt()
    cos_a, sin_a = torch.cos(alpha), torch.sin(alpha)
    out = c * cos_a - sin_theta * sin_a
    below_zero = (alpha < 0) & ((alpha <= -math.pi) | (c > cos_a))
    above_pi = (alpha > 0) & ((alpha >= math.pi) | (c < -cos_a))
    return torch.where(below_zero, 1.0, torch.where(above_pi, -1.0, out))


@torch.no_grad()
def _perturbed_cos_no_grad(cos: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """:func:`_perturbed_cos`'s operations in place (the same values, bit for bit), a
    third fewer passes over the (N, C) logits."""
    return _perturbed_cos_in_place(cos, alpha)[0]


def _perturbed_cos_in_place(cos: torch.Tensor, alpha: torch.Tensor, keep: bool = False):
    """``(out, saved)``: :func:`_perturbed_cos`'s values, bit for bit, with as few passes
    and as few new (N, C) tensors as the arithmetic allows (on the CPU a new tensor of
    this size costs as much again as the operation that fills it); with ``keep``, ``saved``
    holds what :class:`_PerturbedCos` needs for the gradient (else None). The clip is
    applied only where some angle is clipped: a masked fill is several times slower than
    the arithmetic, and with clouds of a few tenths of a radian almost no logit is clipped."""
    c = cos.float().clamp(-1.0 + COS_EPS, 1.0 - COS_EPS)
    sin_theta = torch.mul(c, c)
    sin_theta = torch.sub(1.0, sin_theta, out=sin_theta).sqrt_()
    cos_a, sin_a = torch.cos(alpha), torch.sin(alpha)
    out = torch.mul(c, cos_a)
    if keep or sin_theta.shape != sin_a.shape:
        scratch = torch.mul(sin_theta, sin_a)
    else:
        scratch = sin_theta.mul_(sin_a)
    out.sub_(scratch)
    # The angle leaves [0, pi] below (alpha < 0 and cos > cos_alpha, or alpha <= -pi) or
    # above (alpha > 0 and -cos > cos_alpha, or alpha >= pi), where the result is
    # -sign(alpha). For |alpha| < pi one exact test decides both sides: cos_alpha +
    # sign(alpha) * cos < 0 (the product is +-cos, and a rounded sum keeps the sign of a
    # nonzero exact one).
    if scratch.shape == alpha.shape:  # one (N, C) alpha per logit: reuse the scratch memory
        test = torch.addcmul(cos_a, c, torch.sign(alpha, out=scratch), out=scratch)
    else:
        test = torch.addcmul(cos_a, c, torch.sign(alpha))
    clipped = test.lt(0.0)
    if alpha.numel() and not all(bool(x.abs() < math.pi) for x in torch.aminmax(alpha)):
        clipped.logical_or_(alpha.abs() >= math.pi)
    clipped_anywhere = bool(clipped.any())
    if clipped_anywhere:
        out = torch.where(clipped, torch.sign(alpha).neg_(), out, out=out)
    if not keep:
        return out, None
    return out, (c, cos_a, sin_a, sin_theta, clipped if clipped_anywhere else None)


class _PerturbedCos(torch.autograd.Function):
    """:func:`_perturbed_cos` for a ``cos`` that needs a gradient and an ``alpha`` that
    does not (the feature cloud's draws): the same values and the same gradient, bit for
    bit, as autograd through :func:`_perturbed_cos` (the backward below repeats autograd's
    operations in its order: where's mask, mul, sqrt ``grad / (2 * result)``, rsub, the two
    halves of ``c * c`` accumulated after the ``c * cos_alpha`` term, clamp's mask), with
    a forward that runs in place and keeps four (N, C) tensors instead of autograd's chain."""

    @staticmethod
    def forward(ctx, cos: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        out, (c, cos_a, sin_a, sin_theta, clipped) = _perturbed_cos_in_place(cos.detach(), alpha, keep=True)
        # clamp's gradient is zero outside [-1 + eps, 1 - eps] (rare: only at |cos| ~ 1)
        low, high = torch.aminmax(cos.detach())
        outside = cos.detach().float().abs() > 1.0 - COS_EPS if float(max(-low, high)) > 1.0 - COS_EPS else None
        ctx.save_for_backward(c, cos_a, sin_a, sin_theta)
        ctx.masks = (clipped, outside)
        ctx.input_dtype = cos.dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        c, cos_a, sin_a, sin_theta = ctx.saved_tensors
        clipped, outside = ctx.masks
        if clipped is not None:
            grad = grad.masked_fill(clipped, 0.0)
        # d/dc of c * cos_a - sqrt(1 - c * c) * sin_a, in autograd's order of operations,
        # in the saved tensors' memory (a second backward through them is refused by
        # autograd's version check)
        half = torch.mul(grad, sin_a).div_(sin_theta.mul_(2.0)).mul_(c)
        grad_c = cos_a.mul_(grad).add_(half).add_(half) if cos_a.shape == grad.shape else \
            torch.mul(grad, cos_a).add_(half).add_(half)
        if outside is not None:
            grad_c.masked_fill_(outside, 0.0)
        return grad_c.to(ctx.input_dtype), None


#: The compiled kernel, once :func:`use_fused` asked for it (None: eager).
_FUSED: dict = {"wanted": os.environ.get("LEAP_PLUGIN_FUSED", "") in ("1", "true", "True"), "kernel": None,
                "tried": False}


def use_fused(on: bool = True) -> None:
    """Compute the perturbation (:func:`perturbed_cos`) with one ``torch.compile``-fused
    kernel (also: environment variable ``LEAP_PLUGIN_FUSED=1``). Off by default: the first
    call compiles for tens of seconds, and the fused kernel rounds differently from eager."""
    _FUSED.update(wanted=bool(on), kernel=None, tried=False)


def _fused_kernel():
    if not _FUSED["wanted"]:
        return None
    if not _FUSED["tried"]:
        _FUSED["tried"] = True
        _FUSED["kernel"] = torch.compile(_perturbed_cos, dynamic=True)
    return _FUSED["kernel"]


def check_labels(labels: torch.Tensor, num_columns: int) -> torch.Tensor:
    """``labels`` as a 1-d tensor; raises ``ValueError`` unless every one is a column in
    ``[0, num_columns)`` or -1 (a class not among these columns), instead of letting a
    negative label index the last columns from the end."""
    labels = labels.reshape(-1)
    if labels.numel() and bool(((labels < -1) | (labels >= num_columns)).any()):
        raise ValueError(f"labels must be class ids in [0, {num_columns}) or -1 (not among these columns), "
                         f"got values in [{int(labels.min())}, {int(labels.max())}]")
    return labels


def _targets(cos: torch.Tensor, labels: torch.Tensor, margin: Union[float, torch.Tensor]):
    """``(rows, cols, margins)`` of the target logits: the rows whose label is a column
    (not -1), their columns, and their margins (a float, or one per row)."""
    labels = check_labels(labels, cos.shape[1])
    rows = (labels != -1).nonzero(as_tuple=True)[0]
    row_margin = margin[rows, 0] if isinstance(margin, torch.Tensor) and margin.dim() else margin
    return rows, labels[rows], row_margin


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
        cos = perturbed_cos(cos, alpha).to(cos.dtype)
    # s * cos everywhere, s * (cos_y - m) written over the targets: the values of
    # s * (cos - m * one_hot) bit for bit, without (N, C) temporaries for the one-hot.
    rows, cols, row_margin = _targets(cos, labels, margin)
    return (scale * cos).index_put_((rows, cols), scale * (cos[rows, cols] - row_margin))


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
    rows, cols, row_margin = _targets(cos, labels, margin)
    if alpha is not None:
        # alpha + m on the target column: alpha + m * one_hot, bit for bit
        shifted = alpha.float().expand(cos.shape).clone()
        shifted.index_put_((rows, cols), torch.as_tensor(row_margin, dtype=torch.float32, device=cos.device)
                           .expand(rows.shape), accumulate=True)
        return scale * perturbed_cos(cos, shifted).to(cos.dtype)
    # Only the target column moves; the others keep the exact input cosine.
    target = perturbed_cos(cos[rows, cols], row_margin).to(cos.dtype)
    return scale * cos.index_put((rows, cols), target)


def clouded_logits(
    logits_fn,
    cos: torch.Tensor,
    labels: torch.Tensor,
    scale: float,
    margin: Union[float, torch.Tensor],
    variance: Optional[torch.Tensor],
    alpha_mode: str = "logit",
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """:func:`cosface_logits` / :func:`arcface_logits` (``logits_fn``) with a feature cloud
    of per-sample variance ``variance`` (Eq. 7-8): alpha is drawn (:func:`sample_alpha`)
    and applied only for rows whose variance is > 0; the other rows get the plain margin
    logits, exactly. ``variance=None`` or all zero: no cloud.

    Args:
        margin: a float, or an (N, 1) tensor of per-sample margins.
        variance: None or (N,) cloud variance per sample in rad^2.
    """
    labels = labels.reshape(-1)
    if variance is None:
        return logits_fn(cos, labels, scale, margin)
    rows = (variance.reshape(-1) > 0).nonzero(as_tuple=True)[0]
    alpha = sample_alpha(variance.reshape(-1)[rows], cos.shape[1], alpha_mode, generator) if rows.numel() else None
    return cloud_rows(logits_fn, cos, labels, scale, margin, rows, alpha)


def cloud_rows(
    logits_fn,
    cos: torch.Tensor,
    labels: torch.Tensor,
    scale: float,
    margin: Union[float, torch.Tensor],
    rows: torch.Tensor,
    alpha: Optional[torch.Tensor],
) -> torch.Tensor:
    """``logits_fn`` logits where the rows ``rows`` (ascending, as ``nonzero`` gives them)
    are perturbed by ``alpha`` (len(rows), C) or (len(rows), 1) and the others get the plain
    margin logits, exactly."""
    labels = labels.reshape(-1)
    if alpha is None or rows.numel() == 0:
        return logits_fn(cos, labels, scale, margin)
    if rows.numel() == cos.shape[0]:  # every row: no scatter
        return logits_fn(cos, labels, scale, margin, alpha)
    row_margin = margin[rows] if _per_row(margin) else margin
    out = logits_fn(cos, labels, scale, margin)
    return out.index_put((rows,), logits_fn(cos[rows], labels[rows], scale, row_margin, alpha))


def _per_row(margin) -> bool:
    return isinstance(margin, torch.Tensor) and margin.dim() > 0
