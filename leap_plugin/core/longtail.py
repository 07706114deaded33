"""Class-count-aware losses LEAP is compared with, independent of any toolbox.

Each function maps the per-class training sample counts ``K_i`` to a per-class vector:
a margin, a logit offset or a loss weight. The margins are applied by
:func:`leap_plugin.core.cloud.cosface_logits` / :func:`~leap_plugin.core.cloud.arcface_logits`,
which take an (N, 1) tensor of per-sample margins (:func:`per_sample`) as well as a float.

- LDAM: Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin
  Loss", NeurIPS 2019.
- Balanced Softmax: Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual
  Recognition", NeurIPS 2020; logit adjustment: Menon et al., "Long-Tail Learning via
  Logit Adjustment", ICLR 2021.
- Dynamic (frequency-adaptive) ArcFace margins: Ha et al., "Google Landmark Recognition
  2020 Competition Third Place Solution", arXiv:2010.05350, 2020.
- Class-balanced weights: Cui et al., "Class-Balanced Loss Based on Effective Number of
  Samples", CVPR 2019.
- Gaussian Clouded Logit (GCL): Li et al., "Long-Tailed Visual Recognition via Gaussian
  Clouded Logit Adjustment", CVPR 2022 (noise on every cosine, its size from the class count).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch
import torch.nn.functional as F

from ..validation import require_counts
from .cloud import arcface_logits, cosface_logits

__all__ = [
    "Counts", "ldam_margins", "logit_adjustment", "adaptive_arc_margins", "gcl_amplitudes", "gcl_noise",
    "effective_number_weights", "per_sample", "weighted_cross_entropy", "CountMethod", "COUNT_METHODS",
]

#: Per-class training sample counts K_i, indexed by class id.
Counts = Union[Sequence[int], torch.Tensor]


def _counts(counts: Counts) -> torch.Tensor:
    """K_i as float64 (beta^K_i and K_i^(-1/4) lose digits in float32); every K_i >= 1."""
    return require_counts(counts).double()


def ldam_margins(counts: Counts, max_m: float = 0.5) -> torch.Tensor:
    """LDAM's per-class cosine margins ``Delta_i = C / K_i^(1/4)`` (Cao et al. 2019, Sec. 3.2).

    ``C`` is chosen so that the rarest class gets the largest margin ``max_m`` (the paper's
    code tunes only this largest margin; 0.5 is its default). Returns (C,) float32.
    """
    m = _counts(counts).pow(-0.25)
    return (m * (max_m / m.max())).float()


def logit_adjustment(counts: Counts, tau: float = 1.0) -> torch.Tensor:
    """The offsets ``tau * log(pi_i)``, ``pi_i = K_i / sum_j K_j``, added to every training logit.

    With ``tau = 1`` the softmax of the adjusted logits is Balanced Softmax (Ren et al.
    2020); a general ``tau`` is the logit-adjusted loss of Menon et al. (2021). Only the
    training loss is adjusted: the test-time scores stay the raw ones. Returns (C,) float32.
    """
    k = _counts(counts)
    return (tau * torch.log(k / k.sum())).float()


def adaptive_arc_margins(counts: Counts, a: float = 0.5, lam: float = 0.25, b: float = 0.05) -> torch.Tensor:
    """Dynamic ArcFace margins ``m_i = a * K_i^(-lam) + b`` in radians (Ha et al. 2020, "dynamic margins").

    ``a`` scales the count-dependent part, ``lam`` sets how fast it decays with K_i and
    ``b`` is the margin approached by very frequent classes; a class with one sample gets
    ``a + b``. Returns (C,) float32.
    """
    return (a * _counts(counts).pow(-lam) + b).float()


def gcl_amplitudes(counts: Counts, noise_mul: float = 0.5) -> torch.Tensor:
    """GCL's per-class noise amplitude ``noise_mul * (ln K_max - ln K_i) / (ln K_max - ln K_min)``
    (Li et al. 2022, Eq. 6 and their code's ``noise_mul``; 0.5 in their first stage).

    The most frequent class gets no noise, the rarest the full ``noise_mul`` (a cosine, unitless).
    When every class has the same count there is nothing to adjust: all amplitudes are 0 (the
    formula itself would divide zero by zero). Returns (C,) float32.
    """
    log_k = _counts(counts).log()
    spread = log_k.max() - log_k.min()
    if float(spread) == 0.0:
        return torch.zeros(log_k.numel())
    return (noise_mul * (log_k.max() - log_k) / spread).float()


#: Standard deviation of GCL's Gaussian noise before its clamp to [-1, 1] (Li et al. 2022).
GCL_NOISE_STD = 1.0 / 3.0


def gcl_noise(normal: torch.Tensor) -> torch.Tensor:
    """``|eps|`` with ``eps = clamp(normal / 3, -1, 1)``: GCL's noise ``eps ~ N(0, (1/3)^2)``
    clamped to [-1, 1], from standard normal draws ``normal`` (float32)."""
    return (normal.float() * GCL_NOISE_STD).clamp_(-1.0, 1.0).abs_()


def effective_number_weights(counts: Counts, beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights ``w_i = (1 - beta) / (1 - beta^K_i)`` (Cui et al. 2019, Sec. 3).

    ``(1 - beta^K) / (1 - beta)`` is the effective number of samples of a class with K
    samples; each class is weighted by its inverse, and the weights are normalised so that
    ``sum_i w_i = C`` (so the loss keeps its scale). ``beta = 0`` gives equal weights,
    ``beta -> 1`` inverse class frequency. Returns (C,) float32.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    k = _counts(counts)
    # -expm1(K log beta) = 1 - beta^K without the cancellation of 1 - 0.9999^K in floats.
    w = (1.0 - beta) / -torch.expm1(k * k.new_tensor(beta).log())  # beta = 0: log = -inf, w = 1
    return (w * (k.numel() / w.sum())).float()


def per_sample(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``values[y_n]`` as an (N, 1) column, the shape that broadcasts over a row of logits.

    Rows whose label is -1 (target not among these columns) get ``values[0]``; the margin
    functions ignore it, since such rows have no target column.
    """
    return values[labels.reshape(-1).clamp_min(0)].unsqueeze(1)


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor, eps: float = 0.0
) -> torch.Tensor:
    """``mean_n w_{y_n} * CE_n``: the class-balanced softmax cross-entropy (Cui et al. 2019, Sec. 4).

    Args:
        logits: (N, C) scaled logits. labels: (N,) class ids.
        class_weights: (C,) per-class weights, e.g. from :func:`effective_number_weights`.
        eps: label smoothing as fastreid does it: the target gets ``1 - eps`` and every
            other class ``eps / (C - 1)``.

    The mean is over the batch, as in Cui et al.; LDAM's code instead divides by the sum
    of the batch's weights, which would cancel the weighting in a batch of one class.
    """
    log_p = F.log_softmax(logits.float(), dim=1)
    target = torch.full_like(log_p, eps / (log_p.shape[1] - 1))
    target.scatter_(1, labels.reshape(-1, 1), 1.0 - eps)
    ce = -(target * log_p).sum(dim=1)
    return (class_weights.to(ce)[labels] * ce).mean()


