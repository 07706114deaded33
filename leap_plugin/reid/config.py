"""Every config key this plugin adds to fastreid, declared once, and their validation.

The keys are added to fastreid's defaults when :mod:`leap_plugin` is imported and to any
``CfgNode`` by :func:`add_leap_config`. :func:`validate_config` fails at start, naming the
key, the value and what is allowed, on anything that cannot work.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
from typing import Any, Iterator, Sequence

import torch
from fastreid.config import CfgNode as CN
from fastreid.config import get_cfg

from ..core import DEFAULTS, LeapSettings
from ..core.longtail import COUNT_METHODS
from ..data.folders import WESNOTH_UNITS
from ..data.widelands import WIDELANDS_DATA
from ..resources import find_config
from ..validation import ConfigError, check_bool, check_choice, check_int, check_number, fail

logger = logging.getLogger("fastreid." + __name__)  # fastreid's setup_logger handles "fastreid.*"

__all__ = [
    "add_leap_config", "load_config", "validate_config", "leap_settings", "defrosted", "resolve_device",
    "ConfigError", "PEER_CONFIG", "WESNOTH_UNITS", "WESNOTH_CACHE", "WIDELANDS_CACHE",
]

#: Where the RGB composites of Wesnoth's sprites are cached.
WESNOTH_CACHE = "~/.cache/leap_plugin/wesnoth"
#: Where the chosen, composited frames of Widelands' characters are cached.
WIDELANDS_CACHE = "~/.cache/leap_plugin/widelands"

#: ``MODEL.HEADS.<node>.<KEY>`` of each count-aware peer method's options
#: (:data:`leap_plugin.core.longtail.COUNT_METHODS`, whose defaults they take).
PEER_CONFIG = {
    "ldam": ("LDAM", {"max_m": "MAX_M"}),
    "balanced_softmax": ("LOGIT_ADJUST", {"tau": "TAU"}),
    "adaptive_arc": ("ADAPTIVE_ARC", {"a": "A", "lam": "LAMBDA", "b": "B"}),
    "gcl": ("GCL", {"noise_mul": "NOISE_MUL"}),
}

# One plain line per key: (node, key, default, meaning). LEAP's own keys come from
# core.settings.LeapSettings, the peer methods' from core.longtail.COUNT_METHODS.
_KEYS = (
    ("DATASETS.LONG_TAIL", "ENABLED", False, "apply the <H_n, S_k> split to the training set"),
    ("DATASETS.LONG_TAIL", "HEAD", 20, "n: the identities with most images kept whole"),
    ("DATASETS.LONG_TAIL", "TAIL_SAMPLES", 5, "k: every other identity reduced to exactly k images"),
    ("DATASETS.LONG_TAIL", "TAIL_CLASSES", -1, "-1: all remaining identities; b >= 0: only the next b"),
    ("DATASETS.LONG_TAIL", "SEED", 0, "which k images are kept"),
    ("DATASETS.FOLDER", "DIR", "", "LeapFolder: one sub-folder per identity"),
    ("DATASETS.FOLDER", "CAMERA_PATTERN", "", "regex with one group: the camera id in a file name"),
    ("DATASETS.FOLDER", "TEST_FRACTION", 0.5, "fraction of the identities held out for query / gallery"),
    ("DATASETS.FOLDER", "QUERY_PER_ID", 1, "queries per test identity"),
    ("DATASETS.FOLDER", "SEED", 0, "seed of the identity and query draws"),
    ("DATASETS.WESNOTH", "UNITS_ROOT", WESNOTH_UNITS, "WesnothSprites: the units folder"),
    ("DATASETS.WESNOTH", "CACHE_DIR", WESNOTH_CACHE, "where the RGB composites are kept"),
    ("DATASETS.WESNOTH", "BACKGROUND", [128, 128, 128], "RGB colour under transparent pixels"),
    ("DATASETS.WESNOTH", "TEST_FRACTION", 0.5, "fraction of the identities held out for query / gallery"),
    ("DATASETS.WESNOTH", "QUERY_PER_ID", 1, "queries per test identity"),
    ("DATASETS.WESNOTH", "SEED", 0, "seed of the identity and query draws"),
    ("DATASETS.WIDELANDS", "DATA_ROOT", WIDELANDS_DATA, "WidelandsCharacters: the game's data folder"),
    ("DATASETS.WIDELANDS", "CACHE_DIR", WIDELANDS_CACHE, "where the chosen, composited frames are kept"),
    ("DATASETS.WIDELANDS", "BACKGROUND", [128, 128, 128], "RGB colour under transparent pixels"),
    ("DATASETS.WIDELANDS", "TEST_FRACTION", 0.5, "fraction of the identities held out for query / gallery"),
    ("DATASETS.WIDELANDS", "QUERY_PER_ID", 1, "queries per test identity"),
    ("DATASETS.WIDELANDS", "SEED", 0, "seed of the identity and query draws"),
    ("MODEL.HEADS.ELASTIC", "MEAN", -1.0, "ElasticFace: mean of the margin draws; < 0: MODEL.HEADS.MARGIN"),
    ("MODEL.HEADS.ELASTIC", "STD", -1.0, "ElasticFace: std of the margin draws; < 0: the paper's "
                                         "(0.05; ElasticFace+ 0.0175 Arc, 0.02 Cos)"),
    ("MODEL.HEADS.ELASTIC", "PLUS", False, "ElasticFace+: the smallest margins to the samples closest to their class"),
    ("DATALOADER", "LONG_TAIL_Q", 0.5, "LongTailIdentitySampler: identity drawn with probability ~ K_i^q"),
    ("MODEL.LOSSES.CLASS_BALANCED", "ENABLED", False, "effective-number weights (Cui et al. 2019)"),
    ("MODEL.LOSSES.CLASS_BALANCED", "BETA", 0.9999, "beta of Cui et al. (and LDAM-DRW)"),
    ("MODEL.LOSSES.CLASS_BALANCED", "START_EPOCH", 0, "> 0: deferred re-weighting (DRW)"),
    ("", "LOG_PERIOD", 20, "iterations between console / metrics.json writes (fastreid: 200)"),
    ("", "SEED", -1, ">= 0: seed every RNG (fastreid otherwise draws a random seed)"),
)


def _node(cfg: CN, path: str) -> CN:
    node = cfg
    for name in filter(None, path.split(".")):
        if name not in node:
            node[name] = CN()
        node = node[name]
    return node


def registered(registry) -> list[str]:
    """The names in one of fastreid's registries (they support neither ``in`` nor listing)."""
    return sorted(registry._obj_map)


