"""Widelands' characters (Debian ``widelands-data``) as a second real re-ID data set.

Where Debian installs the game's art (``/usr/share/games/widelands/data``), each character
has a folder with an ``init.lua`` describing its animations (walk in six directions, work,
idle, attack...) as sprite sheets or numbered frames. Here:

- **identity** = one character: a tribe's worker (``tribes/workers/<tribe>/<name>``), a
  tribe's ship (``tribes/ships/<tribe>``) or an animal (``world/critters/<name>``). Two
  pairs are the same art under two names and are merged: the wisent is the barbarians' ox,
  and each tribe's ferry is its ship drawn smaller.
- **image** = one animation frame at scale 1 (the only scale every animation has), cropped
  to its opaque pixels and composited over a grey background.
- **camera** = animation and direction (``walk_se``): frames of one animation in one
  direction are too alike to count as a re-identification, so the evaluator ignores them
  as matches of each other, as it ignores a camera's own shots.

The raw frames are very redundant (10 to 50 per animation cycle, consecutive frames differ
by a few pixels) and several workers share one body (the Frisians' walk cycles differ by a
hat), so frames are thinned on 32x32 thumbnails (premultiplied RGBA, 0-255):

1. within an identity, a frame is kept only if its mean absolute difference to every frame
   kept before it is above :data:`MIN_FRAME_DIFFERENCE` (16);
2. a kept frame whose nearest frame of *another* identity is closer than
   :data:`MIN_IDENTITY_DIFFERENCE` (1.5) is dropped (shared or near-identical art);
3. identities left with fewer than 2 images are dropped.

With ``widelands-data`` 2:1.1-3 (Debian 12) this gives 174 identities and 4,520 images,
long-tailed but less steeply than the Wesnoth sprites (max 97, median 25 images per
identity). The art is GPL-2+; it is read from where Debian installs it and never copied
into the repository. Toolbox-free: :class:`leap_plugin.reid.datasets.WidelandsCharacters`
builds fastreid's data set from :func:`build_widelands`.
"""
from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ..io import atomic_write

__all__ = ["WIDELANDS_DATA", "MIN_FRAME_DIFFERENCE", "MIN_IDENTITY_DIFFERENCE", "Frame", "characters",
           "character_frames", "select_frames", "build_widelands"]

#: Where Debian's ``widelands-data`` installs the game data.
WIDELANDS_DATA = "/usr/share/games/widelands/data"
#: Step 1: mean absolute thumbnail difference (0-255) a frame needs to every kept frame of its identity.
MIN_FRAME_DIFFERENCE = 16.0
#: Step 2: a frame closer than this to a frame of another identity is dropped.
MIN_IDENTITY_DIFFERENCE = 1.5
#: Same art under two names: folder identity -> the identity it is merged into.
MERGED = {"critters/wisent": "barbarians/ox",
          **{f"{tribe}/ferry": f"ships/{tribe}" for tribe in ("amazons", "atlanteans", "barbarians", "empire",
                                                               "frisians")}}
DIRECTIONS = ("e", "ne", "nw", "se", "sw", "w")
# Bump when the selection changes, so that a cache built by other rules is rebuilt.
_BUILD_VERSION = 1
_THUMB = 32


@dataclass(frozen=True)
class Frame:
    """One animation frame: ``box`` (x0, y0, x1, y1) of ``file``."""

    identity: str
    animation: str
    direction: str
    index: int
    file: str
    box: tuple[int, int, int, int]

    @property
    def camera(self) -> str:
        return f"{self.animation}_{self.direction}" if self.direction else self.animation

    @property
    def name(self) -> str:
        """A file name unique within the identity."""
        folder = os.path.basename(os.path.dirname(self.file))
        return f"{folder}__{self.camera}__{self.index:03d}.png"


def characters(data: str = WIDELANDS_DATA) -> Iterator[tuple[str, str]]:
    """``(identity, folder)`` of every character folder with an ``init.lua`` (before merging)."""
    groups = [(os.path.join(data, "tribes", "workers", tribe), f"{tribe}/")
              for tribe in sorted(_listdir(os.path.join(data, "tribes", "workers")))]
    groups += [(os.path.join(data, "tribes", "ships"), "ships/"), (os.path.join(data, "world", "critters"), "critters/")]
    for parent, prefix in groups:
        for name in sorted(_listdir(parent)):
            folder = os.path.join(parent, name)
            if os.path.isfile(os.path.join(folder, "init.lua")):
                yield prefix + name, folder


