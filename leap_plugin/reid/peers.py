"""Peer long-tail methods as drop-in fastreid alternatives to LEAP, selected by config.

- Classification layers (``MODEL.HEADS.CLS_LAYER``), added to ``fastreid.layers.any_softmax``
  on import; they keep fastreid's ``forward(logits, targets)`` contract (cosine logits in):
  :class:`LDAMSoftmax` (Cao et al., NeurIPS 2019), :class:`BalancedSoftmax` (Ren et al.,
  NeurIPS 2020 / Menon et al., ICLR 2021) and :class:`AdaptiveArcSoftmax` (Ha et al. 2020).
- :class:`LongTailBaseline` (``MODEL.META_ARCHITECTURE``): fastreid's ``Baseline`` that
  sets those layers' hyperparameters from the config and, with
  ``MODEL.LOSSES.CLASS_BALANCED.ENABLED``, weights the cross-entropy of each sample by the
  class-balanced weight of its class (Cui et al., CVPR 2019), from epoch
  ``CLASS_BALANCED.START_EPOCH`` on (deferred re-weighting, DRW, when > 0). It works with
  any head, LEAP's included.
- :class:`EpochHook` tells the model the epoch (for DRW); :class:`LeapTrainer` adds it.
- :func:`add_peer_config` / :func:`validate_peer_config`: the config keys, with the papers'
  defaults; :data:`PEER_METHODS`: the overrides that turn the CosFace baseline into each peer.

The math lives in :mod:`leap_plugin.core.longtail`. Every count-dependent vector is derived
from the class counts K_i, a buffer: checkpoints carry it, and since every rank counts the
same training set it is identical on all ranks under distributed training.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import torch
from fastreid.config import CfgNode as CN
from fastreid.config import configurable
from fastreid.engine.train_loop import HookBase
from fastreid.layers import any_softmax
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY, Baseline

from ..core.cloud import arcface_logits, clouded_logits, cosface_logits
from ..core.longtail import (
    Counts,
    adaptive_arc_margins,
    effective_number_weights,
    ldam_margins,
    logit_adjustment,
    per_sample,
    weighted_cross_entropy,
)
from ..validation import check_int, fail
from .config import set_default

__all__ = [
    "LDAMSoftmax", "BalancedSoftmax", "AdaptiveArcSoftmax", "LeapLDAMSoftmax", "PEER_LAYERS", "LongTailBaseline",
    "EpochHook", "epoch_aware_modules", "configure_peer_layer", "add_peer_config",
    "validate_peer_config", "PEER_METHODS",
]

logger = logging.getLogger("fastreid." + __name__)  # fastreid's setup_logger handles "fastreid.*"

class _ClassCounts:
    """K_i as a long buffer, zero until :meth:`set_class_counts` (``LeapTrainer`` calls it)."""

    def _register_class_counts(self, num_classes: int) -> None:
        self.register_buffer("class_counts", torch.zeros(num_classes, dtype=torch.long))

    def set_class_counts(self, counts: Counts) -> None:
        """Set K_i, one count >= 1 per class id (fastreid's relabelled ids)."""
        counts = torch.as_tensor(counts, dtype=torch.long)
        if counts.shape != self.class_counts.shape:
            raise ValueError(f"{type(self).__name__}: class counts must have shape "
                             f"{tuple(self.class_counts.shape)}, got {tuple(counts.shape)}")
        if bool((counts < 1).any()):
            raise ValueError("every class needs at least one training sample (K_i >= 1)")
        self.class_counts.copy_(counts)

    def checked_counts(self) -> torch.Tensor:
        """K_i; raises ``RuntimeError`` when they were never set."""
        # A zero count can only mean "never set": training on it would silently use wrong margins.
        if not bool(self.class_counts.all()):
            raise RuntimeError(f"{type(self).__name__} needs the class counts K_i: call "
                               "set_class_counts(counts) before training (LeapTrainer does)")
        return self.class_counts


class _CountAwareSoftmax(_ClassCounts, any_softmax.Linear):
    """A fastreid classification layer whose logits depend on K_i.

    fastreid builds layers as ``cls(num_classes, scale, margin)``, so the extra
    hyperparameters are attributes, listed in ``options`` as ``attr: (KEY, default)`` and
    set from ``MODEL.HEADS.<config_node>.<KEY>`` by :func:`configure_peer_layer`.
    ``uses_margin``: whether ``MODEL.HEADS.MARGIN`` means anything to the layer.
    """

    config_node: str
    options: dict[str, tuple[str, float]]
    uses_margin = False

    def __init__(self, num_classes: int, scale: float, margin: float):
        super().__init__(num_classes, scale, margin)
        self._register_class_counts(num_classes)
        for attr, (_, default) in self.options.items():
            setattr(self, attr, default)

    def extra_repr(self) -> str:
        parts = [f"num_classes={self.num_classes}", f"scale={self.s}"]
        if self.uses_margin:
            parts.append(f"margin={self.m}")
        parts += [f"{attr}={getattr(self, attr)}" for attr in self.options]
        return ", ".join(parts)


class LDAMSoftmax(_CountAwareSoftmax):
    """LDAM (Cao et al., NeurIPS 2019, Sec. 3.2): CosFace with the per-class margin
    ``m_i = C / K_i^(1/4)``, the rarest class getting ``max_m`` (a cosine margin).

    target ``s * (cos_y - m_y)``, others ``s * cos_j``. ``MODEL.HEADS.MARGIN`` is unused.
    Defaults: ``max_m = 0.5`` (the paper's code; its ``s = 30``, here ``MODEL.HEADS.SCALE``).
    """

    config_node = "LDAM"
    options = {"max_m": ("MAX_M", 0.5)}

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        margins = ldam_margins(self.checked_counts(), self.max_m)
        return cosface_logits(logits, targets, self.s, per_sample(margins, targets).to(logits.dtype))


class BalancedSoftmax(_CountAwareSoftmax):
    """Balanced Softmax (Ren et al., NeurIPS 2020) / the logit-adjusted loss (Menon et al.,
    ICLR 2021): ``s * cos_j + tau * log(pi_j)`` for every logit, ``pi_j = K_j / sum K``.

    ``tau = 1`` (both papers' default) is Balanced Softmax. ``MODEL.HEADS.MARGIN`` is kept as
    a CosFace margin on the target (0 for the papers' plain softmax). The adjustment is a
    training loss only: at inference the head returns features.
    """

    config_node = "LOGIT_ADJUST"
    options = {"tau": ("TAU", 1.0)}
    uses_margin = True

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        offsets = logit_adjustment(self.checked_counts(), self.tau)
        return cosface_logits(logits, targets, self.s, self.m) + offsets.to(logits.dtype)


class AdaptiveArcSoftmax(_CountAwareSoftmax):
    """ArcFace with dynamic margins (Ha et al., "Google Landmark Recognition 2020
    Competition Third Place Solution", 2020): ``m_i = a * K_i^(-lambda) + b`` in radians.

    target ``s * cos(theta_y + m_y)``, others ``s * cos_j``. ``MODEL.HEADS.MARGIN`` is unused.
    Defaults ``a = 0.5, lambda = 0.25, b = 0.05``: the paper's formula leaves a and b to be
    tuned and we could not read its values; these are common in public re-implementations
    (the authors' competition code instead rescales ``K_i^(-1/4)`` to [0.05, 0.5]).
    """

    config_node = "ADAPTIVE_ARC"
    options = {"a": ("A", 0.5), "lam": ("LAMBDA", 0.25), "b": ("B", 0.05)}

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        margins = adaptive_arc_margins(self.checked_counts(), self.a, self.lam, self.b)
        return arcface_logits(logits, targets, self.s, per_sample(margins, targets))


class LeapLDAMSoftmax(LDAMSoftmax):
    """LDAM's per-class margins with LEAP's feature cloud (Eq. 7 with ``m_c = m_y``): do the
    two stack? Takes the cloud variance from :class:`~leap_plugin.reid.head.LeapHead` like
    ``LeapCosSoftmax``; without one it is :class:`LDAMSoftmax`."""

    alpha_mode = "logit"  # set by LeapHead from MODEL.HEADS.LEAP.ALPHA_MODE

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                variance: torch.Tensor | None = None) -> torch.Tensor:
        margins = per_sample(ldam_margins(self.checked_counts(), self.max_m), targets).to(logits.dtype)
        return clouded_logits(cosface_logits, logits, targets, self.s, margins, variance, self.alpha_mode)


