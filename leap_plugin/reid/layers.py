"""Classification layers for fastreid: LEAP's (Eq. 7-8) and the count-aware peers'.

fastreid looks classification layers up by name in ``fastreid.layers.any_softmax``
(``MODEL.HEADS.CLS_LAYER``) and builds them as ``cls(num_classes, scale, margin)``;
:func:`register_layer` adds a layer there (and to its ``__all__``) and to
:data:`CLS_LAYERS`, which drives the tests. What the constructor cannot take comes from
the config afterwards: fastreid's ``build_heads`` is extended on import to call
:func:`configure_layers`, which calls ``configure(cfg)`` on every layer that has it.

All keep fastreid's ``forward(logits, targets)`` contract (cosine logits in, scaled logits
out). Layers with ``accepts_cloud`` also take a per-sample cloud variance from
:class:`~leap_plugin.reid.head.LeapHead`; without one (or all zero) they equal their stock
counterpart, so a baseline and its LEAP version differ only by alpha.
"""
from __future__ import annotations

from typing import Optional, TypeVar

import torch
from fastreid.layers import any_softmax

from ..core import arcface_logits, check_setting, clouded_logits, cosface_logits
from ..core.elastic import elastic_logits, paper_std
from ..core.longtail import COUNT_METHODS, CountMethod, per_sample
from ..validation import require_counts

__all__ = [
    "CLS_LAYERS", "register_layer", "cloud_layers", "configure_layers", "LeapCosSoftmax", "LeapArcSoftmax",
    "ClassCounts", "CountAwareSoftmax", "LDAMSoftmax", "BalancedSoftmax", "AdaptiveArcSoftmax", "GCLSoftmax",
    "LeapLDAMSoftmax", "ElasticCosSoftmax", "ElasticArcSoftmax",
]

#: name -> layer class, every classification layer this plugin adds to fastreid.
CLS_LAYERS: dict[str, type] = {}

L = TypeVar("L", bound=type)


def register_layer(cls: L) -> L:
    """Add ``cls`` to ``fastreid.layers.any_softmax`` (and its ``__all__``) and :data:`CLS_LAYERS`."""
    CLS_LAYERS[cls.__name__] = cls
    setattr(any_softmax, cls.__name__, cls)
    if cls.__name__ not in any_softmax.__all__:
        any_softmax.__all__.append(cls.__name__)
    return cls


def cloud_layers() -> list[str]:
    """Names of the layers that take LEAP's feature cloud."""
    return sorted(name for name, cls in CLS_LAYERS.items() if getattr(cls, "accepts_cloud", False))


def configure_layers(module: torch.nn.Module, cfg) -> None:
    """Call ``configure(cfg)`` on every module inside ``module`` that has it."""
    for m in module.modules():
        if hasattr(m, "configure") and callable(m.configure):
            m.configure(cfg)


class _CloudMixin:
    """A layer that takes LEAP's cloud; :class:`~leap_plugin.reid.head.LeapHead` sets its
    ``alpha_mode`` from ``MODEL.HEADS.LEAP.ALPHA_MODE``."""

    accepts_cloud = True
    alpha_mode = "logit"


class _LeapSoftmax(_CloudMixin, any_softmax.Linear):
    """A stock margin layer plus the cloud; subclasses set ``logits_fn``."""

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


@register_layer
class LeapCosSoftmax(_LeapSoftmax):
    """CosFace (Eq. 1) with the feature cloud (Eq. 7); ``margin`` is the cosine margin m_c."""

    logits_fn = staticmethod(cosface_logits)


@register_layer
class LeapArcSoftmax(_LeapSoftmax):
    """ArcFace (Eq. 2) with the feature cloud (Eq. 8); ``margin`` is the angular margin m_a in radians."""

    logits_fn = staticmethod(arcface_logits)


class ClassCounts:
    """K_i as a long buffer ``class_counts``, zero until :meth:`set_class_counts` (fastreid's
    trainer calls it after ``import leap_plugin``), for modules whose output depends on K_i."""

    def _register_class_counts(self, num_classes: int) -> None:
        self.register_buffer("class_counts", torch.zeros(num_classes, dtype=torch.long))

    def set_class_counts(self, counts) -> None:
        """Set K_i, one count >= 1 per class id (fastreid's relabelled ids)."""
        counts = torch.as_tensor(counts, dtype=torch.long)
        if counts.shape != self.class_counts.shape:
            raise ValueError(f"{type(self).__name__}: class counts must have shape "
                             f"{tuple(self.class_counts.shape)}, got {tuple(counts.shape)}")
        self.class_counts.copy_(require_counts(counts))

    def checked_counts(self) -> torch.Tensor:
        """K_i; raises ``RuntimeError`` when they were never set."""
        # A zero count can only mean "never set": training on it would silently use wrong margins.
        if not bool(self.class_counts.all()):
            raise RuntimeError(f"{type(self).__name__} needs the class counts K_i: train with fastreid's "
                               "DefaultTrainer after `import leap_plugin`, or call set_class_counts(counts)")
        return self.class_counts


class CountAwareSoftmax(ClassCounts, any_softmax.Linear):
    """A fastreid classification layer whose logits depend on K_i through a method of
    :data:`leap_plugin.core.longtail.COUNT_METHODS` (``method``). The method's options
    (defaults from the method table) are set from ``MODEL.HEADS.<node>`` by :meth:`configure`.
    """

    method: CountMethod

    def __init__(self, num_classes: int, scale: float, margin: float):
        super().__init__(num_classes, scale, margin)
        self._register_class_counts(num_classes)
        self.options = dict(self.method.options)

    def configure(self, cfg) -> None:
        from .config import peer_options

        self.options = peer_options(cfg, self.method.name)

    def per_class(self) -> torch.Tensor:
        return self.method.per_class(self.checked_counts(), **self.options)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        margin = self.m if self.method.uses_margin else 0.0
        return self.method.logits(logits, targets, self.s, self.per_class(), margin)

    def extra_repr(self) -> str:
        parts = [f"num_classes={self.num_classes}", f"scale={self.s}"]
        if self.method.uses_margin:
            parts.append(f"margin={self.m}")
        return ", ".join(parts + [f"{k}={v}" for k, v in self.options.items()])


