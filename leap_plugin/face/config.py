"""Configuration of ``leap-face-train``: arcface_torch-style Python config files.

A config file is a Python module defining ``config`` as a dict, an ``EasyDict`` or a
``SimpleNamespace``; its keys override :data:`FACE_DEFAULTS` (the names and defaults of
arcface_torch's ``configs/base.py`` where they exist). LEAP's settings are the dict
``leap`` (the names of fastreid's ``MODEL.HEADS.LEAP`` keys, lower case), the long-tailed split the dict ``long_tail``.
Keys of arcface_torch that this trainer does not use (``dali``, ``wandb_*`` ...) are
reported and ignored, so arcface_torch configs load unchanged.
"""
from __future__ import annotations

import ast
import dataclasses
import logging
import os
import runpy
from types import SimpleNamespace
from typing import Any, Iterable, Optional, Sequence

from ..core import DEFAULTS as LEAP_SETTINGS
from ..core import LeapSettings
from ..resources import find_config
from ..validation import ConfigError, check_choice, check_int, check_number, fail
from ..core.longtail import COUNT_METHODS
from .backbones import BACKBONES
from .longtail import LONG_TAIL_METHODS
from .margin import check_margin_list

__all__ = ["FACE_KEYS", "FACE_DEFAULTS", "LEAP_DEFAULTS", "ConfigError", "load_config", "validate"]

logger = logging.getLogger(__name__)

#: ``leap=dict(...)``: the feature-cloud settings of :class:`leap_plugin.core.LeapSettings`
#: (``start_epoch`` counts from 0) plus the face-only ``exact_grad`` of
#: :class:`~leap_plugin.face.LeapMarginLoss` (False: arcface_torch's gradient).
LEAP_DEFAULTS = {**{name: getattr(LEAP_SETTINGS, name) for name in LeapSettings.names()}, "exact_grad": False}

#: Every key of a leap-face-train config: name -> (default, meaning). The names and defaults
#: are arcface_torch's ``configs/base.py`` where it has the key.
FACE_KEYS: dict[str, tuple[Any, str]] = {
    "margin_list": ((1.0, 0.5, 0.0), "(m1, m2, m3): (1, m, 0) ArcFace (m radians), (1, 0, m) CosFace (arcface_torch: "
                                     "(1, 0, 0.4))"),
    "scale": (64.0, "s, the scale of the logits (Eq. 1-2, 7-8)"),
    "interclass_filtering_threshold": (0.0, "non-target cosines above it are zeroed (arcface_torch); 0: off"),
    "network": ("r50", "backbone: r18, r34, r50, r100, mbf (arcface_torch's names)"),
    "embedding_size": (512, "size of the face embedding"),
    "dropout": (0.0, "dropout before the embedding layer"),
    "sample_rate": (1.0, "PartialFC: fraction of the classes in each step's softmax (all positives kept)"),
    "fp16": (False, "mixed precision of the backbone and the class logits (CUDA)"),
    "batch_size": (128, "images per rank and step"),
    "optimizer": ("sgd", "sgd or adamw"),
    "lr": (0.1, "learning rate (polynomial decay after the warm-up)"),
    "momentum": (0.9, "SGD momentum"),
    "weight_decay": (5e-4, "weight decay"),
    "num_epoch": (20, "epochs"),
    "warmup_epoch": (0, "epochs of linear learning-rate warm-up"),
    "verbose": (2000, "training steps between verifications of val_targets"),
    "frequent": (10, "training steps between log lines (and the last step of every epoch)"),
    "seed": (2048, "seed of every random number generator"),
    "num_workers": (2, "data loader worker processes"),
    "rec": (None, "training data: an image folder (one sub-folder per identity), a .rec, or a folder with train.rec"),
    "num_classes": (None, "None: the number of identities kept"),
    "class_counts": (None, "None: K_i counted from rec; or a leap-face-counts file"),
    "pretrained": (None, "None, or backbone weights to start from (arcface_torch model.pt / checkpoint)"),
    "input_size": (112, "side of the face crops (112: arcface_torch's; a multiple of 16)"),
    "val_targets": ([], "verification sets: .bin paths, or names looked up as <rec>/<name>.bin"),
    "output": (None, "the run's folder"),
    "resume": (False, "continue from the last checkpoint in output"),
    "long_tail": (None, "dict(head=, tail_classes=, tail_samples=, seed=): the <H_a, T_b> split of rec"),
    "long_tail_loss": (None, "dict(method=..., options): a peer method instead of LEAP (ldam, balanced_softmax, "
                             "adaptive_arc, gcl, elastic_face)"),
    "leap": ({}, "dict of LEAP settings (below); leap.enabled turns LEAP on"),
}
#: The defaults of :data:`FACE_KEYS`.
FACE_DEFAULTS = {name: default for name, (default, _) in FACE_KEYS.items()}

