"""A fastreid config with this plugin's keys: added, validated, prepared and loaded.

The keys themselves are declared once in :mod:`leap_plugin.reid.keys` (LEAP's settings,
the data set / sampler / loss keys) and on the classification layers that read them
(``options_config``). :func:`add_leap_config` adds every one to a config (on ``import
leap_plugin`` to fastreid's defaults); :func:`validate_config` fails at start, naming the
key, the value and what is allowed, on anything that cannot work.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

import torch
import yaml
from fastreid.config import CfgNode as CN
from fastreid.config import get_cfg
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

from ..resources import find_config
from ..validation import ConfigError, check_choice, check_int, check_number, fail
from .keys import (
    KEYS,
    WESNOTH_CACHE,
    WESNOTH_UNITS,
    WIDELANDS_CACHE,
    Key,
    defrosted,
    leap_key_rows,
    leap_settings,
    node_of,
    registered,
    set_default,
)
from .layers import CLS_LAYERS, cloud_layers
from .peers import LongTailBaseline
from .pretrained import resolve_pretrained
from .sampler import TRAIN_SAMPLERS

logger = logging.getLogger("fastreid." + __name__)  # fastreid's setup_logger handles "fastreid.*"

__all__ = [
    "add_leap_config", "all_keys", "load_config", "validate_config", "prepare_config", "leap_settings", "defrosted",
    "resolve_device", "registered", "ConfigError", "WESNOTH_UNITS", "WESNOTH_CACHE", "WIDELANDS_CACHE",
]


def all_keys() -> list[Key]:
    """Every key this plugin adds, in the order of the docs' table: LEAP's, the layers', the rest."""
    keys = leap_key_rows()
    seen = set()
    for name in sorted(CLS_LAYERS):
        options = getattr(CLS_LAYERS[name], "options_config", None)
        if options is not None and options.node not in seen:
            seen.add(options.node)
            keys += options.keys()
    return keys + list(KEYS)


def add_leap_config(cfg: CN) -> CN:
    """Add every key of this plugin to ``cfg`` (in place, idempotent; existing values are
    kept): ``MODEL.HEADS.LEAP.*``, the layers' ``MODEL.HEADS.<node>.*``,
    ``MODEL.LOSSES.CLASS_BALANCED.*``, ``DATASETS.LONG_TAIL.*``, ``DATASETS.FOLDER.*``,
    ``DATASETS.WESNOTH.*``, ``DATASETS.WIDELANDS.*``, ``DATALOADER.LONG_TAIL_Q``, ``LOG_PERIOD``
    and ``SEED``. Returns ``cfg``."""
    with defrosted(cfg):
        for key in all_keys():
            set_default(node_of(cfg, key.node, create=True), key.name, key.default)
    return cfg


