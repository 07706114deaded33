"""Classification layers for fastreid: LEAP's (Eq. 7-8) and the count-aware peers'.

fastreid looks classification layers up by name in ``fastreid.layers.any_softmax``
(``MODEL.HEADS.CLS_LAYER``) and builds them as ``cls(num_classes, scale, margin)``;
:func:`register_layer` adds a layer there (and to its ``__all__``) and to
:data:`CLS_LAYERS`, which drives the tests. What the constructor cannot take comes from
the config afterwards: a layer declares those keys as its ``options_config``
(:class:`~leap_plugin.reid.keys.LayerOptions`; they are added to fastreid's defaults with
the other keys), and fastreid's ``build_heads`` is extended on import to call
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
from ..validation import check_bool, check_number
from .contracts import Configurable
from .counts import ClassCounts
from .keys import LayerOptions

__all__ = [
    "CLS_LAYERS", "register_layer", "cloud_layers", "configure_layers", "LeapCosSoftmax", "LeapArcSoftmax",
    "CountAwareSoftmax", "LDAMSoftmax", "BalancedSoftmax", "AdaptiveArcSoftmax", "GCLSoftmax",
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
        if isinstance(m, Configurable):
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


def _non_negative(key: str, value) -> float:
    return check_number(key, value, 0.0)


def count_options(node: str, method: CountMethod, keys: dict[str, tuple[str, str]]) -> LayerOptions:
    """The keys of a count-aware method's options: ``keys`` maps each option to ``(KEY,
    meaning)``; the defaults are the method's (the papers'), every value a number >= 0."""
    return LayerOptions(node, {option: (key, method.options[option], meaning) for option, (key, meaning) in keys.items()},
                        {option: _non_negative for option in keys})


class CountAwareSoftmax(ClassCounts, any_softmax.Linear):
    """A fastreid classification layer whose logits depend on K_i through a method of
    :data:`leap_plugin.core.longtail.COUNT_METHODS` (``method``). The method's options
    (defaults from the method table) are set from the layer's ``options_config`` keys by
    :meth:`configure`.
    """

    method: CountMethod
    options_config: LayerOptions

    def __init__(self, num_classes: int, scale: float, margin: float):
        super().__init__(num_classes, scale, margin)
        self._register_class_counts(num_classes)
        self.options = dict(self.method.options)

    def configure(self, cfg) -> None:
        self.options = self.options_config.read(cfg)

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
    options_config = count_options("MODEL.HEADS.LDAM", method, {"max_m": ("MAX_M", "the rarest class's cosine margin")})


@register_layer
class BalancedSoftmax(CountAwareSoftmax):
    """Balanced Softmax (Ren et al., NeurIPS 2020) / the logit-adjusted loss (Menon et al.,
    ICLR 2021): ``s * cos_j + tau * log(pi_j)`` for every logit, ``pi_j = K_j / sum K``
    (``MODEL.HEADS.LOGIT_ADJUST.TAU``). ``MODEL.HEADS.MARGIN`` stays a CosFace margin on the
    target (0 for the papers' plain softmax). Training loss only: inference returns features."""

    method = COUNT_METHODS["balanced_softmax"]
    options_config = count_options("MODEL.HEADS.LOGIT_ADJUST", method,
                                   {"tau": ("TAU", "logit adjustment strength; 1 = Balanced Softmax")})


@register_layer
class AdaptiveArcSoftmax(CountAwareSoftmax):
    """ArcFace with dynamic margins (Ha et al., "Google Landmark Recognition 2020 Competition
    Third Place Solution", 2020): ``m_i = a * K_i^(-lambda) + b`` in radians
    (``MODEL.HEADS.ADAPTIVE_ARC.{A,LAMBDA,B}``). ``MODEL.HEADS.MARGIN`` is unused.

    Defaults ``a = 0.5, lambda = 0.25, b = 0.05``: the paper's formula leaves a and b to be
    tuned and we could not read its values; these are common in public re-implementations
    (the authors' competition code instead rescales ``K_i^(-1/4)`` to [0.05, 0.5])."""

    method = COUNT_METHODS["adaptive_arc"]
    options_config = count_options("MODEL.HEADS.ADAPTIVE_ARC", method, {
        "a": ("A", "scale of the count-dependent margin (radians)"),
        "lam": ("LAMBDA", "decay of the margin with K_i"), "b": ("B", "margin of very frequent classes (radians)")})


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
    options_config = count_options("MODEL.HEADS.GCL", method,
                                   {"noise_mul": ("NOISE_MUL", "GCL: the rarest class's noise amplitude (a cosine)")})


def _number(key: str, value) -> float:
    return check_number(key, value)


class _ElasticSoftmax(any_softmax.Linear):
    """ElasticFace (Boutros et al., CVPR-W 2022): each sample's margin drawn from
    ``N(mean, std^2)`` at every step (:mod:`leap_plugin.core.elastic`). From the config
    (:meth:`configure`): ``MODEL.HEADS.ELASTIC.MEAN`` (< 0: ``MODEL.HEADS.MARGIN``),
    ``.STD`` (< 0: the paper's, 0.05, or for ElasticFace+ 0.0175 Arc / 0.02 Cos) and ``.PLUS``
    (ElasticFace+: the smallest draws to the samples closest to their class)."""

    kind: str
    options_config = LayerOptions("MODEL.HEADS.ELASTIC", {
        "mean": ("MEAN", -1.0, "ElasticFace: mean of the margin draws; < 0: MODEL.HEADS.MARGIN"),
        "std": ("STD", -1.0, "ElasticFace: std of the margin draws; < 0: the paper's (0.05; ElasticFace+ "
                             "0.0175 Arc, 0.02 Cos)"),
        "plus": ("PLUS", False, "ElasticFace+: the smallest margins to the samples closest to their class"),
    }, {"mean": _number, "std": _number, "plus": check_bool})

    def __init__(self, num_classes: int, scale: float, margin: float):
        super().__init__(num_classes, scale, margin)
        self.plus = False
        self.std = paper_std(self.kind)

    def configure(self, cfg) -> None:
        options = self.options_config.read(cfg)
        self.plus = bool(options["plus"])
        self.m = float(cfg.MODEL.HEADS.MARGIN) if options["mean"] < 0 else options["mean"]
        self.std = paper_std(self.kind, self.plus) if options["std"] < 0 else options["std"]

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