PEER_LAYERS = (LDAMSoftmax, BalancedSoftmax, AdaptiveArcSoftmax, LeapLDAMSoftmax)

for _cls in PEER_LAYERS:
    setattr(any_softmax, _cls.__name__, _cls)
    if _cls.__name__ not in any_softmax.__all__:
        any_softmax.__all__.append(_cls.__name__)


def configure_peer_layer(layer: torch.nn.Module, cfg: CN) -> None:
    """Set a peer layer's hyperparameters from ``MODEL.HEADS.<node>``; other modules are left alone."""
    if isinstance(layer, _CountAwareSoftmax):
        node = cfg.MODEL.HEADS[layer.config_node]
        for attr, (key, _) in layer.options.items():
            setattr(layer, attr, float(node[key]))


@META_ARCH_REGISTRY.register()
class LongTailBaseline(_ClassCounts, Baseline):
    """fastreid's ``Baseline`` + the peer layers' hyperparameters + class-balanced re-weighting.

    Extra arguments: ``num_classes`` (C), ``class_balanced`` (None, or a dict with ``beta``
    and ``start_epoch``). When re-weighting is on (``epoch >= start_epoch``), ``loss_cls`` is
    ``mean_n w_{y_n} * CE_n`` with ``w_i = (1 - beta) / (1 - beta^K_i)`` normalised to
    ``sum_i w_i = C`` (Cui et al., CVPR 2019); before, it is fastreid's cross-entropy.
    ``start_epoch > 0`` is LDAM's deferred re-weighting (DRW; Cao et al. 2019, Sec. 3.3).
    """

    @configurable
    def __init__(self, *, num_classes: int, class_balanced: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self._register_class_counts(num_classes)
        self.class_balanced = class_balanced
        self.epoch = 0  # set by EpochHook before each epoch, so also right after --resume

    @classmethod
    def from_config(cls, cfg) -> dict:
        args = super().from_config(cfg)
        for module in args["heads"].modules():
            configure_peer_layer(module, cfg)
        cb = cfg.MODEL.LOSSES.CLASS_BALANCED
        args["num_classes"] = cfg.MODEL.HEADS.NUM_CLASSES
        args["class_balanced"] = {"beta": cb.BETA, "start_epoch": cb.START_EPOCH} if cb.ENABLED else None
        return args

    @property
    def reweighting(self) -> bool:
        """Whether this epoch's cross-entropy is class-balanced."""
        return self.class_balanced is not None and self.epoch >= self.class_balanced["start_epoch"]

    def set_epoch(self, epoch: int) -> None:
        """Called by :class:`EpochHook` before each epoch; logs when re-weighting switches on."""
        was = self.reweighting
        self.epoch = epoch
        if self.reweighting and not was:
            logger.info("epoch %d: class-balanced re-weighting of the cross-entropy on (beta=%g)",
                        epoch, self.class_balanced["beta"])

    def losses(self, outputs: dict, gt_labels: torch.Tensor) -> dict:
        # fastreid's losses first: its accuracy logging and the other losses stay as they are;
        # only the cross-entropy is replaced by its weighted form.
        loss_dict = super().losses(outputs, gt_labels)
        if self.reweighting and "loss_cls" in loss_dict:
            ce = self.loss_kwargs["ce"]
            weights = effective_number_weights(self.checked_counts(), self.class_balanced["beta"])
            loss_dict["loss_cls"] = weighted_cross_entropy(
                outputs["cls_outputs"], gt_labels, weights, ce["eps"]) * ce["scale"]
        return loss_dict


def epoch_aware_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules of ``model`` (DDP-wrapped or not) that have ``set_epoch``."""
    return [m for m in model.modules() if hasattr(m, "set_epoch")]


class EpochHook(HookBase):
    """Before each epoch, calls ``set_epoch(trainer.epoch)`` on the given modules."""

    def __init__(self, modules: Sequence[torch.nn.Module]):
        self.modules = list(modules)

    def before_epoch(self) -> None:
        for module in self.modules:
            module.set_epoch(self.trainer.epoch)


# ----------------------------------------------------------------------------- config
#: ``MODEL.LOSSES.CLASS_BALANCED``: beta 0.9999 is Cui et al.'s and LDAM-DRW's choice.
_CLASS_BALANCED_DEFAULTS = (("ENABLED", False), ("BETA", 0.9999), ("START_EPOCH", 0))


def add_peer_config(cfg: CN) -> CN:
    """Add ``MODEL.HEADS.{LDAM,LOGIT_ADJUST,ADAPTIVE_ARC}.*`` and ``MODEL.LOSSES.CLASS_BALANCED.*``
    to an unfrozen ``cfg`` (in place, idempotent; existing values are kept). Returns ``cfg``."""
    for layer in PEER_LAYERS:
        set_default(cfg.MODEL.HEADS, layer.config_node, CN())
        for key, default in layer.options.values():
            set_default(cfg.MODEL.HEADS[layer.config_node], key, default)
    set_default(cfg.MODEL.LOSSES, "CLASS_BALANCED", CN())
    for key, value in _CLASS_BALANCED_DEFAULTS:
        set_default(cfg.MODEL.LOSSES.CLASS_BALANCED, key, value)
    return cfg


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def validate_peer_config(cfg: CN) -> None:
    """Fail with :class:`~leap_plugin.reid.config.ConfigError` (key, value, what is allowed)
    on peer-method settings that cannot work."""
    for layer in PEER_LAYERS:
        for key, _ in layer.options.values():
            value = cfg.MODEL.HEADS[layer.config_node][key]
            if not _is_number(value) or value < 0:
                fail(f"MODEL.HEADS.{layer.config_node}.{key}", value, "use a number >= 0")
    cb = cfg.MODEL.LOSSES.CLASS_BALANCED
    if not _is_number(cb.BETA) or not 0.0 <= cb.BETA < 1.0:
        fail("MODEL.LOSSES.CLASS_BALANCED.BETA", cb.BETA,
              "use a number in [0, 1) (0 no re-weighting, 0.9999 the papers' default)")
    check_int("MODEL.LOSSES.CLASS_BALANCED.START_EPOCH", cb.START_EPOCH, 0)

    peer_layer = cfg.MODEL.HEADS.CLS_LAYER in {c.__name__ for c in PEER_LAYERS}
    if peer_layer or cb.ENABLED:
        arch = cfg.MODEL.META_ARCHITECTURE
        try:
            long_tail = issubclass(META_ARCH_REGISTRY.get(arch), LongTailBaseline)
        except KeyError:
            long_tail = False
        if not long_tail:
            why = (f"MODEL.HEADS.CLS_LAYER {cfg.MODEL.HEADS.CLS_LAYER} takes its hyperparameters from it"
                   if peer_layer else "MODEL.LOSSES.CLASS_BALANCED needs its loss")
            fail("MODEL.META_ARCHITECTURE", arch, f"use 'LongTailBaseline' ({why})")
    if cb.ENABLED:
        if "CrossEntropyLoss" not in cfg.MODEL.LOSSES.NAME:
            fail("MODEL.LOSSES.NAME", cfg.MODEL.LOSSES.NAME,
                  "MODEL.LOSSES.CLASS_BALANCED re-weights the cross-entropy: include 'CrossEntropyLoss'")
        if cfg.MODEL.LOSSES.CE.EPSILON < 0:
            fail("MODEL.LOSSES.CE.EPSILON", cfg.MODEL.LOSSES.CE.EPSILON,
                  "with MODEL.LOSSES.CLASS_BALANCED use a fixed label smoothing >= 0 (not the adaptive one)")


# ---------------------------------------------------------------------------- methods
_LONG_TAIL = ["MODEL.META_ARCHITECTURE", "LongTailBaseline"]
_CLASS_BALANCED = ["MODEL.LOSSES.CLASS_BALANCED.ENABLED", "True"]

#: fastreid ``KEY VALUE`` overrides (for ``merge_from_list`` or the command line) that turn
#: the CosFace baseline (``configs/<data set>/cosface_R50.yml``) into each peer method.
#: ``ldam_drw`` re-weights from epoch 48 of the baseline's 60: LDAM-DRW's 160 of 200
#: (Cao et al. 2019); override ``MODEL.LOSSES.CLASS_BALANCED.START_EPOCH`` with another
#: ``SOLVER.MAX_EPOCH``. ``adaptive_arc`` uses ArcFace's re-ID scale s = 16, as
#: ``arcface_R50.yml``; ``balanced_softmax`` drops the CosFace margin, as the papers do.
PEER_METHODS: dict[str, list[str]] = {
    "ldam": _LONG_TAIL + ["MODEL.HEADS.CLS_LAYER", "LDAMSoftmax"],
    "ldam_drw": _LONG_TAIL + ["MODEL.HEADS.CLS_LAYER", "LDAMSoftmax"] + _CLASS_BALANCED
    + ["MODEL.LOSSES.CLASS_BALANCED.START_EPOCH", "48"],
    "balanced_softmax": _LONG_TAIL + ["MODEL.HEADS.CLS_LAYER", "BalancedSoftmax",
                                      "MODEL.HEADS.MARGIN", "0.0"],
    "adaptive_arc": _LONG_TAIL + ["MODEL.HEADS.CLS_LAYER", "AdaptiveArcSoftmax",
                                  "MODEL.HEADS.SCALE", "16"],
    "cb_cosface": _LONG_TAIL + _CLASS_BALANCED,
}