def validate_config(cfg: CN) -> None:
    """Fail early, with the key and the allowed values, on LEAP / long-tail / peer / device
    settings that cannot work. Call after merging files and command-line overrides."""
    # fastreid divides by these, or aborts on them, only after the whole training has run
    check_int("SOLVER.MAX_EPOCH", cfg.SOLVER.MAX_EPOCH, 1)
    check_int("TEST.EVAL_PERIOD", cfg.TEST.EVAL_PERIOD, 1)
    check_int("SOLVER.CHECKPOINT_PERIOD", cfg.SOLVER.CHECKPOINT_PERIOD, 1)
    check_int("SOLVER.IMS_PER_BATCH", cfg.SOLVER.IMS_PER_BATCH, 1)
    check_int("DATALOADER.NUM_INSTANCE", cfg.DATALOADER.NUM_INSTANCE, 1)
    leap = leap_settings(cfg)
    layer = cfg.MODEL.HEADS.CLS_LAYER
    clouded = cloud_layers()
    if leap.enabled:
        if layer not in clouded:
            fail("MODEL.HEADS.CLS_LAYER", layer, "LEAP perturbs cosine logits; with MODEL.HEADS.LEAP.ENABLED "
                 "use one of " + ", ".join(clouded))
        if cfg.MODEL.HEADS.NAME != "LeapHead":
            fail("MODEL.HEADS.NAME", cfg.MODEL.HEADS.NAME,
                 "with MODEL.HEADS.LEAP.ENABLED use 'LeapHead' (it feeds the features to LEAP)")
        if leap.start_epoch >= cfg.SOLVER.MAX_EPOCH:
            fail("MODEL.HEADS.LEAP.START_EPOCH", leap.start_epoch,
                 f"the feature cloud would start after the last epoch (SOLVER.MAX_EPOCH {cfg.SOLVER.MAX_EPOCH}, "
                 "epochs count from 0), so the run would train a plain baseline under a LEAP label: use a number "
                 f"below {cfg.SOLVER.MAX_EPOCH}")
    elif layer in clouded:
        fail("MODEL.HEADS.LEAP.ENABLED", False,
             f"MODEL.HEADS.CLS_LAYER {layer} is a LEAP layer and would train without its feature cloud: "
             "set MODEL.HEADS.LEAP.ENABLED True (with MODEL.HEADS.NAME LeapHead), or use the stock layer "
             "(CosSoftmax / ArcSoftmax)")


    lt = cfg.DATASETS.LONG_TAIL
    check_int("DATASETS.LONG_TAIL.HEAD", lt.HEAD, 0)
    check_int("DATASETS.LONG_TAIL.TAIL_SAMPLES", lt.TAIL_SAMPLES, 1)
    check_int("DATASETS.LONG_TAIL.TAIL_CLASSES", lt.TAIL_CLASSES, -1)
    check_int("DATASETS.LONG_TAIL.SEED", lt.SEED, 0)

    checked = set()
    for layer in CLS_LAYERS.values():
        options = getattr(layer, "options_config", None)
        if options is not None and options.node not in checked:
            checked.add(options.node)
            options.check(cfg)
    cb = cfg.MODEL.LOSSES.CLASS_BALANCED
    check_number("MODEL.LOSSES.CLASS_BALANCED.BETA", cb.BETA, 0.0, 1.0,
                 hint="0 no re-weighting, 0.9999 the papers' default")
    if cb.BETA == 1.0:
        fail("MODEL.LOSSES.CLASS_BALANCED.BETA", cb.BETA, "use a number in [0, 1): beta = 1 divides by zero")
    check_int("MODEL.LOSSES.CLASS_BALANCED.START_EPOCH", cb.START_EPOCH, 0)
    if cb.ENABLED:
        arch = cfg.MODEL.META_ARCHITECTURE
        if arch not in registered(META_ARCH_REGISTRY) or not issubclass(META_ARCH_REGISTRY.get(arch), LongTailBaseline):
            fail("MODEL.META_ARCHITECTURE", arch, "use 'LongTailBaseline' (MODEL.LOSSES.CLASS_BALANCED needs its loss)")
        if "CrossEntropyLoss" not in cfg.MODEL.LOSSES.NAME:
            fail("MODEL.LOSSES.NAME", cfg.MODEL.LOSSES.NAME,
                 "MODEL.LOSSES.CLASS_BALANCED re-weights the cross-entropy: include 'CrossEntropyLoss'")
        if cfg.MODEL.LOSSES.CE.EPSILON < 0:
            fail("MODEL.LOSSES.CE.EPSILON", cfg.MODEL.LOSSES.CE.EPSILON,
                 "with MODEL.LOSSES.CLASS_BALANCED use a fixed label smoothing >= 0 (not the adaptive one)")

    check_int("LOG_PERIOD", cfg.LOG_PERIOD, 1)
    check_int("SEED", cfg.SEED, -1)
    check_choice("DATALOADER.SAMPLER_TRAIN", cfg.DATALOADER.SAMPLER_TRAIN, sorted(TRAIN_SAMPLERS))
    if TRAIN_SAMPLERS[cfg.DATALOADER.SAMPLER_TRAIN].identity and cfg.SOLVER.IMS_PER_BATCH % cfg.DATALOADER.NUM_INSTANCE:
        # fastreid's identity samplers then never complete a batch and spin forever
        k, batch = cfg.DATALOADER.NUM_INSTANCE, cfg.SOLVER.IMS_PER_BATCH
        fail("SOLVER.IMS_PER_BATCH", batch,
             f"DATALOADER.SAMPLER_TRAIN {cfg.DATALOADER.SAMPLER_TRAIN} fills a batch with DATALOADER.NUM_INSTANCE = "
             f"{k} images per identity: use a multiple of {k} (e.g. {batch // k * k or k} or {(batch // k + 1) * k})")
    check_number("DATALOADER.LONG_TAIL_Q", cfg.DATALOADER.LONG_TAIL_Q, 0.0,
                 hint="1 natural, 0.5 square-root, 0 class-balanced")

    if not torch.cuda.is_available():
        if cfg.SOLVER.AMP.ENABLED:
            fail("SOLVER.AMP.ENABLED", True,
                 "fastreid's AMP trainer needs CUDA and this machine has none; set it to False")
        if cfg.TEST.RERANK.ENABLED:
            fail("TEST.RERANK.ENABLED", True,
                 "fastreid's re-ranking moves features to CUDA and this machine has none; set it to False")


def resolve_device(cfg: CN) -> None:
    """fastreid configs say ``MODEL.DEVICE: cuda``; on a machine without CUDA run the same
    code on the CPU instead of failing in ``model.to('cuda')``."""
    if str(cfg.MODEL.DEVICE).startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE=%s but CUDA is not available: using the CPU", cfg.MODEL.DEVICE)
        with defrosted(cfg):
            cfg.MODEL.DEVICE = "cpu"


def prepare_config(cfg: CN) -> CN:
    """What every entry point does to a merged config before use: the CPU fallback of
    ``MODEL.DEVICE``, :func:`validate_config` and the offline ImageNet weights token of
    ``MODEL.BACKBONE.PRETRAIN_PATH``. Returns ``cfg``."""
    resolve_device(cfg)
    validate_config(cfg)
    resolve_pretrained(cfg)
    return cfg


def load_config(config_file: str, opts: Sequence[str] = ()) -> CN:
    """fastreid's defaults with this plugin's keys, then the file, then ``KEY VALUE``
    overrides; prepared (:func:`prepare_config`).

    Raises:
        ConfigError: naming the file, key or value at fault.
    """
    cfg = get_cfg()
    if config_file:
        config_file = find_config(config_file)
        if not os.path.isfile(config_file):
            raise ConfigError(f"--config-file {config_file!r} does not exist")
        try:
            cfg.merge_from_file(config_file)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ConfigError(f"{config_file}:{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from e
        except (KeyError, ValueError, AssertionError) as e:
            raise ConfigError(f"{config_file}: {e}") from e
    try:
        cfg.merge_from_list(list(opts or []))
    except (KeyError, ValueError, AssertionError) as e:
        raise ConfigError(f"command-line override: {e}") from e
    return prepare_config(cfg)