def _set_default(node: CN, key: str, value: Any) -> None:
    if key not in node:
        node[key] = value


@contextlib.contextmanager
def defrosted(cfg: CN) -> Iterator[CN]:
    """``with defrosted(cfg):`` changes a possibly frozen config; its frozen state is kept."""
    frozen = cfg.is_frozen()
    cfg.defrost()
    try:
        yield cfg
    finally:
        if frozen:
            cfg.freeze()


def add_leap_config(cfg: CN) -> CN:
    """Add every key of this plugin to ``cfg`` (in place, idempotent; existing values are
    kept): ``MODEL.HEADS.LEAP.*``, the peer methods' ``MODEL.HEADS.<node>.*`` and
    ``MODEL.LOSSES.CLASS_BALANCED.*``, ``DATASETS.LONG_TAIL.*``, ``DATASETS.FOLDER.*``,
    ``DATASETS.WESNOTH.*``, ``DATASETS.WIDELANDS.*``, ``DATALOADER.LONG_TAIL_Q``, ``LOG_PERIOD`` and ``SEED``. Returns ``cfg``."""
    with defrosted(cfg):
        leap = _node(cfg, "MODEL.HEADS.LEAP")
        for name in LeapSettings.names():  # meanings: core.settings.LeapSettings
            _set_default(leap, name.upper(), getattr(DEFAULTS, name))
        for method, (node_name, keys) in PEER_CONFIG.items():
            node = _node(cfg, f"MODEL.HEADS.{node_name}")
            for option, default in COUNT_METHODS[method].options.items():
                _set_default(node, keys[option], default)
        for path, key, default, _meaning in _KEYS:
            _set_default(_node(cfg, path), key, default)
    return cfg


def leap_settings(cfg: CN) -> LeapSettings:
    """The checked ``MODEL.HEADS.LEAP`` settings (ConfigError naming the key on a bad value)."""
    node = cfg.MODEL.HEADS.LEAP
    return LeapSettings.from_mapping({key.lower(): node[key] for key in node},
                                     key=lambda name: f"MODEL.HEADS.LEAP.{name.upper()}",
                                     node="MODEL.HEADS.LEAP")