#: arcface_torch keys that have no effect here.
_IGNORED = {"dali", "dali_aug", "num_image", "save_all_states", "gradient_acc", "suffix_run_name",
            "using_wandb", "wandb_key", "wandb_entity", "wandb_project", "wandb_log_all",
            "save_artifacts", "wandb_resume"}
_LONG_TAIL_KEYS = ("head", "tail_classes", "tail_samples", "seed")


def _as_dict(obj: Any, what: str) -> dict:
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, SimpleNamespace) or hasattr(obj, "__dict__"):
        return dict(vars(obj))
    raise ConfigError(f"{what} must define `config` as a dict, EasyDict or SimpleNamespace, "
                      f"got {type(obj).__name__}")


def _parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} must look like key=value (leap.enabled=True)")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw  # a bare word is a string: rec=/data/faces
    return key.split("."), value


def load_config(path: str, overrides: Sequence[str] = ()) -> SimpleNamespace:
    """Load and validate a config file; ``overrides`` are ``key=value`` strings
    (``leap.start_epoch=2``), values parsed as Python literals."""
    path = find_config(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    namespace = runpy.run_path(path)
    if "config" not in namespace:
        raise ConfigError(f"config file {path!r} defines no `config`")
    user = _as_dict(namespace["config"], f"config file {path!r}")
    for text in overrides:
        keys, value = _parse_override(text)
        node = user
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {key} is not a dict")
        node[keys[-1]] = value
    return validate(user)


def _check_keys(key: str, given: dict, known: Iterable[str]) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        fail(key, given, f"unknown keys {unknown}; allowed: {sorted(known)}")


def validate(user: dict) -> SimpleNamespace:
    """Merge ``user`` over :data:`FACE_DEFAULTS`, check every value, return the config."""
    ignored = sorted(set(user) & _IGNORED)
    unknown = sorted(set(user) - set(FACE_DEFAULTS) - _IGNORED)
    if ignored:
        logger.warning("config keys of arcface_torch ignored by leap-face-train: %s", ignored)
    if unknown:  # a typo such as num_epochs would otherwise train the default silently
        raise ConfigError(f"unknown config keys {unknown}; known: {sorted(FACE_DEFAULTS)}")
    cfg = {k: user.get(k, v) for k, v in FACE_DEFAULTS.items()}

    check_margin_list(cfg["margin_list"])
    check_number("scale", cfg["scale"], 0, low_open=True)
    check_number("interclass_filtering_threshold", cfg["interclass_filtering_threshold"], 0, 1)
    check_choice("network", cfg["network"], sorted(BACKBONES))
    check_int("embedding_size", cfg["embedding_size"], 1)
    check_number("dropout", cfg["dropout"], 0, 1)
    check_number("sample_rate", cfg["sample_rate"], 0, 1, low_open=True)
    check_choice("fp16", cfg["fp16"], (False, True))
    for key, minimum in (("batch_size", 1), ("num_epoch", 1), ("warmup_epoch", 0), ("verbose", 1),
                         ("frequent", 1), ("seed", 0), ("num_workers", 0)):
        check_int(key, cfg[key], minimum)
    if cfg["warmup_epoch"] >= cfg["num_epoch"]:
        fail("warmup_epoch", cfg["warmup_epoch"], f"must be smaller than num_epoch ({cfg['num_epoch']})")
    check_choice("optimizer", cfg["optimizer"], ("sgd", "adamw"))
    check_number("lr", cfg["lr"], 0, low_open=True)
    check_number("momentum", cfg["momentum"], 0, 1)
    check_number("weight_decay", cfg["weight_decay"], 0)
    for key in ("rec", "output"):
        if not isinstance(cfg[key], str) or not cfg[key]:
            fail(key, cfg[key], "set it to a folder path")
    if cfg["num_classes"] is not None:
        check_int("num_classes", cfg["num_classes"], 1)
    for key in ("class_counts", "pretrained"):
        if cfg[key] is not None and (not isinstance(cfg[key], str) or not os.path.isfile(cfg[key])):
            fail(key, cfg[key], "use None or the path of an existing file")
    check_int("input_size", cfg["input_size"], 16)
    if cfg["input_size"] % 16:
        fail("input_size", cfg["input_size"], "use a multiple of 16 (112 for arcface_torch's crops)")
    targets = cfg["val_targets"]
    if isinstance(targets, str) or not all(isinstance(t, str) for t in targets):
        fail("val_targets", targets, "use a list of .bin paths or names")
    cfg["val_targets"] = list(targets)
    check_choice("resume", cfg["resume"], (False, True))

    cfg["leap"] = _validate_leap(cfg["leap"])
    if cfg["leap"]["enabled"] and cfg["leap"]["start_epoch"] >= cfg["num_epoch"]:
        # The cloud turns on at epoch start_epoch (from 0): this run would end before it.
        fail("leap.start_epoch", cfg["leap"]["start_epoch"],
             f"must be smaller than num_epoch = {cfg['num_epoch']} (epochs count from 0), else LEAP never "
             "turns its feature cloud on; lower leap.start_epoch, raise num_epoch, or set leap.enabled = False")
    cfg["long_tail"] = _validate_long_tail(cfg["long_tail"])
    cfg["long_tail_loss"] = _validate_long_tail_loss(cfg["long_tail_loss"], cfg)
    return SimpleNamespace(**cfg)


def _validate_leap(leap: Any) -> dict:
    if not isinstance(leap, dict):
        fail("leap", leap, "use a dict of LEAP settings")
    _check_keys("leap", leap, LEAP_DEFAULTS)
    leap = dict(leap)
    exact_grad = leap.pop("exact_grad", LEAP_DEFAULTS["exact_grad"])
    check_choice("leap.exact_grad", exact_grad, (False, True))
    settings = LeapSettings.from_mapping(leap, key=lambda name: f"leap.{name}", node="leap")
    return {**dataclasses.asdict(settings), "exact_grad": exact_grad}


def _validate_long_tail(long_tail: Optional[dict]) -> Optional[dict]:
    if long_tail is None:
        return None
    if not isinstance(long_tail, dict):
        fail("long_tail", long_tail, "use None or dict(head=, tail_classes=, tail_samples=, seed=)")
    _check_keys("long_tail", long_tail, _LONG_TAIL_KEYS)
    long_tail = {"tail_classes": -1, "seed": 0, **long_tail}
    for key, minimum in (("head", 0), ("tail_samples", 1), ("tail_classes", -1), ("seed", 0)):
        if key not in long_tail:
            fail("long_tail", long_tail, f"{key} is required")
        check_int(f"long_tail.{key}", long_tail[key], minimum)
    return long_tail


def _validate_long_tail_loss(loss: Optional[dict], cfg: dict) -> Optional[dict]:
    """A peer method instead of LEAP: ``dict(method=..., <its options>)``."""
    if loss is None:
        return None
    methods = sorted(LONG_TAIL_METHODS)
    if not isinstance(loss, dict) or "method" not in loss:
        fail("long_tail_loss", loss, f"use None or dict(method=<one of {methods}>, ...)")
    check_choice("long_tail_loss.method", loss["method"], methods)
    options = LONG_TAIL_METHODS[loss["method"]]
    _check_keys("long_tail_loss", loss, ["method", *options])
    if cfg["leap"]["enabled"]:
        fail("long_tail_loss", loss, "is an alternative to LEAP: set leap.enabled = False or long_tail_loss = None")
    if cfg["interclass_filtering_threshold"] != 0:
        fail("interclass_filtering_threshold", cfg["interclass_filtering_threshold"],
             "is not supported with long_tail_loss: set it to 0")
    if loss["method"] == "elastic_face":
        if loss.get("std") is not None:
            check_number("long_tail_loss.std", loss["std"], 0, hint="None: the paper's")
        check_choice("long_tail_loss.plus", loss.get("plus", False), (False, True))
        _, m2, m3 = check_margin_list(cfg["margin_list"])
        if m2 == 0 and m3 == 0:
            fail("margin_list", cfg["margin_list"], "ElasticFace draws margins around a mean: use (1.0, m, 0.0) "
                 "for ElasticFace-Arc or (1.0, 0.0, m) for ElasticFace-Cos, m > 0")
    else:
        for key in options:
            if key in loss:
                check_number(f"long_tail_loss.{key}", loss[key], 0)
        check_margin_list(cfg["margin_list"], COUNT_METHODS[loss["method"]])
    return {**options, **loss}