def _listdir(path: str) -> list[str]:
    return os.listdir(path) if os.path.isdir(path) else []


def _strip_lua_comments(text: str) -> str:
    text = re.sub(r"--\[(=*)\[.*?\]\1\]", "", text, flags=re.S)
    return re.sub(r"--[^\n]*", "", text)


def _table(text: str, start: int) -> tuple[str, int]:
    """The body of the Lua table whose ``{`` is at ``start``, and the index of its ``}``."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i
    raise ValueError("unbalanced braces")


def _entries(body: str) -> Iterator[tuple[str, str]]:
    """The ``name = { ... }`` entries at the top level of a table body."""
    pattern, i = re.compile(r"(\w+)\s*=\s*\{"), 0
    while (match := pattern.search(body, i)) is not None:
        content, end = _table(body, match.end() - 1)
        yield match.group(1), content
        i = end + 1


def _int(content: str, key: str) -> Optional[int]:
    match = re.search(rf"\b{key}\s*=\s*(\d+)", content)
    return int(match.group(1)) if match else None


def _scale_one(stem: str) -> Optional[str]:
    for path in (f"{stem}_1.png", f"{stem}.png"):
        if os.path.isfile(path):
            return path
    return None


def character_frames(identity: str, folder: str) -> list[Frame]:
    """Every scale-1 frame of the animations that ``folder/init.lua`` declares, in its order.

    Sprite sheets (``spritesheets = {name = {frames, rows, columns, directional, ...}}``) are
    cut row by row into ``frames`` cells; frame animations (``animations = {...}``) are the
    numbered files ``<name>[_<dir>]_NN.png`` or a single ``<name>[_<dir>][_1].png``.
    Player-colour masks (``*_pc.png``) are never read.
    """
    with open(os.path.join(folder, "init.lua"), encoding="utf-8") as f:
        text = _strip_lua_comments(f.read())
    frames = []
    for kind in ("spritesheets", "animations"):
        for match in re.finditer(rf"\b{kind}\s*=\s*\{{", text):
            body, _ = _table(text, match.end() - 1)
            for animation, content in _entries(body):
                basename = re.search(r'\bbasename\s*=\s*"([^"]+)"', content)
                subdir = re.search(r'\bdirectory\s*=\s*dirname\s*\.\.\s*"([^"]*)"', content)
                directional = re.search(r"\bdirectional\s*=\s*true", content) is not None
                base = os.path.join(folder, subdir.group(1) if subdir else "",
                                    basename.group(1) if basename else animation)
                for direction in DIRECTIONS if directional else ("",):
                    stem = f"{base}_{direction}" if direction else base
                    frames += _frames(identity, animation, direction, stem, kind, content)
    return frames


def _frames(identity: str, animation: str, direction: str, stem: str, kind: str, content: str) -> list[Frame]:
    if kind == "spritesheets":
        path = _scale_one(stem)
        count, rows, columns = _int(content, "frames"), _int(content, "rows"), _int(content, "columns")
        if path is None or not count or not rows or not columns:
            return []
        with Image.open(path) as image:
            width, height = image.size
        w, h = width // columns, height // rows
        return [Frame(identity, animation, direction, k, path,
                      ((k % columns) * w, (k // columns) * h, (k % columns + 1) * w, (k // columns + 1) * h))
                for k in range(count)]
    paths = sorted(glob.glob(glob.escape(stem) + "_[0-9][0-9].png")) or list(filter(None, [_scale_one(stem)]))
    out = []
    for k, path in enumerate(paths):
        with Image.open(path) as image:
            out.append(Frame(identity, animation, direction, k, path, (0, 0, *image.size)))
    return out


def _crop(frame: Frame, cache: dict) -> Optional[Image.Image]:
    """The frame's RGBA pixels cropped to its opaque part (None if it has none)."""
    sheet = cache.get(frame.file)
    if sheet is None:
        cache.clear()  # frames come sheet by sheet: one open sheet at a time
        with Image.open(frame.file) as image:
            sheet = cache[frame.file] = image.convert("RGBA")
    cell = sheet.crop(frame.box)
    box = cell.getchannel("A").getbbox()
    return None if box is None else cell.crop(box)