def peer_options(cfg: CN, method: str) -> dict[str, float]:
    """The options of a count-aware peer method from ``MODEL.HEADS.<node>``."""
    node_name, keys = PEER_CONFIG[method]
    return {option: float(cfg.MODEL.HEADS[node_name][key]) for option, key in keys.items()}


def elastic_options(cfg: CN, kind: str) -> dict[str, Any]:
    """ElasticFace's ``mean``, ``std`` and ``plus`` from ``MODEL.HEADS.ELASTIC`` (negative
    mean / std: ``MODEL.HEADS.MARGIN`` / the paper's std of the variant)."""
    from ..core.elastic import paper_std

    node = cfg.MODEL.HEADS.ELASTIC
    plus = bool(node.PLUS)
    return {"mean": float(cfg.MODEL.HEADS.MARGIN if node.MEAN < 0 else node.MEAN),
            "std": float(paper_std(kind, plus) if node.STD < 0 else node.STD), "plus": plus}


def validate_config(cfg: CN) -> None:
    """Fail early, with the key and the allowed values, on LEAP / long-tail / peer / device
    settings that cannot work. Call after merging files and command-line overrides."""
    from .layers import cloud_layers

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

    for method, (node_name, keys) in PEER_CONFIG.items():
        for key in keys.values():
            check_number(f"MODEL.HEADS.{node_name}.{key}", cfg.MODEL.HEADS[node_name][key], 0.0)
    elastic = cfg.MODEL.HEADS.ELASTIC
    check_number("MODEL.HEADS.ELASTIC.MEAN", elastic.MEAN, -math.inf, hint="< 0: MODEL.HEADS.MARGIN")
    check_number("MODEL.HEADS.ELASTIC.STD", elastic.STD, -math.inf, hint="< 0: the paper's std")
    check_bool("MODEL.HEADS.ELASTIC.PLUS", elastic.PLUS)
    cb = cfg.MODEL.LOSSES.CLASS_BALANCED
    check_number("MODEL.LOSSES.CLASS_BALANCED.BETA", cb.BETA, 0.0, 1.0,
                 hint="0 no re-weighting, 0.9999 the papers' default")
    if cb.BETA == 1.0:
        fail("MODEL.LOSSES.CLASS_BALANCED.BETA", cb.BETA, "use a number in [0, 1): beta = 1 divides by zero")
    check_int("MODEL.LOSSES.CLASS_BALANCED.START_EPOCH", cb.START_EPOCH, 0)
    if cb.ENABLED:
        from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

        from .peers import LongTailBaseline

        arch = cfg.MODEL.META_ARCHITECTURE
        if arch not in registered(META_ARCH_REGISTRY) or not issubclass(META_ARCH_REGISTRY.get(arch), LongTailBaseline):
            fail("MODEL.META_ARCHITECTURE", arch, "use 'LongTailBaseline' (MODEL.LOSSES.CLASS_BALANCED needs its loss)")
        if "CrossEntropyLoss" not in cfg.MODEL.LOSSES.NAME:
            fail("MODEL.LOSSES.NAME", cfg.MODEL.LOSSES.NAME,
                 "MODEL.LOSSES.CLASS_BALANCED re-weights the cross-entropy: include 'CrossEntropyLoss'")
        if cfg.MODEL.LOSSES.CE.EPSILON < 0:
            fail("MODEL.LOSSES.CE.EPSILON", cfg.MODEL.LOSSES.CE.EPSILON,
                 "with MODEL.LOSSES.CLASS_BALANCED use a fixed label smoothing >= 0 (not the adaptive one)")

    from .sampler import TRAIN_SAMPLERS

    check_int("LOG_PERIOD", cfg.LOG_PERIOD, 1)
    check_int("SEED", cfg.SEED, -1)
    check_choice("DATALOADER.SAMPLER_TRAIN", cfg.DATALOADER.SAMPLER_TRAIN, sorted(TRAIN_SAMPLERS))
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
    from .pretrained import resolve_pretrained

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
        except (KeyError, ValueError, AssertionError) as e:
            raise ConfigError(f"{config_file}: {e}") from e
    try:
        cfg.merge_from_list(list(opts or []))
    except (KeyError, ValueError, AssertionError) as e:
        raise ConfigError(f"command-line override: {e}") from e
    return prepare_config(cfg)