@dataclass(frozen=True)
class CountMethod:
    """A peer method that turns K_i into a per-class vector applied to the logits.

    Attributes:
        name: the method's name in configs (``long_tail_loss.method`` of the face trainer).
        vector: ``vector(counts, **options) -> (C,)`` per-class margins or logit offsets.
        apply: how the vector enters the logits: ``"cosine_margin"`` (CosFace with a per-class
            cosine margin), ``"angular_margin"`` (ArcFace with a per-class angle in radians),
            ``"logit_offset"`` (added to every scaled logit, on top of a plain CosFace margin) or
            ``"cosine_noise"`` (GCL: ``cos_nj - a_j * |eps_nj|`` on every column, a fresh draw
            per element, then a plain CosFace margin on the target).
        uses_margin: whether the plain margin (``MODEL.HEADS.MARGIN``, ``m3``) still applies.

    The hyperparameters and their defaults (the papers') are the keyword arguments of
    ``vector``: :attr:`options`.
    """

    name: str
    vector: Callable[..., torch.Tensor]
    apply: str
    uses_margin: bool = False

    @property
    def random(self) -> bool:
        """Whether the logits take random draws (:meth:`logits`' ``normal``)."""
        return self.apply == "cosine_noise"

    @property
    def options(self) -> dict[str, float]:
        params = list(inspect.signature(self.vector).parameters.values())[1:]  # after the counts
        return {p.name: p.default for p in params}

    def per_class(self, counts: Counts, **options: float) -> torch.Tensor:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"unknown options {unknown} for {self.name!r}; allowed: {sorted(self.options)}")
        return self.vector(counts, **{**self.options, **options})

    def logits(self, cos: torch.Tensor, labels: torch.Tensor, scale: float, per_class: torch.Tensor,
               margin: float = 0.0, columns: torch.Tensor | None = None,
               normal: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled logits of cosines ``cos`` (N, C) whose column j is class ``columns[j]``
        (default: class j); ``labels`` are columns, -1 = not among them. A :attr:`random`
        method takes ``normal``, (N, C) standard normal draws (default: drawn here from
        torch's global generator)."""
        values = per_class.to(cos.device) if columns is None else per_class.to(cos.device)[columns]
        if self.apply == "logit_offset":
            return cosface_logits(cos, labels, scale, margin) + values.to(cos.dtype)
        if self.apply == "cosine_noise":
            if normal is None:
                normal = torch.randn(cos.shape, device=cos.device)
            noisy = cos.float() - values.float() * gcl_noise(normal)
            return cosface_logits(noisy.to(cos.dtype), labels, scale, margin)
        margins = per_sample(values, labels)  # (N, 1); rows with label -1 have no target
        if self.apply == "cosine_margin":
            return cosface_logits(cos, labels, scale, margins.to(cos.dtype))
        return arcface_logits(cos, labels, scale, margins)


#: The count-aware peer methods both adapters offer (the papers' defaults).
COUNT_METHODS: dict[str, CountMethod] = {
    "ldam": CountMethod("ldam", ldam_margins, "cosine_margin"),
    "balanced_softmax": CountMethod("balanced_softmax", logit_adjustment, "logit_offset", uses_margin=True),
    "adaptive_arc": CountMethod("adaptive_arc", adaptive_arc_margins, "angular_margin"),
    "gcl": CountMethod("gcl", gcl_amplitudes, "cosine_noise", uses_margin=True),
}

