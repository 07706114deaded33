"""The methods a comparison can run on a stock fastreid config: one table, used by
``leap-compare``, the demo and the benchmarks.

Each method is the user's config plus ``KEY VALUE`` overrides. The stock config is taken to
be a CosFace-style baseline (``MODEL.HEADS.CLS_LAYER: CosSoftmax``, as the configs this
package ships); on another one (BoT's ``Linear``, say) every method still applies, and
:func:`describe` says what it changes. ``baseline`` is the stock method a method is
compared with seed by seed (ArcFace for the angular-margin family, CosFace otherwise).

Method names are matched without regard to case (``ldam`` or ``LDAM``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

__all__ = ["Method", "METHODS", "resolve_method", "method_overrides", "describe", "check_applicable",
           "COSINE_LAYERS", "LEAP_METHODS"]

_LEAP = ["MODEL.HEADS.NAME", "LeapHead", "MODEL.HEADS.LEAP.ENABLED", "True"]
#: ArcFace's re-ID scale (the paper's re-ID ArcFace, s = 16 and m = 0.2).
_ARC_SCALE = ["MODEL.HEADS.SCALE", "16"]
_LONG_TAIL = ["MODEL.META_ARCHITECTURE", "LongTailBaseline"]
_CLASS_BALANCED = _LONG_TAIL + ["MODEL.LOSSES.CLASS_BALANCED.ENABLED", "True"]
#: Layers whose logits are scaled cosines (MODEL.HEADS.SCALE and MARGIN mean s and m).
COSINE_LAYERS = ("CosSoftmax", "ArcSoftmax", "CircleSoftmax")


def _drw_epoch(cfg) -> list[str]:
    """LDAM-DRW re-weights over the last 20% of training (160 of 200 epochs in Cao et al.)."""
    return ["MODEL.LOSSES.CLASS_BALANCED.START_EPOCH", str(round(0.8 * cfg.SOLVER.MAX_EPOCH))]


@dataclass(frozen=True)
class Method:
    """A method: ``overrides`` on the stock config, plus ``adapt(cfg)``, overrides that
    depend on the config (e.g. an epoch relative to ``SOLVER.MAX_EPOCH``)."""

    name: str
    overrides: tuple[str, ...]
    baseline: Optional[str]
    summary: str
    adapt: Optional[Callable] = field(default=None, compare=False)


def _method(name: str, overrides: list[str], baseline: Optional[str], summary: str,
            adapt: Optional[Callable] = None) -> Method:
    return Method(name, tuple(overrides), baseline, summary, adapt)


_LEAP_CF = _LEAP + ["MODEL.HEADS.CLS_LAYER", "LeapCosSoftmax", "MODEL.HEADS.LEAP.VERSION", "full"]
_LEAP_AF = _LEAP + ["MODEL.HEADS.CLS_LAYER", "LeapArcSoftmax"] + _ARC_SCALE + ["MODEL.HEADS.LEAP.VERSION", "full"]

METHODS: dict[str, Method] = {m.name: m for m in [
    _method("CosFace", ["MODEL.HEADS.CLS_LAYER", "CosSoftmax"], None, "CosFace (stock fastreid CosSoftmax)"),
    _method("ArcFace", ["MODEL.HEADS.CLS_LAYER", "ArcSoftmax"] + _ARC_SCALE, None,
            "ArcFace (stock fastreid ArcSoftmax), s = 16"),
    _method("LEAP-CF", _LEAP_CF, "CosFace", "LEAP, full version (Eq. 9), on CosFace"),
    _method("LEAP-AF", _LEAP_AF, "ArcFace", "LEAP, full version (Eq. 9), on ArcFace, s = 16"),
    _method("LEAP-CV", _LEAP_CF[:-1] + ["vanilla"], "CosFace", "LEAP, vanilla version (Eq. 6), on CosFace"),
    _method("LEAP-AV", _LEAP_AF[:-1] + ["vanilla"], "ArcFace", "LEAP, vanilla version (Eq. 6), on ArcFace, s = 16"),
    _method("LEAP-CF uniform", _LEAP_CF + ["MODEL.HEADS.LEAP.CLOUD", "uniform"], "CosFace",
            "control: LEAP-CF's amount of angular noise, the same for every class"),
    _method("LEAP-CF printed", _LEAP_CF + ["MODEL.HEADS.LEAP.CENTER_UPDATE", "printed"], "CosFace",
            "LEAP-CF with the paper's Eq. 4 as printed"),
    _method("LEAP-CF + LDAM", _LEAP_CF + _LONG_TAIL + ["MODEL.HEADS.CLS_LAYER", "LeapLDAMSoftmax"], "CosFace",
            "LEAP-CF with LDAM's per-class margins"),
    _method("ldam", ["MODEL.HEADS.CLS_LAYER", "LDAMSoftmax"], "CosFace",
            "LDAM (Cao et al. 2019): per-class margins ~ K_i^(-1/4)"),
    _method("ldam_drw", ["MODEL.HEADS.CLS_LAYER", "LDAMSoftmax"] + _CLASS_BALANCED, "CosFace",
            "LDAM with deferred class-balanced re-weighting over the last 20% of epochs", _drw_epoch),
    _method("balanced_softmax", ["MODEL.HEADS.CLS_LAYER", "BalancedSoftmax", "MODEL.HEADS.MARGIN", "0.0"], "CosFace",
            "Balanced Softmax / logit adjustment (Ren et al. 2020), no margin"),
    _method("adaptive_arc", ["MODEL.HEADS.CLS_LAYER", "AdaptiveArcSoftmax"] + _ARC_SCALE, "ArcFace",
            "ArcFace with count-adaptive margins (Ha et al. 2020), s = 16"),
    _method("cb_cosface", _CLASS_BALANCED, "CosFace", "CosFace with class-balanced re-weighting (Cui et al. 2019)"),
    _method("GCL", ["MODEL.HEADS.CLS_LAYER", "GCLSoftmax", "MODEL.HEADS.MARGIN", "0.0"], "CosFace",
            "Gaussian Clouded Logit (Li et al. 2022): noise on the cosines by class count, no margin"),
    _method("ElasticFace-Cos", ["MODEL.HEADS.CLS_LAYER", "ElasticCosSoftmax"], "CosFace",
            "ElasticFace-Cos (Boutros et al. 2022): a random cosine margin per sample, mean = the config's margin"),
    _method("ElasticFace-Arc", ["MODEL.HEADS.CLS_LAYER", "ElasticArcSoftmax"] + _ARC_SCALE, "ArcFace",
            "ElasticFace-Arc: a random angular margin per sample, mean = the config's margin, s = 16"),
]}

#: The methods with a LEAP head.
LEAP_METHODS = tuple(name for name, m in METHODS.items() if "LeapHead" in m.overrides)


def resolve_method(name: str) -> Method:
    """The method called ``name`` (any case).

    Raises:
        KeyError: with a one-line message naming the valid choices.
    """
    for key, method in METHODS.items():
        if key.lower() == name.lower():
            return method
    raise KeyError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")


def method_overrides(name: str, cfg=None) -> list[str]:
    """The ``KEY VALUE`` overrides of a method; ``cfg`` (the stock config) for the methods
    whose overrides depend on it."""
    method = resolve_method(name)
    extra = method.adapt(cfg) if method.adapt is not None and cfg is not None else []
    return list(method.overrides) + extra


def _value(overrides: list[str], key: str) -> Optional[str]:
    pairs = dict(zip(overrides[::2], overrides[1::2]))
    return pairs.get(key)


def check_applicable(name: str, cfg, source: str = "the config") -> None:
    """Raise ``ValueError`` (one line) when method ``name`` cannot apply to the stock ``cfg``:
    a LEAP head needs fastreid's ``EmbeddingHead``, a class-balanced loss fastreid's
    ``Baseline`` and its cross-entropy."""
    overrides = method_overrides(name, cfg)
    head, arch = cfg.MODEL.HEADS.NAME, cfg.MODEL.META_ARCHITECTURE
    if _value(overrides, "MODEL.HEADS.NAME") == "LeapHead" and head not in ("EmbeddingHead", "LeapHead"):
        raise ValueError(f"method {name!r} cannot apply to {source}: it replaces fastreid's EmbeddingHead with "
                         f"LeapHead, but MODEL.HEADS.NAME is {head!r}")
    if _value(overrides, "MODEL.META_ARCHITECTURE") == "LongTailBaseline":
        if arch not in ("Baseline", "LongTailBaseline"):
            raise ValueError(f"method {name!r} cannot apply to {source}: it extends fastreid's Baseline, but "
                             f"MODEL.META_ARCHITECTURE is {arch!r}")
        if "CrossEntropyLoss" not in cfg.MODEL.LOSSES.NAME:
            raise ValueError(f"method {name!r} cannot apply to {source}: it re-weights the cross-entropy, but "
                             f"MODEL.LOSSES.NAME {tuple(cfg.MODEL.LOSSES.NAME)} has none")


def describe(name: str, cfg) -> str:
    """One line: what method ``name`` changes in the stock ``cfg``."""
    method = resolve_method(name)
    overrides = method_overrides(name, cfg)
    changes = []
    for key, value in zip(overrides[::2], overrides[1::2]):
        current = _lookup(cfg, key)
        if str(current) != value:
            changes.append(f"{key} {current} -> {value}")
    text = f"{name}: {method.summary}; " + ("; ".join(changes) if changes else "the config as it is")
    layer = cfg.MODEL.HEADS.CLS_LAYER
    new_layer = _value(overrides, "MODEL.HEADS.CLS_LAYER")
    if layer not in COSINE_LAYERS and new_layer is not None:
        scale = _value(overrides, "MODEL.HEADS.SCALE") or cfg.MODEL.HEADS.SCALE
        text += (f" (note: the config's layer {layer} is not cosine-based; {new_layer} uses its MODEL.HEADS.SCALE "
                 f"{scale} and MARGIN {cfg.MODEL.HEADS.MARGIN} as the cosine scale and margin"
                 + ("; cosine layers want a scale of about 16-64: override MODEL.HEADS.SCALE" if float(scale) < 8
                    else "") + ")")
    return text


def _lookup(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node
