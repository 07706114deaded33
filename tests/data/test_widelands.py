"""Widelands' characters as re-ID data: init.lua parsing, sheet cutting, frame selection,
the cache, fastreid's data set, and the counts of the Debian package when it is installed."""
import collections
import os
import statistics

import numpy as np
import pytest
import torch
from PIL import Image

import leap_plugin  # noqa: F401
from leap_plugin.data.widelands import (
    MIN_FRAME_DIFFERENCE,
    WIDELANDS_DATA,
    build_widelands,
    character_frames,
    characters,
    select_frames,
)
from leap_plugin.reid.datasets import WidelandsCharacters

SHEET_LUA = """
dirname = path.dirname(__file__)
-- spritesheets = { fake = { frames = 99, rows = 1, columns = 1 } }
new_worker_type {
   spritesheets = {
      walk = { fps = 10, frames = 3, rows = 2, columns = 2, directional = true, hotspot = { 1, 2 } },
      idle = { frames = 2, rows = 1, columns = 2, hotspot = { 1, 2 } },
   },
   animations = {
      die = { hotspot = { 1, 1 } },
   },
}
"""
SUBDIR_LUA = """
dirname = path.dirname(__file__)
spritesheets = {
   attack = { directory = dirname .. "rookie", basename = "hit", frames = 2, rows = 1, columns = 2 },
}
"""


def _sprite(seed, size=(6, 8)):
    """An RGBA sprite with random colours on a transparent margin."""
    rng = np.random.default_rng(seed)
    cell = np.zeros((size[1] + 4, size[0] + 4, 4), np.uint8)
    cell[2:-2, 2:-2, :3] = rng.integers(0, 256, (size[1], size[0], 3))
    cell[2:-2, 2:-2, 3] = 255
    return cell


