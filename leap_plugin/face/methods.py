"""The methods a face comparison can run on a stock ``leap-face-train`` config: one table,
used by ``leap-compare --face`` and the face benchmark.

Each method changes a few keys of the user's config (:func:`face_method_config`). The
margins follow the stock config where it has the same form: CosFace keeps its ``m3`` (else
arcface_torch's 0.4), ArcFace its ``m2`` (else 0.5); ElasticFace draws around those. LEAP
methods turn ``leap.enabled`` on over the config's own ``leap`` settings. ``baseline`` is
the stock method each is compared with seed by seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

__all__ = ["FaceMethod", "FACE_METHODS", "resolve_face_method", "face_method_config"]

_COSFACE_M3, _ARCFACE_M2 = 0.4, 0.5  # arcface_torch's configs


def _cosface(config: dict) -> tuple:
    m1, m2, m3 = config.get("margin_list", (1.0, _ARCFACE_M2, 0.0))
    return (1.0, 0.0, m3 if m3 > 0 else _COSFACE_M3)


def _arcface(config: dict) -> tuple:
    m1, m2, m3 = config.get("margin_list", (1.0, _ARCFACE_M2, 0.0))
    return (1.0, m2 if m2 > 0 else _ARCFACE_M2, 0.0)


@dataclass(frozen=True)
class FaceMethod:
    """``margin(config)`` -> margin_list; ``leap``: the LEAP version, or None; ``peer``: the
    ``long_tail_loss`` dict of a peer method, or None."""

    name: str
    margin: Callable[[dict], tuple]
    baseline: Optional[str]
    summary: str
    leap: Optional[str] = None
    peer: Optional[dict] = None


_NO_MARGIN = lambda config: (1.0, 0.0, 0.0)  # noqa: E731 - the peers that set their own margins

FACE_METHODS: dict[str, FaceMethod] = {m.name: m for m in [
    FaceMethod("CosFace", _cosface, None, "CosFace (margin_list (1, 0, m3))"),
    FaceMethod("ArcFace", _arcface, None, "ArcFace (margin_list (1, m2, 0))"),
    FaceMethod("LEAP-CF", _cosface, "CosFace", "LEAP, full version, on CosFace", leap="full"),
    FaceMethod("LEAP-AF", _arcface, "ArcFace", "LEAP, full version, on ArcFace", leap="full"),
    FaceMethod("LEAP-CV", _cosface, "CosFace", "LEAP, vanilla version (the paper's face rows), on CosFace",
               leap="vanilla"),
    FaceMethod("LEAP-AV", _arcface, "ArcFace", "LEAP, vanilla version, on ArcFace", leap="vanilla"),
    FaceMethod("LDAM", _NO_MARGIN, "CosFace", "LDAM: per-class margins ~ K_i^(-1/4)", peer=dict(method="ldam")),
    FaceMethod("ElasticFace-Cos", _cosface, "CosFace", "ElasticFace-Cos: a random cosine margin per sample",
               peer=dict(method="elastic_face")),
    FaceMethod("ElasticFace-Arc", _arcface, "ArcFace", "ElasticFace-Arc: a random angular margin per sample",
               peer=dict(method="elastic_face")),
    FaceMethod("GCL", _NO_MARGIN, "CosFace", "Gaussian Clouded Logit: noise on the cosines by class count",
               peer=dict(method="gcl")),
]}


def resolve_face_method(name: str) -> FaceMethod:
    """The face method called ``name`` (any case); ``KeyError`` naming the valid choices."""
    for key, method in FACE_METHODS.items():
        if key.lower() == name.lower():
            return method
    raise KeyError(f"unknown face method {name!r}; valid: {', '.join(FACE_METHODS)}")


def face_method_config(name: str, config: dict) -> dict:
    """The keys method ``name`` sets on the stock face ``config`` (a dict of its keys)."""
    method = resolve_face_method(name)
    keys = {"margin_list": method.margin(config), "long_tail_loss": method.peer}
    leap = dict(config.get("leap") or {})
    if method.leap is not None:
        leap.update(enabled=True, version=method.leap)
    else:
        leap["enabled"] = False
    keys["leap"] = leap
    return keys