@register_layer
class LDAMSoftmax(CountAwareSoftmax):
    """LDAM (Cao et al., NeurIPS 2019, Sec. 3.2): CosFace with the per-class margin
    ``m_i = C / K_i^(1/4)``, the rarest class getting ``max_m`` (a cosine margin;
    ``MODEL.HEADS.LDAM.MAX_M``). ``MODEL.HEADS.MARGIN`` is unused."""

    method = COUNT_METHODS["ldam"]


@register_layer
class BalancedSoftmax(CountAwareSoftmax):
    """Balanced Softmax (Ren et al., NeurIPS 2020) / the logit-adjusted loss (Menon et al.,
    ICLR 2021): ``s * cos_j + tau * log(pi_j)`` for every logit, ``pi_j = K_j / sum K``
    (``MODEL.HEADS.LOGIT_ADJUST.TAU``). ``MODEL.HEADS.MARGIN`` stays a CosFace margin on the
    target (0 for the papers' plain softmax). Training loss only: inference returns features."""

    method = COUNT_METHODS["balanced_softmax"]


@register_layer
class AdaptiveArcSoftmax(CountAwareSoftmax):
    """ArcFace with dynamic margins (Ha et al., "Google Landmark Recognition 2020 Competition
    Third Place Solution", 2020): ``m_i = a * K_i^(-lambda) + b`` in radians
    (``MODEL.HEADS.ADAPTIVE_ARC.{A,LAMBDA,B}``). ``MODEL.HEADS.MARGIN`` is unused.

    Defaults ``a = 0.5, lambda = 0.25, b = 0.05``: the paper's formula leaves a and b to be
    tuned and we could not read its values; these are common in public re-implementations
    (the authors' competition code instead rescales ``K_i^(-1/4)`` to [0.05, 0.5])."""

    method = COUNT_METHODS["adaptive_arc"]


@register_layer
class GCLSoftmax(CountAwareSoftmax):
    """Gaussian Clouded Logit (Li et al., CVPR 2022): every cosine, the target's included,
    loses ``a_j * |eps_nj|`` before scaling, ``eps ~ N(0, (1/3)^2)`` clamped to [-1, 1] and
    drawn afresh per element, ``a_j = noise_mul * (ln K_max - ln K_j) / (ln K_max - ln K_min)``
    (``MODEL.HEADS.GCL.NOISE_MUL``, 0.5 in the paper's first stage): no noise for the most
    frequent class, the most for the rarest. ``MODEL.HEADS.MARGIN`` stays a CosFace margin on
    the target, subtracted after the noise (0 in the paper). The paper's optional second
    stage (re-training the classifier with balanced sampling) is not part of this layer."""

    method = COUNT_METHODS["gcl"]


class _ElasticSoftmax(any_softmax.Linear):
    """ElasticFace (Boutros et al., CVPR-W 2022): each sample's margin drawn from
    ``N(mean, std^2)`` at every step (:mod:`leap_plugin.core.elastic`). From the config
    (:meth:`configure`): ``MODEL.HEADS.ELASTIC.MEAN`` (< 0: ``MODEL.HEADS.MARGIN``),
    ``.STD`` (< 0: the paper's, 0.05, or for ElasticFace+ 0.0175 Arc / 0.02 Cos) and ``.PLUS``
    (ElasticFace+: the smallest draws to the samples closest to their class)."""

    kind: str

    def __init__(self, num_classes: int, scale: float, margin: float):
        super().__init__(num_classes, scale, margin)
        self.plus = False
        self.std = paper_std(self.kind)

    def configure(self, cfg) -> None:
        from .config import elastic_options

        options = elastic_options(cfg, self.kind)
        self.m, self.std, self.plus = options["mean"], options["std"], options["plus"]

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return elastic_logits(self.kind, logits, targets, self.s, self.m, self.std, self.plus)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, scale={self.s}, mean={self.m}, std={self.std}, plus={self.plus}"


@register_layer
class ElasticCosSoftmax(_ElasticSoftmax):
    """ElasticFace-Cos: target ``s * (cos theta_y - m_n)``, ``m_n ~ N(mean, std^2)`` a cosine
    margin per sample (the paper: mean 0.35, std 0.05)."""

    kind = "cos"


@register_layer
class ElasticArcSoftmax(_ElasticSoftmax):
    """ElasticFace-Arc: target ``s * cos(theta_y + m_n)``, ``m_n ~ N(mean, std^2)`` an angle in
    radians per sample (the paper: mean 0.5, std 0.05); the angle is clipped at pi."""

    kind = "arc"


@register_layer
class LeapLDAMSoftmax(_CloudMixin, LDAMSoftmax):
    """LDAM's per-class margins with LEAP's feature cloud (Eq. 7 with ``m_c = m_y``): do the
    two stack? Without a cloud it is :class:`LDAMSoftmax`."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                variance: Optional[torch.Tensor] = None) -> torch.Tensor:
        margins = per_sample(self.per_class(), targets).to(logits.dtype)
        return clouded_logits(cosface_logits, logits, targets, self.s, margins, variance, self.alpha_mode)
