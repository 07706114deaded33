"""fastreid datasets over identity-labelled image folders, Wesnoth's unit sprites and
Widelands' characters.

Both are registered in ``DATASET_REGISTRY`` on import. The training identities and the
test identities are disjoint (``TEST_FRACTION`` of them tested, seeded); train pids and
camids carry the dataset name, as fastreid's own datasets do, and query / gallery use int
pids and camids. Their config keys live under ``DATASETS.FOLDER`` and
``DATASETS.WESNOTH`` and ``DATASETS.WIDELANDS`` (declared in :mod:`leap_plugin.reid.config`); :func:`build_dataset`
builds any registered data set from a config, ours with those keys.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from . import compat

compat.apply()  # fastreid.data cannot be imported on torch 2 / Python 3.11 without it

from fastreid.config import CfgNode as CN  # noqa: E402
from fastreid.data.datasets import DATASET_REGISTRY  # noqa: E402
from fastreid.data.datasets.bases import ImageDataset  # noqa: E402

from ..data.folders import (  # noqa: E402
    Sample,
    camera_regex,
    check_fraction,
    check_rgb,
    composite_rgba,
    scan_folder,
    scan_wesnoth,
    split_identities,
    split_query_gallery,
)
from ..data.widelands import WIDELANDS_DATA, build_widelands  # noqa: E402
from ..validation import ConfigError, require_int  # noqa: E402
from .keys import WESNOTH_CACHE, WESNOTH_UNITS, WIDELANDS_CACHE, registered  # noqa: E402

__all__ = ["LeapFolder", "WesnothSprites", "WidelandsCharacters", "datasets_root", "dataset_kwargs", "build_dataset"]


def datasets_root() -> str:
    """fastreid's data sets root: ``$FASTREID_DATASETS``, default ``./datasets``."""
    import fastreid.data.build as data_build

    return data_build._root


def dataset_kwargs(cfg: CN, name: str) -> dict[str, Any]:
    """Constructor arguments of the registered dataset ``name`` read from ``cfg``
    (``{}`` for datasets without ``kwargs_from_config``, e.g. fastreid's own)."""
    from_config = getattr(DATASET_REGISTRY.get(name), "kwargs_from_config", None)
    return from_config(cfg) if from_config is not None else {}


def build_dataset(cfg: CN, name: str) -> ImageDataset:
    """The registered data set ``name`` as configured; an unknown name is a ConfigError
    listing the registered ones."""
    if name not in registered(DATASET_REGISTRY):
        raise ConfigError(f"DATASETS: unknown data set {name!r}; registered: {', '.join(registered(DATASET_REGISTRY))}")
    return DATASET_REGISTRY.get(name)(root=datasets_root(), **dataset_kwargs(cfg, name))


def _config_value(cfg: CN, group: str, key: str, check: Callable[[Any, str], Any]) -> Any:
    """``cfg.DATASETS.<group>.<key>``, checked by ``check(value, argument_name)``; a bad value
    raises :class:`ConfigError` naming the key."""
    value = cfg.DATASETS[group][key]
    try:
        check(value, key.lower())
    except ValueError as e:
        raise ConfigError(f"DATASETS.{group}.{key} = {value!r} is not allowed: {e}") from e
    return value


def _split_config(cfg: CN, group: str) -> dict[str, Any]:
    return {
        "test_fraction": _config_value(cfg, group, "TEST_FRACTION", check_fraction),
        "query_per_id": _config_value(cfg, group, "QUERY_PER_ID", lambda v, n: require_int(v, n, 1)),
        "seed": _config_value(cfg, group, "SEED", lambda v, n: require_int(v, n, 0)),
    }


class _SplitDataset(ImageDataset):
    """An :class:`ImageDataset` from scanned ``(path, identity, camera)`` samples: disjoint
    train / test identities, the test ones split into query and gallery."""

    dataset_name = "unnamed"

    def __init__(self, samples: Sequence[Sample], test_fraction: float, query_per_id: int, seed: int,
                 **kwargs: Any) -> None:
        train_ids, test_ids = split_identities([s[1] for s in samples], test_fraction, seed)
        tested = set(test_ids)
        train = [(path, f"{self.dataset_name}_{identity}", f"{self.dataset_name}_{camera}")
                 for path, identity, camera in samples if identity not in tested]
        query, gallery = split_query_gallery([s for s in samples if s[1] in tested], query_per_id, seed)
        # Numbered over all identities / cameras, so a number means the same thing whatever the split.
        pid = {identity: i for i, identity in enumerate(sorted(train_ids + test_ids))}
        camid = {camera: i for i, camera in enumerate(sorted({s[2] for s in samples}))}

        def numbered(items: list[Sample]) -> list[tuple[str, int, int]]:
            return [(path, pid[identity], camid[camera]) for path, identity, camera in items]

        super().__init__(train, numbered(query), numbered(gallery), **kwargs)