def _sheet(path, cells, columns, rows):
    h, w = cells[0].shape[:2]
    sheet = np.zeros((h * rows, w * columns, 4), np.uint8)
    for k, cell in enumerate(cells):
        sheet[(k // columns) * h:(k // columns + 1) * h, (k % columns) * w:(k % columns + 1) * w] = cell
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(sheet, "RGBA").save(path)


@pytest.fixture()
def data(tmp_path):
    """Two workers, a ship and its ferry (merged), a critter using a sub-folder."""
    root = tmp_path / "data"
    lumberjack = root / "tribes" / "workers" / "barbarians" / "lumberjack"
    for d, direction in enumerate(("e", "ne", "nw", "se", "sw", "w")):
        _sheet(str(lumberjack / f"walk_{direction}_1.png"), [_sprite(10 * d + k) for k in range(3)], 2, 2)
        _sheet(str(lumberjack / f"walk_{direction}_pc_1.png"), [_sprite(999)] * 3, 2, 2)  # never read
    _sheet(str(lumberjack / "idle_1.png"), [_sprite(100), _sprite(100)], 2, 1)  # two identical frames
    for k in range(2):
        Image.fromarray(_sprite(200 + k), "RGBA").save(lumberjack / f"die_{k:02d}.png")
    (lumberjack / "init.lua").write_text(SHEET_LUA)
    # a second worker whose idle frames are the lumberjack's: shared art, dropped from both
    smelter = root / "tribes" / "workers" / "barbarians" / "smelter"
    _sheet(str(smelter / "idle_1.png"), [_sprite(100), _sprite(300)], 2, 1)
    _sheet(str(smelter / "rookie" / "hit_1.png"), [_sprite(301), _sprite(302)], 2, 1)
    # a table found anywhere in the file (the soldiers' is a top-level variable)
    (smelter / "init.lua").write_text(SUBDIR_LUA + 'more = { spritesheets = { idle = { frames = 2, rows = 1, '
                                      'columns = 2 } } }\n')
    ferry = root / "tribes" / "workers" / "barbarians" / "ferry"
    _sheet(str(ferry / "sail_1.png"), [_sprite(400), _sprite(401)], 2, 1)
    (ferry / "init.lua").write_text("spritesheets = { sail = { frames = 2, rows = 1, columns = 2 } }")
    ship = root / "tribes" / "ships" / "barbarians"
    _sheet(str(ship / "sail_1.png"), [_sprite(500), _sprite(501)], 2, 1)
    (ship / "init.lua").write_text("spritesheets = { sail = { frames = 2, rows = 1, columns = 2 } }")
    return str(root)


def test_init_lua_is_read_as_the_game_declares_it(data):
    found = dict(characters(data))
    assert sorted(found) == ["barbarians/ferry", "barbarians/lumberjack", "barbarians/smelter", "ships/barbarians"]
    frames = character_frames("barbarians/lumberjack", found["barbarians/lumberjack"])
    by_camera = collections.Counter(f.camera for f in frames)
    # the commented-out block is ignored; 3 frames per direction, 2 idle, 2 numbered die files
    assert by_camera == {**{f"walk_{d}": 3 for d in ("e", "ne", "nw", "se", "sw", "w")}, "idle": 2, "die": 2}
    assert not any("_pc" in f.file for f in frames)
    third = next(f for f in frames if f.camera == "walk_se" and f.index == 2)
    assert third.box == (0, 12, 10, 24)  # row-major cells of a 2 x 2 sheet
    hit = character_frames("barbarians/smelter", found["barbarians/smelter"])
    assert {f.camera for f in hit} == {"attack", "idle"}
    assert all(os.sep + "rookie" + os.sep in f.file for f in hit if f.camera == "attack")


def test_selection_thins_repeats_and_drops_shared_art():
    base = torch.zeros(6, 16)
    thumbs = torch.stack([base[0], base[0] + 1.0, base[0] + 40.0,  # a: the second repeats the first
                          base[0] + 40.5, base[0] + 90.0,          # b: its first is a's third, nearly
                          base[0] + 200.0])                        # c: alone after b keeps one image
    identities = ["a", "a", "a", "b", "b", "c"]
    kept = select_frames(identities, thumbs, min_frame=MIN_FRAME_DIFFERENCE, min_identity=1.5)
    # a keeps frames 0 and 2, but 2 is too close to b's 3: a is left with one image and dropped;
    # b keeps 4 only; c has one image: no identity keeps two
    assert kept == []
    kept = select_frames(identities, thumbs, min_frame=MIN_FRAME_DIFFERENCE, min_identity=1.5, min_images=1)
    assert kept == [0, 4, 5]


def test_build_merges_dedups_caches_and_names_missing_data(data, tmp_path):
    cache = str(tmp_path / "cache")
    samples = build_widelands(data, cache)
    counts = collections.Counter(identity for _, identity, _ in samples)
    # the ferry is the ship; the shared idle frame is gone from both workers
    assert "barbarians/ferry" not in counts and counts["ships/barbarians"] == 4
    assert counts["barbarians/lumberjack"] == 6 * 3 + 2  # 18 walk, 2 die; idle: shared with the smelter
    assert counts["barbarians/smelter"] == 3  # idle's second frame and two attack frames
    path, identity, camera = samples[0]
    image = Image.open(path)
    assert image.mode == "RGB" and image.size == (6, 8)  # cropped to the opaque pixels
    mtime = os.path.getmtime(path)
    assert build_widelands(data, cache) == samples and os.path.getmtime(path) == mtime  # read from the index
    with pytest.raises(FileNotFoundError, match="apt-get install widelands-data"):
        build_widelands(str(tmp_path / "nowhere"), str(tmp_path / "cache2"))


def test_fastreid_dataset_splits_identities(data, tmp_path):
    ds = WidelandsCharacters(data_root=data, cache_dir=str(tmp_path / "cache"), test_fraction=0.34, seed=1)
    train = {pid.removeprefix("widelands_") for _, pid, _ in ds.train}
    assert len(train) == 2 and len({pid for _, pid, _ in ds.query}) == 1
    assert all(path.startswith(str(tmp_path / "cache" / "bg-128-128-128")) for path, _, _ in ds.train)


@pytest.mark.skipif(not os.path.isdir(os.path.join(WIDELANDS_DATA, "tribes")),
                    reason="widelands-data is not installed")
def test_debian_package_gives_the_documented_counts():
    """widelands-data 2:1.1-3 (Debian 12): 174 identities, 4,520 images, max 97, median 25
    (built once into the default cache, about a minute and a half on 2 cores)."""
    ds = WidelandsCharacters(data_root=WIDELANDS_DATA, cache_dir="~/.cache/leap_plugin/widelands")
    counts = collections.Counter(pid for _, pid, _ in ds.train + ds.query + ds.gallery
                                 if not isinstance(pid, str))
    train = collections.Counter(pid for _, pid, _ in ds.train)
    values = list(counts.values()) + list(train.values())
    assert (len(values), sum(values), max(values), statistics.median(values)) == (174, 4520, 97, 25)
