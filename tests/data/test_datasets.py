"""Folder scanners, sprite compositing and the fastreid datasets, on tiny generated folders."""
import os

import pytest
from PIL import Image

from leap_plugin.reid import compat

compat.apply()  # before anything imports fastreid.data

from fastreid.config import get_cfg  # noqa: E402
from fastreid.data.common import CommDataset  # noqa: E402
from fastreid.data.datasets import DATASET_REGISTRY  # noqa: E402

from leap_plugin.data.folders import WESNOTH_UNITS, composite_rgba, pose_family, scan_folder, scan_wesnoth  # noqa: E402
from leap_plugin.data.longtail import split_summary  # noqa: E402
from leap_plugin.reid.config import ConfigError  # noqa: E402
from leap_plugin.reid.config import add_leap_config  # noqa: E402
from leap_plugin.reid.datasets import LeapFolder, WesnothSprites, dataset_kwargs  # noqa: E402

RED = (255, 0, 0)
GREY = (128, 128, 128)

# Debian's layout: <faction>[/<sub-folder>]/<unit>[+variant]-<pose>.png
SPRITES = [
    "drakes/burner.png", "drakes/burner-attack-1.png", "drakes/burner-attack-2.png",
    "drakes/burner-defend.png", "drakes/burner-se-run-3.png",
    "drakes/glider+female.png", "drakes/glider+female-die-1.png",
    "orcs/grunt.png", "orcs/grunt-idle-1.png", "orcs/grunt-idle-2.png", "orcs/grunt-bow-attack-1.png",
    "orcs/archer/archer-melee.png", "orcs/archer/archer-ranged-ne.png",
    "undead/ghost.png", "undead/ghost-s-attack-2.png", "undead/ghost-n-1.png",
]


