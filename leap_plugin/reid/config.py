"""LEAP's config keys for fastreid (SPEC section 2) and their validation."""
from __future__ import annotations

import logging
from typing import Any

import torch
from fastreid.config import CfgNode as CN

from ..core import ALPHA_MODES, STATISTICS, VERSIONS
from ..validation import ConfigError, check_choice, check_int, fail

logger = logging.getLogger("fastreid." + __name__)  # fastreid's setup_logger handles "fastreid.*"

__all__ = ["add_leap_config", "validate_config", "ConfigError", "LEAP_CLS_LAYERS", "TRAIN_SAMPLERS"]

#: Classification layers that accept a feature cloud (``leap_plugin.reid.layers``).
LEAP_CLS_LAYERS = ("LeapCosSoftmax", "LeapArcSoftmax")
#: fastreid's own training samplers plus ours (``leap_plugin.reid.sampler``).
TRAIN_SAMPLERS = ("TrainingSampler", "NaiveIdentitySampler", "BalancedIdentitySampler",
                  "SetReWeightSampler", "ImbalancedDatasetSampler", "LongTailIdentitySampler")


def add_leap_config(cfg: CN) -> CN:
    """Add ``MODEL.HEADS.LEAP.*``, ``DATASETS.LONG_TAIL.*`` and the sampler / dataset keys
    to ``cfg`` (in place, idempotent; existing values are kept). Returns ``cfg``."""
    frozen = cfg.is_frozen()
    cfg.defrost()
    set_default(cfg.MODEL.HEADS, "LEAP", CN())
    leap = cfg.MODEL.HEADS.LEAP
    for key, value in (
        ("ENABLED", False),
        ("VERSION", "full"),          # "full" (Eq. 9) | "vanilla" (Eq. 6)
        ("TAIL_THRESHOLD", 20),       # T: vanilla head = K_i > T
        ("CENTER_LR", 0.1),           # gamma of Eq. 4
        ("CENTER_UPDATE_PERIOD", 1),  # iterations between center / memory updates
        ("MEMORY_FACTOR", 1),         # P of Eq. 5
        ("STATS_PERIOD", 1),          # iterations between refreshes of the cloud widths
        ("START_EPOCH", 10),          # no cloud before this epoch
        ("ALPHA_MODE", "logit"),      # "logit" | "sample"
        ("STATISTIC", "paper"),       # "paper" | "loo"
    ):
        set_default(leap, key, value)
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
    leap = cfg.MODEL.HEADS.LEAP
    check_choice("MODEL.HEADS.LEAP.VERSION", leap.VERSION, VERSIONS)
    check_choice("MODEL.HEADS.LEAP.ALPHA_MODE", leap.ALPHA_MODE, ALPHA_MODES)
    check_choice("MODEL.HEADS.LEAP.STATISTIC", leap.STATISTIC, STATISTICS)
    if not isinstance(leap.CENTER_LR, (int, float)) or not 0.0 <= leap.CENTER_LR <= 1.0:
        fail("MODEL.HEADS.LEAP.CENTER_LR", leap.CENTER_LR, "gamma must be a number in [0, 1]")
    check_int("MODEL.HEADS.LEAP.TAIL_THRESHOLD", leap.TAIL_THRESHOLD, 0)
    check_int("MODEL.HEADS.LEAP.CENTER_UPDATE_PERIOD", leap.CENTER_UPDATE_PERIOD, 1)
    check_int("MODEL.HEADS.LEAP.MEMORY_FACTOR", leap.MEMORY_FACTOR, 1)
    check_int("MODEL.HEADS.LEAP.STATS_PERIOD", leap.STATS_PERIOD, 1)
    check_int("MODEL.HEADS.LEAP.START_EPOCH", leap.START_EPOCH, 0)
    if leap.ENABLED:
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
    q = cfg.DATALOADER.LONG_TAIL_Q
    if isinstance(q, bool) or not isinstance(q, (int, float)) or q < 0:
        fail("DATALOADER.LONG_TAIL_Q", q, "use a number >= 0 (1 natural, 0.5 square-root, 0 class-balanced)")

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
        frozen = cfg.is_frozen()
        cfg.defrost()
        cfg.MODEL.DEVICE = "cpu"
        if frozen:
            cfg.freeze()