@DATASET_REGISTRY.register()
class LeapFolder(_SplitDataset):
    """Any folder with one sub-folder per identity (``.jpg .jpeg .png .bmp`` inside).

    Args:
        root: fastreid's datasets root; the data folder when ``folder`` is empty.
        folder: the data folder.
        camera_pattern: regular expression with one group, searched in each file name,
            that gives the camera id; empty: every image is its own camera.
        test_fraction: fraction of the identities held out for query / gallery.
        query_per_id: queries per test identity (see :func:`split_query_gallery`).
        seed: seed of the identity and query draws.
        **kwargs: fastreid's ``ImageDataset`` arguments (``mode``, ``combineall``...).
    """

    dataset_name = "leapfolder"

    def __init__(self, root: str = "datasets", folder: str = "", camera_pattern: str = "",
                 test_fraction: float = 0.5, query_per_id: int = 1, seed: int = 0, **kwargs: Any) -> None:
        self.folder = os.path.expanduser(folder or root)
        super().__init__(scan_folder(self.folder, camera_pattern or None), test_fraction, query_per_id,
                         seed, **kwargs)

    @classmethod
    def kwargs_from_config(cls, cfg: CN) -> dict[str, Any]:
        """Constructor arguments from ``DATASETS.FOLDER.*``."""
        return {
            "folder": cfg.DATASETS.FOLDER.DIR,
            "camera_pattern": _config_value(cfg, "FOLDER", "CAMERA_PATTERN", lambda v, n: v and camera_regex(v)),
            **_split_config(cfg, "FOLDER"),
        }


@DATASET_REGISTRY.register()
class WesnothSprites(_SplitDataset):
    """Wesnoth's unit sprites (Debian ``wesnoth-1.16-data``) as a long-tailed re-ID set.

    Identities and cameras (pose families) as in :func:`scan_wesnoth`. Each RGBA sprite is
    composited once over ``background`` into an RGB PNG under
    ``<cache_dir>/bg-<r>-<g>-<b>/`` (fastreid's transforms expect three channels); cached
    files are reused, and written atomically, so concurrent ranks may share the cache.

    Args:
        root: fastreid's datasets root (unused: the sprites live where Debian installs them).
        units_root: the ``units`` folder of the Wesnoth data.
        cache_dir: where the composited sprites are kept.
        background: RGB colour under transparent pixels.
        test_fraction, query_per_id, seed, **kwargs: as for :class:`LeapFolder`.
    """

    dataset_name = "wesnoth"

    def __init__(self, root: str = "datasets", units_root: str = WESNOTH_UNITS,
                 cache_dir: str = WESNOTH_CACHE, background: Sequence[int] = (128, 128, 128),
                 test_fraction: float = 0.5, query_per_id: int = 1, seed: int = 0, **kwargs: Any) -> None:
        check_rgb(background, "background")
        self.units_root = units_root
        self.cache_dir = os.path.join(os.path.expanduser(cache_dir), "bg-{}-{}-{}".format(*background))
        samples = [(self._composited(path, tuple(background)), identity, family)
                   for path, identity, family in scan_wesnoth(units_root)]
        super().__init__(samples, test_fraction, query_per_id, seed, **kwargs)

    def _composited(self, sprite: str, background: tuple[int, int, int]) -> str:
        cached = os.path.join(self.cache_dir, os.path.relpath(sprite, self.units_root))
        if not os.path.exists(cached):
            composite_rgba(sprite, cached, background)
        return cached

    @classmethod
    def kwargs_from_config(cls, cfg: CN) -> dict[str, Any]:
        """Constructor arguments from ``DATASETS.WESNOTH.*``."""
        return {
            "units_root": cfg.DATASETS.WESNOTH.UNITS_ROOT,
            "cache_dir": cfg.DATASETS.WESNOTH.CACHE_DIR,
            "background": tuple(_config_value(cfg, "WESNOTH", "BACKGROUND", check_rgb)),
            **_split_config(cfg, "WESNOTH"),
        }


@DATASET_REGISTRY.register()
class WidelandsCharacters(_SplitDataset):
    """Widelands' characters (Debian ``widelands-data``) as a second long-tailed re-ID set.

    Identities, images and cameras (animation and direction) as in
    :mod:`leap_plugin.data.widelands`: 174 identities, 4,520 frames. The frames are chosen and
    composited over ``background`` once, under ``<cache_dir>/bg-<r>-<g>-<b>/`` (about a
    minute and a half on 2 CPU cores), then read from there.

    Args:
        root: fastreid's datasets root (unused: the art lives where Debian installs it).
        data_root: the Widelands ``data`` folder.
        cache_dir: where the composited frames are kept.
        background: RGB colour under transparent pixels.
        test_fraction, query_per_id, seed, **kwargs: as for :class:`LeapFolder`.
    """

    dataset_name = "widelands"

    def __init__(self, root: str = "datasets", data_root: str = WIDELANDS_DATA, cache_dir: str = WIDELANDS_CACHE,
                 background: Sequence[int] = (128, 128, 128), test_fraction: float = 0.5, query_per_id: int = 1,
                 seed: int = 0, **kwargs: Any) -> None:
        check_rgb(background, "background")
        cache = os.path.join(os.path.expanduser(cache_dir), "bg-{}-{}-{}".format(*background))
        super().__init__(build_widelands(data_root, cache, tuple(background)), test_fraction, query_per_id, seed,
                         **kwargs)

    @classmethod
    def kwargs_from_config(cls, cfg: CN) -> dict[str, Any]:
        """Constructor arguments from ``DATASETS.WIDELANDS.*``."""
        return {
            "data_root": cfg.DATASETS.WIDELANDS.DATA_ROOT,
            "cache_dir": cfg.DATASETS.WIDELANDS.CACHE_DIR,
            "background": tuple(_config_value(cfg, "WIDELANDS", "BACKGROUND", check_rgb)),
            **_split_config(cfg, "WIDELANDS"),
        }
