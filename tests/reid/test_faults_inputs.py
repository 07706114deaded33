"""Bad inputs and faults found by trying the package as a new user would: each ends in one
line naming the problem and exit status 2, before anything is trained or lost (every
subprocess has a timeout, so a hang fails the test). Through leap-train on a tiny
Market-1501-layout folder, and in-process where a fault must be injected."""
import errno
import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import leap_plugin  # noqa: F401
from tests.helpers import market_data

from tests.helpers.runs import ROOT, TIMEOUT, last_line, leap_train


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    market_data.write_market1501(str(root / "datasets"))
    return root


def config(root, name, **kw):
    return market_data.tiny_config(str(root / f"{name}.yml"), str(root / f"out_{name}"), **kw)


# ------------------------------------------------------------------ config-time errors
@pytest.mark.parametrize("sampler", ["NaiveIdentitySampler", "BalancedIdentitySampler", "LongTailIdentitySampler"])
def test_a_batch_that_is_no_multiple_of_the_instances_is_refused_not_a_hang(root, sampler):
    run = leap_train(root, "--config-file", config(root, f"batch_{sampler}"), "DATALOADER.SAMPLER_TRAIN", sampler,
                     "SOLVER.IMS_PER_BATCH", "18", "DATALOADER.NUM_INSTANCE", "4")
    assert run.returncode == 2, run.stdout[-3000:]
    assert last_line(run) == (f"leap-train: error: SOLVER.IMS_PER_BATCH = 18 is not allowed: DATALOADER.SAMPLER_TRAIN "
                              f"{sampler} fills a batch with DATALOADER.NUM_INSTANCE = 4 images per identity: use a "
                              "multiple of 4 (e.g. 16 or 20)")
    assert not (root / f"out_batch_{sampler}").exists()  # refused before anything was written


@pytest.mark.parametrize("opts,message", [
    (["MODEL.HEADS.LEAP.START_EPOCH", "2"], "MODEL.HEADS.LEAP.START_EPOCH = 2 is not allowed: the feature cloud "
                                             "would start after the last epoch (SOLVER.MAX_EPOCH 2"),
    (["TEST.EVAL_PERIOD", "0"], "TEST.EVAL_PERIOD = 0 is not allowed: use an integer >= 1"),
    (["SOLVER.MAX_EPOCH", "0"], "SOLVER.MAX_EPOCH = 0 is not allowed: use an integer >= 1"),
    (["MODEL.HEADS.LEAP.CLOUD_SCALE", "1e9"], "MODEL.HEADS.LEAP.CLOUD_SCALE = 1000000000.0 is not allowed: use a "
                                               "number in [0, 30] (clouds wider than pi clip every angle)"),
    (["DATASETS.LONG_TAIL.ENABLED", "True", "DATASETS.LONG_TAIL.HEAD", "8"],
     "DATASETS.LONG_TAIL.HEAD = 8 is not allowed: the training set has 8 identities"),
])
def test_values_that_would_fail_late_or_abort_are_refused_at_start(root, opts, message):
    name = "late_" + opts[0].split(".")[-1].lower() + opts[-1].replace(".", "")
    run = leap_train(root, "--config-file", config(root, name), *opts)
    assert run.returncode == 2, run.stdout[-3000:]
    assert last_line(run).startswith(f"leap-train: error: {message}"), last_line(run)
    assert not list((root / f"out_{name}").glob("model_*.pth"))


def test_an_infinite_cloud_scale_in_a_yaml_file_names_the_key(root):
    path = config(root, "inf")
    with open(path, "a") as f:
        f.write("\n")
    text = open(path).read().replace("      START_EPOCH: 0", "      START_EPOCH: 0\n      CLOUD_SCALE: .inf")
    open(path, "w").write(text)
    run = leap_train(root, "--config-file", path)
    assert run.returncode == 2 and "MODEL.HEADS.LEAP.CLOUD_SCALE = inf is not allowed: use a number in [0, 30]" \
        in last_line(run), run.stdout[-2000:]


def test_a_yaml_syntax_error_names_the_file_and_line(root):
    path = root / "broken.yml"
    path.write_text("MODEL:\n  HEADS:\n    NAME: [LeapHead\n  DEVICE: cpu\n")
    run = leap_train(root, "--config-file", str(path))
    assert run.returncode == 2, run.stdout[-2000:]
    assert last_line(run).startswith(f"leap-train: error: {path}: line ") and "not valid YAML" in last_line(run)


def test_a_flag_after_the_overrides_says_flags_come_first(root):
    run = leap_train(root, "--config-file", config(root, "flag"), "SOLVER.MAX_EPOCH", "1", "--resume")
    assert run.returncode == 2 and "--resume comes after the KEY VALUE overrides: flags go before them" in run.stdout


