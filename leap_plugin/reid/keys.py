"""The config keys this plugin adds to fastreid: each declared once, with its default and meaning.

A leaf: it imports no other module of :mod:`leap_plugin.reid`, so that the modules it
declares keys for (the head, the data sets, the layers) can read their keys from it.
:mod:`leap_plugin.reid.config` adds them to a config and validates them.

Three kinds of declarations:

- LEAP's own settings: :class:`leap_plugin.core.LeapSettings`, as ``MODEL.HEADS.LEAP.<NAME>``;
- :data:`KEYS`: the data set, sampler, loss and run keys;
- :class:`LayerOptions`: the keys a classification layer reads, declared on the layer
  class itself (``options_config``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from fastreid.config import CfgNode as CN

from ..core import DEFAULTS, LeapSettings
from ..data.folders import WESNOTH_UNITS
from ..data.widelands import WIDELANDS_DATA

__all__ = ["Key", "KEYS", "LayerOptions", "WESNOTH_CACHE", "WESNOTH_UNITS", "WIDELANDS_CACHE", "leap_settings",
           "leap_key_rows", "defrosted", "registered", "node_of", "set_default"]

#: Where the RGB composites of Wesnoth's sprites are cached.
WESNOTH_CACHE = "~/.cache/leap_plugin/wesnoth"
#: Where the chosen, composited frames of Widelands' characters are cached.
WIDELANDS_CACHE = "~/.cache/leap_plugin/widelands"


@dataclass(frozen=True)
class Key:
    """One config key: ``<node>.<name>`` with its default and meaning."""

    node: str
    name: str
    default: Any
    meaning: str

    @property
    def path(self) -> str:
        return f"{self.node}.{self.name}" if self.node else self.name


KEYS = (
    Key("DATASETS.LONG_TAIL", "ENABLED", False, "apply the <H_n, S_k> split to the training set"),
    Key("DATASETS.LONG_TAIL", "HEAD", 20, "n: the identities with most images kept whole"),
    Key("DATASETS.LONG_TAIL", "TAIL_SAMPLES", 5, "k: every other identity reduced to exactly k images"),
    Key("DATASETS.LONG_TAIL", "TAIL_CLASSES", -1, "-1: all remaining identities; b >= 0: only the next b"),
    Key("DATASETS.LONG_TAIL", "SEED", 0, "which k images are kept"),
    Key("DATASETS.FOLDER", "DIR", "", "LeapFolder: one sub-folder per identity"),
    Key("DATASETS.FOLDER", "CAMERA_PATTERN", "", "regex with one group: the camera id in a file name"),
    Key("DATASETS.FOLDER", "TEST_FRACTION", 0.5, "fraction of the identities held out for query / gallery"),
    Key("DATASETS.FOLDER", "QUERY_PER_ID", 1, "queries per test identity"),
    Key("DATASETS.FOLDER", "SEED", 0, "seed of the identity and query draws"),
    Key("DATASETS.WESNOTH", "UNITS_ROOT", WESNOTH_UNITS, "WesnothSprites: the units folder"),
    Key("DATASETS.WESNOTH", "CACHE_DIR", WESNOTH_CACHE, "where the RGB composites are kept"),
    Key("DATASETS.WESNOTH", "BACKGROUND", [128, 128, 128], "RGB colour under transparent pixels"),
    Key("DATASETS.WESNOTH", "TEST_FRACTION", 0.5, "fraction of the identities held out for query / gallery"),
    Key("DATASETS.WESNOTH", "QUERY_PER_ID", 1, "queries per test identity"),
    Key("DATASETS.WESNOTH", "SEED", 0, "seed of the identity and query draws"),
    Key("DATASETS.WIDELANDS", "DATA_ROOT", WIDELANDS_DATA, "WidelandsCharacters: the game's data folder"),
    Key("DATASETS.WIDELANDS", "CACHE_DIR", WIDELANDS_CACHE, "where the chosen, composited frames are kept"),
    Key("DATASETS.WIDELANDS", "BACKGROUND", [128, 128, 128], "RGB colour under transparent pixels"),
    Key("DATASETS.WIDELANDS", "TEST_FRACTION", 0.5, "fraction of the identities held out for query / gallery"),
    Key("DATASETS.WIDELANDS", "QUERY_PER_ID", 1, "queries per test identity"),
    Key("DATASETS.WIDELANDS", "SEED", 0, "seed of the identity and query draws"),
    Key("DATALOADER", "LONG_TAIL_Q", 0.5, "LongTailIdentitySampler: identity drawn with probability ~ K_i^q"),
    Key("MODEL.LOSSES.CLASS_BALANCED", "ENABLED", False, "effective-number weights (Cui et al. 2019)"),
    Key("MODEL.LOSSES.CLASS_BALANCED", "BETA", 0.9999, "beta of Cui et al. (and LDAM-DRW)"),
    Key("MODEL.LOSSES.CLASS_BALANCED", "START_EPOCH", 0, "> 0: deferred re-weighting (DRW)"),
    Key("", "LOG_PERIOD", 20, "iterations between console / metrics.json writes (fastreid: 200)"),
    Key("", "SEED", -1, ">= 0: seed every RNG (fastreid otherwise draws a random seed)"),
)


@dataclass(frozen=True)
class LayerOptions:
    """The keys ``<node>.<KEY>`` a classification layer reads: ``options`` maps each option
    (the layer's argument name) to ``(KEY, default, meaning)``; ``checks`` maps an option to
    ``check(key_path, value) -> value`` (raising ConfigError), run by the config's validation."""

    node: str
    options: dict[str, tuple[str, Any, str]]
    checks: dict[str, Callable[[str, Any], Any]] = field(default_factory=dict)

    def keys(self) -> list[Key]:
        return [Key(self.node, key, default, meaning) for key, default, meaning in self.options.values()]

    def read(self, cfg: CN) -> dict[str, Any]:
        """The options' values in ``cfg`` (checked when the config was validated)."""
        values = {}
        for option, (key, default, _) in self.options.items():
            value = node_of(cfg, self.node)[key]
            values[option] = float(value) if isinstance(default, float) else value
        return values

    def check(self, cfg: CN) -> None:
        for option, check in self.checks.items():
            key = self.options[option][0]
            check(f"{self.node}.{key}", node_of(cfg, self.node)[key])


def node_of(cfg: CN, path: str, create: bool = False) -> CN:
    """The node at ``path`` (dotted) of ``cfg``; with ``create``, missing nodes are added."""
    node = cfg
    for name in filter(None, path.split(".")):
        if name not in node:
            if not create:
                raise KeyError(path)
            node[name] = CN()
        node = node[name]
    return node


def set_default(node: CN, key: str, value: Any) -> None:
    if key not in node:
        node[key] = value


def leap_settings(cfg: CN) -> LeapSettings:
    """The checked ``MODEL.HEADS.LEAP`` settings (ConfigError naming the key on a bad value)."""
    node = cfg.MODEL.HEADS.LEAP
    return LeapSettings.from_mapping({key.lower(): node[key] for key in node},
                                     key=lambda name: f"MODEL.HEADS.LEAP.{name.upper()}",
                                     node="MODEL.HEADS.LEAP")


def leap_key_rows() -> list[Key]:
    """LEAP's settings as ``MODEL.HEADS.LEAP`` keys."""
    return [Key("MODEL.HEADS.LEAP", name.upper(), getattr(DEFAULTS, name), LeapSettings.doc(name))
            for name in LeapSettings.names()]


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


def registered(registry) -> list[str]:
    """The names in one of fastreid's registries (they support neither ``in`` nor listing)."""
    return sorted(registry._obj_map)
