"""Identity-labelled image folders as re-ID data: scanning, identity and query/gallery splits,
and Wesnoth's unit sprites (Debian's wesnoth-1.16-data). Toolbox-free: fastreid's datasets in
:mod:`leap_plugin.reid.datasets` are built from these lists.

A scanned sample is ``(path, identity, camera)`` with string identity and camera. The
camera plays fastreid's role for it: the evaluator ignores gallery images of the query's
identity *and* camera, so a camera groups images too alike to count as a re-identification
(the frames of one animation, the shots of one camera).
"""
from __future__ import annotations

import os
import re
from typing import Hashable, Optional, Sequence

import numpy as np
from PIL import Image

from ..io import atomic_write

from ..validation import require_int
from .longtail import item_key

__all__ = [
    "IMAGE_EXTENSIONS", "WESNOTH_UNITS", "Sample", "scan_folder", "scan_wesnoth", "pose_family",
    "split_identities", "split_query_gallery", "composite_rgba", "check_fraction", "check_rgb", "camera_regex",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
#: Where Debian's ``wesnoth-1.16-data`` installs the unit sprites.
WESNOTH_UNITS = "/usr/share/games/wesnoth/1.16/data/core/images/units"

Sample = tuple  # (path, identity, camera)


def check_fraction(value: float, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def check_rgb(value: Sequence[int], name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is three integers in [0, 255]."""
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)):
        raise ValueError(f"{name} must be three integers in [0, 255] (an RGB colour), got {value!r}")


def camera_regex(pattern: str) -> re.Pattern:
    """Compile a camera pattern; it must have exactly one group (the camera id)."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"camera_pattern {pattern!r} is not a regular expression: {e}") from e
    if regex.groups != 1:
        raise ValueError(f"camera_pattern {pattern!r} must have exactly one group (the camera id), "
                         f"it has {regex.groups}")
    return regex


def _require_folder(root: str, hint: str = "") -> None:
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data folder {root!r} does not exist{hint}")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def scan_folder(root: str, camera_pattern: Optional[str] = None) -> list[Sample]:
    """Samples of a folder with one sub-folder per identity, images directly inside.

    The camera is the single group of ``camera_pattern`` searched in the file name. Without
    a pattern every image is its own camera (its ``identity/file`` name): nothing is
    excluded from the gallery, and any two images of an identity count as a match.
    Sorted by path.
    """
    _require_folder(root)
    regex = camera_regex(camera_pattern) if camera_pattern else None
    samples = []
    for identity in sorted(os.listdir(root)):
        folder = os.path.join(root, identity)
        if not os.path.isdir(folder):
            continue
        for name in sorted(filter(_is_image, os.listdir(folder))):
            if regex is None:
                camera = f"{identity}/{name}"
            else:
                match = regex.search(name)
                if match is None:
                    raise ValueError(f"camera_pattern {camera_pattern!r} does not match the image "
                                     f"{os.path.join(folder, name)!r}")
                camera = match.group(1)
            samples.append((os.path.join(folder, name), identity, camera))
    if not samples:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the identity "
                                f"sub-folders of {root!r}")
    return samples


# Wesnoth animation words that name one family of frames; the rest of a pose's words are
# weapons or sub-units (bow, sword, bat...), which then name the family themselves.
_POSE_SYNONYMS = {
    "attack": "attack", "defend": "defend", "idle": "idle", "die": "die", "dying": "die",
    "death": "die", "melee": "melee", "ranged": "ranged", "magic": "magic", "run": "run",
    "bob": "bob", "fly": "fly", "flying": "fly", "takeoff": "fly", "soar": "fly", "hover": "fly",
    "move": "move", "moving": "move", "stand": "stand", "standing": "stand", "lead": "lead",
    "leading": "lead", "heal": "heal", "healing": "heal", "throw": "throw",
}
# Facing directions split one animation into several file series; they are not families.
_DIRECTIONS = {"n", "ne", "e", "se", "s", "sw", "w", "nw"}


def pose_family(pose: str) -> str:
    """The animation family of a Wesnoth pose (the file stem after the unit name).

    Words are split on ``-``; digits (frame numbers), ``+variant`` suffixes and facing
    directions are dropped. The family is the first animation word (``attack``,
    ``defend``, ``idle``, ``die``, ``melee``, ``ranged``, ``magic``, ...; synonyms such as
    ``dying``/``death`` map to ``die``), else the first remaining word (a weapon such as
    ``bow``), else ``base`` (the unit's standing image, or a facing only).
    """
    words = [re.sub(r"\d+", "", word.split("+")[0]) for word in pose.split("-")]
    words = [word for word in words if word and word not in _DIRECTIONS]
    for word in words:
        if word in _POSE_SYNONYMS:
            return _POSE_SYNONYMS[word]
    return words[0] if words else "base"


def scan_wesnoth(units_root: str = WESNOTH_UNITS) -> list[Sample]:
    """Samples of Wesnoth's unit sprites, ``(path, identity, pose family)``, sorted by path.

    Under ``<units_root>/<faction>[/<sub-folder>]/<unit>[+variant]-<pose>.png`` the identity
    is the folder path relative to ``units_root`` plus ``/`` plus the file stem up to its
    first ``-``; the camera is :func:`pose_family` of the rest, so a query never matches
    frames of its own animation. PNGs directly in ``units_root`` (no faction) are skipped.
    """
    _require_folder(units_root, hint="; Wesnoth's unit sprites come with Debian's package: "
                                     "install it with `apt-get install wesnoth-1.16-data`")
    samples = []
    for folder, dirs, files in os.walk(units_root):
        dirs.sort()
        faction = os.path.relpath(folder, units_root)
        if faction == os.curdir:
            continue
        for name in sorted(files):
            if not name.lower().endswith(".png"):
                continue
            unit, _, pose = os.path.splitext(name)[0].partition("-")
            identity = f"{faction.replace(os.sep, '/')}/{unit}"
            samples.append((os.path.join(folder, name), identity, pose_family(pose)))
    if not samples:
        raise FileNotFoundError(f"no unit sprites (.png) in the faction folders of {units_root!r}")
    return sorted(samples)


def split_identities(ids: Sequence[Hashable], test_fraction: float,
                     seed: int) -> tuple[list[Hashable], list[Hashable]]:
    """Disjoint ``(train_ids, test_ids)``: ``round(test_fraction * n)`` distinct identities
    for testing, drawn by ``numpy.random.default_rng(seed)``; both lists sorted. Independent
    of the order and repetitions of ``ids``."""
    check_fraction(test_fraction, "test_fraction")
    require_int(seed, "seed", 0)
    unique = sorted(set(ids), key=str)
    order = np.random.default_rng(seed).permutation(len(unique))
    n_test = int(round(test_fraction * len(unique)))
    test = sorted((unique[i] for i in order[:n_test]), key=str)
    train = sorted((unique[i] for i in order[n_test:]), key=str)
    return train, test


def _gallery_covers(queries: list[Sample], gallery: list[Sample]) -> bool:
    """Every query has a gallery image of another camera (the evaluator drops same-camera ones)."""
    cameras = {g[2] for g in gallery}
    return all(cameras - {q[2]} for q in queries)


def split_query_gallery(items: Sequence[Sample], query_per_id: int,
                        seed: int) -> tuple[list[Sample], list[Sample]]:
    """``(query, gallery)`` of test items ``(path, identity, camera)``.

    Per identity, up to ``query_per_id`` queries are drawn by
    ``numpy.random.default_rng(seed)`` such that each query keeps, in the gallery, at least
    one image of its identity from a different camera; the other images form the gallery.
    An identity seen by a single camera can give no such query: all its images go to the
    gallery as distractors. An identity with few cameras may give fewer queries than asked.
    Independent of the order of ``items``; both lists sorted.
    """
    require_int(query_per_id, "query_per_id", 1)
    require_int(seed, "seed", 0)
    rng = np.random.default_rng(seed)
    by_id: dict[Hashable, list[Sample]] = {}
    for item in sorted(items, key=item_key):
        by_id.setdefault(item[1], []).append(item)
    query: list[Sample] = []
    gallery: list[Sample] = []
    for identity in sorted(by_id, key=str):
        group = by_id[identity]
        chosen: list[Sample] = []
        for i in rng.permutation(len(group)):
            if len(chosen) == query_per_id:
                break
            candidate = chosen + [group[i]]
            if _gallery_covers(candidate, [g for g in group if g not in candidate]):
                chosen = candidate
        query.extend(chosen)
        gallery.extend(g for g in group if g not in chosen)
    return sorted(query, key=item_key), sorted(gallery, key=item_key)


def composite_rgba(src: str, dst: str, background: tuple[int, int, int] = (128, 128, 128)) -> None:
    """Write ``src`` composited over a plain ``background`` as an RGB PNG at ``dst``.

    Transparent sprite pixels would otherwise keep whatever colour the file stores under
    alpha 0. The PNG is written to a temporary file in ``dst``'s folder and renamed, so
    ``dst`` either does not exist or is complete (a cache can trust its presence).
    """
    with Image.open(src) as image:
        rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
    rgb = Image.alpha_composite(canvas, rgba).convert("RGB")
    atomic_write(dst, lambda f: rgb.save(f, format="PNG"))