# ------------------------------------------------------------------ output folders
def test_restarting_into_a_run_needs_resume_or_overwrite(root):
    path = config(root, "restart", epochs=1)
    first = leap_train(root, "--config-file", path, "SOLVER.CHECKPOINT_PERIOD", "1")
    assert first.returncode == 0, first.stdout[-3000:]
    out = root / "out_restart"
    before = {p.name: p.stat().st_mtime for p in out.iterdir()}
    again = leap_train(root, "--config-file", path)
    assert again.returncode == 2
    assert last_line(again).startswith(f"leap-train: error: OUTPUT_DIR '{out}' holds an earlier run (")
    assert "add --resume to continue it" in last_line(again) and "--overwrite" in last_line(again)
    assert {p.name: p.stat().st_mtime for p in out.iterdir() if p.name in before} == before  # untouched
    fresh = leap_train(root, "--overwrite", "--config-file", path, "SOLVER.CHECKPOINT_PERIOD", "1")
    assert fresh.returncode == 0, fresh.stdout[-3000:]
    records = [json.loads(line) for line in open(out / "metrics.json")]
    iterations = [r["iteration"] for r in records if "total_loss" in r]
    assert iterations == sorted(set(iterations))  # one run's records, not two appended


def test_an_output_path_that_is_a_file_or_not_writable_is_named(root, tmp_path):
    target = tmp_path / "a_file"
    target.write_text("not a folder")
    run = leap_train(root, "--config-file", config(root, "file"), "OUTPUT_DIR", str(target))
    assert run.returncode == 2 and last_line(run) == (f"leap-train: error: OUTPUT_DIR '{target}' is a file, not a "
                                                      "folder: choose another OUTPUT_DIR")
    if os.geteuid() == 0:
        return  # root writes anywhere: a read-only folder cannot be made here
    locked = tmp_path / "read_only"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    run = leap_train(root, "--config-file", config(root, "ro"), "OUTPUT_DIR", str(locked))
    assert run.returncode == 2 and f"OUTPUT_DIR '{locked}' is not writable" in last_line(run)


def test_the_output_folder_check_refuses_an_unwritable_folder(tmp_path, monkeypatch):
    """The read-only case in-process (the test above cannot make one as root)."""
    from types import SimpleNamespace

    from leap_plugin.reid.engine import check_output_dir
    from leap_plugin.validation import ConfigError

    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(ConfigError, match="is not writable"):
        check_output_dir(SimpleNamespace(OUTPUT_DIR=str(tmp_path)), SimpleNamespace(resume=False))


def test_a_full_disk_ends_in_one_line_and_keeps_the_checkpoints_written(root, monkeypatch, capsys):
    """The second checkpoint's write fails with ENOSPC: exit 2, the first one intact."""
    import fastreid.data.build as data_build

    from leap_plugin.cli import train

    monkeypatch.setenv("FASTREID_DATASETS", str(root / "datasets"))
    monkeypatch.setattr(data_build, "_root", str(root / "datasets"))
    saves = []
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        saves.append(f)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(root / "out_full" / "model_0001.pth"))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    code = train.main(["--config-file", config(root, "full", epochs=3), "SOLVER.CHECKPOINT_PERIOD", "1"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"leap-train: error: No space left on device: {root / 'out_full' / 'model_0001.pth'}; the "
                   "checkpoints written before are intact")
    first = torch.load(root / "out_full" / "model_0000.pth", map_location="cpu", weights_only=False)
    assert "model" in first


# ------------------------------------------------------------------ data
def test_a_16_bit_png_is_read_as_8_bit_rgb():
    """fastreid's read_image failed on it mid-training with an anonymous TypeError."""
    from fastreid.data.common import CommDataset
    from fastreid.data.data_utils import read_image

    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "wide.png")
        values = np.array([[0, 257 * 100], [65535, 257 * 50]], dtype=np.uint16)
        Image.fromarray(values).save(path)
        assert Image.open(path).mode.startswith("I;16")
        image = read_image(path)
        assert image.mode == "RGB" and np.asarray(image)[..., 0].tolist() == [[0, 100], [255, 50]]
        sample = CommDataset([(path, "p0", "c0")], None, relabel=True)[0]
        assert sample["images"].mode == "RGB"