def _thumbnail(rgba: Image.Image) -> np.ndarray:
    """32x32 premultiplied RGBA, the sprite scaled to fit and centred (float32, 0-255)."""
    scale = _THUMB / max(rgba.size)
    small = rgba.resize((max(1, round(rgba.width * scale)), max(1, round(rgba.height * scale))), Image.BILINEAR)
    canvas = Image.new("RGBA", (_THUMB, _THUMB))
    canvas.paste(small, ((_THUMB - small.width) // 2, (_THUMB - small.height) // 2))
    pixels = np.asarray(canvas, dtype=np.float32).copy()
    pixels[..., :3] *= pixels[..., 3:4] / 255.0
    return np.floor(pixels).reshape(-1)


def select_frames(identities: Sequence[str], thumbs: torch.Tensor, min_frame: float = MIN_FRAME_DIFFERENCE,
                  min_identity: float = MIN_IDENTITY_DIFFERENCE, min_images: int = 2) -> list[int]:
    """Indices of the frames kept by steps 1-3 of the module docstring.

    Args:
        identities: the identity of each frame, frames of one identity in their order.
        thumbs: (F, D) thumbnails, compared by mean absolute difference.
    """
    by_identity: dict[str, list[int]] = {}
    for i, identity in enumerate(identities):
        by_identity.setdefault(identity, []).append(i)
    kept: list[int] = []
    for members in by_identity.values():
        chosen: list[int] = []
        for i in members:
            if not chosen or float((thumbs[chosen] - thumbs[i]).abs().mean(1).min()) > min_frame:
                chosen.append(i)
        kept += chosen
    index = torch.tensor(kept)
    owner = torch.tensor(_identity_ids(identities, kept))
    nearest = torch.full((len(kept),), float("inf"))
    for start in range(0, len(kept), 256):
        rows = slice(start, start + 256)
        dist = torch.cdist(thumbs[index[rows]], thumbs[index], p=1) / thumbs.shape[1]
        dist[owner[rows, None] == owner[None, :]] = float("inf")
        nearest[rows] = dist.min(1).values
    distinct = [i for i, d in zip(kept, nearest.tolist()) if d >= min_identity]
    counts: dict[str, int] = {}
    for i in distinct:
        counts[identities[i]] = counts.get(identities[i], 0) + 1
    return sorted(i for i in distinct if counts[identities[i]] >= min_images)


def _identity_ids(identities: Sequence[str], rows: Sequence[int]) -> list[int]:
    number = {name: k for k, name in enumerate(sorted(set(identities)))}
    return [number[identities[i]] for i in rows]


def build_widelands(data: str, cache_dir: str, background: Sequence[int] = (128, 128, 128)) -> list[tuple]:
    """``(path, identity, camera)`` samples of the Widelands characters, composited RGB PNGs
    under ``cache_dir`` (built once, then read from ``cache_dir/index.json``).

    Raises:
        FileNotFoundError: ``data`` holds no Widelands characters (install ``widelands-data``).
    """
    index_path = os.path.join(cache_dir, "index.json")
    if os.path.isfile(index_path):
        with open(index_path) as f:
            index = json.load(f)
        if index.get("version") == _BUILD_VERSION and index.get("data") == os.path.abspath(data):
            return [tuple(s) for s in index["samples"]]
    found = list(characters(data))
    if not found:
        raise FileNotFoundError(f"no Widelands characters under {data!r}: install them with `make data` or "
                                "`sudo apt-get install widelands-data`, or point DATASETS.WIDELANDS.DATA_ROOT "
                                "at the game's data folder")
    frames: list[Frame] = []
    crops: list[Image.Image] = []
    sheets: dict = {}
    for folder_identity, folder in found:
        identity = MERGED.get(folder_identity, folder_identity)
        for frame in character_frames(identity, folder):
            crop = _crop(frame, sheets)
            if crop is not None:
                frames.append(frame)
                crops.append(crop)
    # frames of one identity together (merged identities follow their target's own frames)
    order = sorted(range(len(frames)), key=lambda i: (frames[i].identity, i))
    frames, crops = [frames[i] for i in order], [crops[i] for i in order]
    thumbs = torch.from_numpy(np.stack([_thumbnail(c) for c in crops]))
    samples = []
    for i in select_frames([f.identity for f in frames], thumbs):
        frame = frames[i]
        path = os.path.join(cache_dir, frame.identity.replace("/", "__"), frame.name)
        canvas = Image.new("RGBA", crops[i].size, (*background, 255))
        canvas.alpha_composite(crops[i])
        rgb = canvas.convert("RGB")
        atomic_write(path, lambda f, image=rgb: image.save(f, format="PNG"))
        samples.append((path, frame.identity, frame.camera))
    index = {"version": _BUILD_VERSION, "data": os.path.abspath(data), "samples": samples}
    atomic_write(index_path, lambda f: f.write(json.dumps(index).encode()))
    return samples