def write_sprite(path, size=4):
    """A red RGBA sprite whose left column is transparent (stored as red under alpha 0)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.new("RGBA", (size, size), RED + (255,))
    for y in range(size):
        image.putpixel((0, y), RED + (0,))
    image.save(path)


@pytest.fixture
def units(tmp_path):
    root = tmp_path / "units"
    for name in SPRITES:
        write_sprite(str(root / name))
    write_sprite(str(root / "random-dice.png"))  # no faction: not a unit
    return str(root)


@pytest.fixture
def folder(tmp_path):
    """Four identities, images named <id>_c<camera>_<n>.jpg, cameras 1 and 2."""
    root = tmp_path / "people"
    for pid in range(4):
        for n in range(4):
            os.makedirs(root / f"p{pid}", exist_ok=True)
            Image.new("RGB", (8, 16), (40 * pid, 30 * n, 0)).save(root / f"p{pid}" / f"p{pid}_c{n % 2 + 1}_{n}.jpg")
    (root / "notes.txt").write_text("not an identity folder")
    return str(root)


@pytest.mark.parametrize("pose, family", [
    ("", "base"), ("attack-1", "attack"), ("se-run-3", "run"), ("bow-attack-2", "attack"),
    ("ne", "base"), ("defend1", "defend"), ("dying-2", "die"), ("great+red-defend-1", "defend"),
    ("sword", "sword"), ("melee-attack", "melee"), ("bat-ne-4", "bat"),
])
def test_pose_family(pose, family):
    assert pose_family(pose) == family


def test_scan_wesnoth_identities_and_pose_families(units):
    samples = scan_wesnoth(units)
    families = {}
    for path, identity, family in samples:
        families.setdefault(identity, set()).add(family)
    assert families == {
        "drakes/burner": {"base", "attack", "defend", "run"},
        "drakes/glider+female": {"base", "die"},
        "orcs/grunt": {"base", "idle", "attack"},
        "orcs/archer/archer": {"melee", "ranged"},
        "undead/ghost": {"base", "attack"},
    }
    assert len(samples) == len(SPRITES)


@pytest.mark.skipif(not os.path.isdir(WESNOTH_UNITS), reason="wesnoth-1.16-data is not installed")
def test_debian_tree_matches_spec():
    summary = split_summary(scan_wesnoth())
    assert (summary["ids"], summary["images"], summary["max"], summary["median"]) == (301, 5780, 191, 12)


def test_composite_puts_background_under_transparent_pixels(units, tmp_path):
    dst = tmp_path / "out" / "sprite.png"
    composite_rgba(os.path.join(units, SPRITES[0]), str(dst), background=GREY)
    image = Image.open(dst)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == GREY and image.getpixel((1, 0)) == RED
    assert os.listdir(dst.parent) == ["sprite.png"]  # no temporary file left behind


def test_wesnoth_dataset_splits_and_cache(units, tmp_path):
    cache = tmp_path / "cache"
    data = WesnothSprites(units_root=units, cache_dir=str(cache), background=GREY, test_fraction=0.4, seed=0)
    train_ids = {pid.removeprefix("wesnoth_") for _, pid, _ in data.train}
    names = sorted({identity for _, identity, _ in scan_wesnoth(units)})  # int pids number these
    test_ids = {names[pid] for _, pid, _ in data.query + data.gallery}
    assert len(train_ids) == 3 and len(test_ids) == 2
    assert not train_ids & test_ids and train_ids | test_ids == set(names)
    assert len(data.train) + len(data.query) + len(data.gallery) == len(SPRITES)
    assert len({pid for _, pid, _ in data.query}) == 2
    for path, pid, camid in data.query:
        assert isinstance(pid, int) and isinstance(camid, int)
        assert any(g[1] == pid and g[2] != camid for g in data.gallery)

    path = data.train[0][0]
    assert path.startswith(str(cache / "bg-128-128-128"))
    assert Image.open(path).mode == "RGB" and Image.open(path).getpixel((0, 0)) == GREY
    mtime = os.path.getmtime(path)
    WesnothSprites(units_root=units, cache_dir=str(cache), background=GREY)
    assert os.path.getmtime(path) == mtime  # reused, not rewritten


def test_missing_wesnoth_data_says_how_to_install(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="apt-get install wesnoth-1.16-data") as e:
        WesnothSprites(units_root=missing, cache_dir=str(tmp_path / "cache"))
    assert missing in str(e.value)


def test_scan_folder_cameras(folder):
    samples = scan_folder(folder, r"_c(\d)_")
    assert {identity for _, identity, _ in samples} == {"p0", "p1", "p2", "p3"}
    assert {camera for _, _, camera in samples} == {"1", "2"}
    own = scan_folder(folder)  # no pattern: every image is its own camera
    assert len({camera for _, _, camera in own}) == len(own) == 16
    with pytest.raises(ValueError, match="one group"):
        scan_folder(folder, r"_c\d_")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        scan_folder(os.path.join(folder, "nowhere"))


def test_folder_dataset_through_fastreid(folder):
    data = DATASET_REGISTRY.get("LeapFolder")(root="unused", folder=folder, camera_pattern=r"_c(\d)_",
                                              test_fraction=0.5, seed=3)
    train_ids = {pid.removeprefix("leapfolder_") for _, pid, _ in data.train}
    assert len(train_ids) == 2 and len(data.train) == 8
    assert {camid for _, _, camid in data.train} == {"leapfolder_1", "leapfolder_2"}
    assert len(data.query) == 2 and len(data.gallery) == 6
    query_dirs = {os.path.basename(os.path.dirname(path)) for path, _, _ in data.query}
    assert not query_dirs & train_ids
    sample = CommDataset(data.train, None, relabel=True)[0]
    assert sample["targets"] == 0 and sample["camids"] in (0, 1) and sample["images"].size == (8, 16)


def test_missing_folder_names_the_path(tmp_path):
    missing = str(tmp_path / "no-such-data")
    with pytest.raises(FileNotFoundError, match="no-such-data"):
        LeapFolder(root="unused", folder=missing)


def test_config_keys_and_kwargs(folder):
    cfg = add_leap_config(get_cfg())
    assert cfg.DATASETS.WESNOTH.BACKGROUND == [128, 128, 128] and cfg.DATASETS.FOLDER.TEST_FRACTION == 0.5
    cfg.DATASETS.FOLDER.DIR = folder
    cfg.DATASETS.FOLDER.CAMERA_PATTERN = r"_c(\d)_"
    kwargs = dataset_kwargs(cfg, "LeapFolder")
    assert kwargs == {"folder": folder, "camera_pattern": r"_c(\d)_", "test_fraction": 0.5,
                      "query_per_id": 1, "seed": 0}
    assert dataset_kwargs(cfg, "Market1501") == {}
    assert dataset_kwargs(cfg, "WesnothSprites")["background"] == (128, 128, 128)
    cfg.DATASETS.FOLDER.TEST_FRACTION = 2.0
    with pytest.raises(ConfigError, match=r"DATASETS\.FOLDER\.TEST_FRACTION = 2\.0"):
        dataset_kwargs(cfg, "LeapFolder")