def test_a_folder_where_a_test_image_should_be_fails_at_start_naming_it(root, tmp_path):
    datasets = tmp_path / "data"
    shutil.copytree(root / "datasets", datasets)
    gallery = datasets / "Market-1501-v15.09.15" / "bounding_box_test"
    victim = sorted(gallery.glob("0500_*.jpg"))[0]
    victim.unlink()
    victim.symlink_to(tmp_path, target_is_directory=True)
    run = leap_train(root, "--config-file", config(root, "dir_image"), datasets=datasets)
    assert run.returncode == 2, run.stdout[-3000:]
    assert last_line(run) == f"leap-train: error: image '{victim}' is a folder, not an image file"
    assert not list((root / "out_dir_image").glob("model_*.pth"))  # nothing trained


def test_a_failing_evaluation_saves_the_model_first(root, monkeypatch):
    import fastreid.data.build as data_build
    from fastreid.engine import DefaultTrainer

    from leap_plugin.reid.config import load_config

    monkeypatch.setattr(data_build, "_root", str(root / "datasets"))
    cfg = load_config(config(root, "eval_fails", epochs=2, eval_period=1), ["SOLVER.CHECKPOINT_PERIOD", "100"])
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    trainer = DefaultTrainer(cfg)

    def broken_test(cls, cfg, model):
        raise RuntimeError("the evaluation broke")

    monkeypatch.setattr(DefaultTrainer, "test", classmethod(broken_test))
    with pytest.raises(RuntimeError, match="the evaluation broke"):
        trainer.train()
    saved = torch.load(os.path.join(cfg.OUTPUT_DIR, "model_0000.pth"), map_location="cpu", weights_only=False)
    assert saved["epoch"] == 0 and "model" in saved


# ------------------------------------------------------------------ a non-editable install
@pytest.mark.parametrize("entry", ["leap-train", "upstream train_net.py"])
def test_a_shipped_config_runs_from_another_folder_against_an_installed_copy(root, tmp_path, entry):
    """A faithful stand-in for ``pip install .``: the package alone (no checkout around it,
    so no top-level ``configs/``) on PYTHONPATH, run from an unrelated folder, by leap-train
    and by upstream fastreid's train_net.py with ``import leap_plugin`` first."""
    from tests.reid.test_upstream import UPSTREAM_TRAIN_NET

    site = tmp_path / "site"
    shutil.copytree(os.path.join(ROOT, "leap_plugin"), site / "leap_plugin", symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    script = tmp_path / "train_net.py"
    script.write_text(UPSTREAM_TRAIN_NET)
    runner = leap_train if entry == "leap-train" else upstream_train_net(script)
    run = runner(root, "--config-file", "configs/Market1501/cosface_R50.yml", "OUTPUT_DIR", str(out),
                     "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
                     "MODEL.BACKBONE.PRETRAIN", "False", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST",
                     "[64, 32]", "SOLVER.IMS_PER_BATCH", "16", "SOLVER.MAX_EPOCH", "1", "TEST.EVAL_PERIOD", "1",
                     "TEST.IMS_PER_BATCH", "16", "DATALOADER.NUM_WORKERS", "0", "SOLVER.AMP.ENABLED", "False",
                     "SOLVER.CHECKPOINT_PERIOD", "1", cwd=elsewhere, pythonpath=str(site))
    assert run.returncode == 0, run.stdout[-3000:]
    assert str(site / "leap_plugin" / "configs" / "Market1501" / "cosface_R50.yml") in run.stdout
    assert (out / "model_final.pth").exists() and not list(elsewhere.iterdir())


def upstream_train_net(script):
    def run(root, *args, cwd=None, pythonpath=ROOT, datasets=None):
        env = dict(os.environ, FASTREID_DATASETS=str(datasets or root / "datasets"), CUDA_VISIBLE_DEVICES="",
                   OMP_NUM_THREADS="1", PYTHONPATH=pythonpath)
        return subprocess.run([sys.executable, str(script), *args], cwd=cwd or root, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT)
    return run


def test_leap_analyze_does_not_write_into_a_folder_a_run_is_training_in(root, tmp_path):
    """A training holds its OUTPUT_DIR's lock; leap-analyze's default output is inside it."""
    import fcntl

    out = tmp_path / "training"
    out.mkdir()
    held = open(out / ".lock", "w")
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running leap-train holds it
    held.write(str(os.getpid()))
    held.flush()
    env = dict(os.environ, FASTREID_DATASETS=str(root / "datasets"), PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, "-m", "leap_plugin.cli.analyze", "--config-file", config(root, "analyze"),
                          "OUTPUT_DIR", str(out)], env=env, text=True, capture_output=True, timeout=TIMEOUT)
    held.close()
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert str(out) in run.stderr.strip().splitlines()[-1] and not (out / "analysis").exists()
