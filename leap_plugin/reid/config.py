"""LEAP's config keys for fastreid (SPEC section 2) and their validation."""
from __future__ import annotations

import logging
from typing import Any

import os
from typing import Sequence

import torch
from fastreid.config import CfgNode as CN
from fastreid.config import get_cfg

from ..core import DEFAULTS, LeapSettings
from ..validation import ConfigError, check_choice, check_int, check_number, fail

logger = logging.getLogger("fastreid." + __name__)  # fastreid's setup_logger handles "fastreid.*"

__all__ = ["add_leap_config", "load_config", "validate_config", "leap_settings", "ConfigError", "LEAP_CLS_LAYERS",
           "TRAIN_SAMPLERS"]

#: Classification layers that accept a feature cloud (``leap_plugin.reid.layers``).
LEAP_CLS_LAYERS = ("LeapCosSoftmax", "LeapArcSoftmax", "LeapLDAMSoftmax")
#: fastreid's own training samplers plus ours (``leap_plugin.reid.sampler``).
TRAIN_SAMPLERS = ("TrainingSampler", "NaiveIdentitySampler", "BalancedIdentitySampler",
                  "SetReWeightSampler", "ImbalancedDatasetSampler", "LongTailIdentitySampler")


def add_leap_config(cfg: CN) -> CN:
    """Add ``MODEL.HEADS.LEAP.*``, ``DATASETS.LONG_TAIL.*`` and the sampler / dataset keys
    to ``cfg`` (in place, idempotent; existing values are kept). Returns ``cfg``."""
    frozen = cfg.is_frozen()
    cfg.defrost()
    set_default(cfg.MODEL.HEADS, "LEAP", CN())
    # MODEL.HEADS.LEAP.<NAME> for every field of core.settings.LeapSettings (meaning there).
    for name in LeapSettings.names():
        set_default(cfg.MODEL.HEADS.LEAP, name.upper(), getattr(DEFAULTS, name))
    set_default(cfg.DATASETS, "LONG_TAIL", CN())
    for key, value in (("ENABLED", False), ("HEAD", 20), ("TAIL_SAMPLES", 5), ("TAIL_CLASSES", -1),
                       ("SEED", 0)):
        set_default(cfg.DATASETS.LONG_TAIL, key, value)
    set_default(cfg.DATALOADER, "LONG_TAIL_Q", 0.5)  # identity drawn with probability ~ K_i^q
    set_default(cfg, "LOG_PERIOD", 20)  # iterations between console / metrics.json writes
    set_default(cfg, "SEED", -1)  # >= 0: seed every RNG (fastreid otherwise draws a random seed)
    from .datasets import add_dataset_config
    from .peers import add_peer_config

    add_dataset_config(cfg)
    add_peer_config(cfg)
    if frozen:
        cfg.freeze()
    return cfg


def set_default(node: CN, key: str, value: Any) -> None:
    if key not in node:
        node[key] = value


def validate_config(cfg: CN) -> None:
    """Fail early, with the key and the allowed values, on LEAP / long-tail / device
    settings that cannot work. Call after merging files and command-line overrides."""
    leap = leap_settings(cfg)
    if leap.enabled:
        if cfg.MODEL.HEADS.CLS_LAYER not in LEAP_CLS_LAYERS:
            fail("MODEL.HEADS.CLS_LAYER", cfg.MODEL.HEADS.CLS_LAYER,
                  "LEAP perturbs cosine logits; with MODEL.HEADS.LEAP.ENABLED use one of "
                  + ", ".join(LEAP_CLS_LAYERS))
        if cfg.MODEL.HEADS.NAME != "LeapHead":
            fail("MODEL.HEADS.NAME", cfg.MODEL.HEADS.NAME,
                  "with MODEL.HEADS.LEAP.ENABLED use 'LeapHead' (it feeds the features to LEAP)")

    lt = cfg.DATASETS.LONG_TAIL
    check_int("DATASETS.LONG_TAIL.HEAD", lt.HEAD, 0)
    check_int("DATASETS.LONG_TAIL.TAIL_SAMPLES", lt.TAIL_SAMPLES, 1)
    check_int("DATASETS.LONG_TAIL.TAIL_CLASSES", lt.TAIL_CLASSES, -1)
    check_int("DATASETS.LONG_TAIL.SEED", lt.SEED, 0)

    from .peers import validate_peer_config

    validate_peer_config(cfg)

    check_int("LOG_PERIOD", cfg.LOG_PERIOD, 1)
    check_int("SEED", cfg.SEED, -1)
    check_choice("DATALOADER.SAMPLER_TRAIN", cfg.DATALOADER.SAMPLER_TRAIN, TRAIN_SAMPLERS)
    check_number("DATALOADER.LONG_TAIL_Q", cfg.DATALOADER.LONG_TAIL_Q, 0.0,
                 hint="1 natural, 0.5 square-root, 0 class-balanced")

    if not torch.cuda.is_available():
        if cfg.SOLVER.AMP.ENABLED:
            fail("SOLVER.AMP.ENABLED", True,
                  "fastreid's AMP trainer needs CUDA and this machine has none; set it to False")
        if cfg.TEST.RERANK.ENABLED:
            fail("TEST.RERANK.ENABLED", True,
                  "fastreid's re-ranking moves features to CUDA and this machine has none; set it to False")


def load_config(config_file: str, opts: Sequence[str] = ()):
    """Defaults + LEAP keys, then the file, then ``KEY VALUE`` overrides; validated.

    Raises:
        ConfigError: naming the file, key or value at fault.
    """
    cfg = get_cfg()
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"--config-file {config_file!r} does not exist")
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, ValueError, AssertionError) as e:
            raise ConfigError(f"{config_file}: {e}") from e
    try:
        cfg.merge_from_list(list(opts or []))
    except (KeyError, ValueError, AssertionError) as e:
        raise ConfigError(f"command-line override: {e}") from e
    resolve_device(cfg)
    validate_config(cfg)
    from .pretrained import resolve_pretrained

    resolve_pretrained(cfg)
    return cfg


def leap_settings(cfg: CN) -> LeapSettings:
    """The checked ``MODEL.HEADS.LEAP`` settings (ConfigError naming the key on a bad value)."""
    node = cfg.MODEL.HEADS.LEAP
    return LeapSettings.from_mapping({key.lower(): node[key] for key in node},
                                     key=lambda name: f"MODEL.HEADS.LEAP.{name.upper()}",
                                     node="MODEL.HEADS.LEAP")


def resolve_device(cfg: CN) -> None:
    """fastreid configs say ``MODEL.DEVICE: cuda``; on a machine without CUDA run the same
    code on the CPU instead of failing in ``model.to('cuda')``."""
    if str(cfg.MODEL.DEVICE).startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE=%s but CUDA is not available: using the CPU", cfg.MODEL.DEVICE)
        frozen = cfg.is_frozen()
        cfg.defrost()
        cfg.MODEL.DEVICE = "cpu"
        if frozen:
            cfg.freeze()
