"""leap-face-train end to end on a small generated image folder (CPU)."""
import glob
import json
import os
import shutil

import pytest
import torch

from tests.helpers.distributed_utils import run
from tests.helpers import face_helpers as fh
from leap_plugin.cli import face_train
from leap_plugin.face.config import load_config

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs", "face")

BASE = dict(
    margin_list=(1.0, 0.0, 0.35), scale=16.0, network="tiny", embedding_size=32, batch_size=8,
    lr=0.05, num_epoch=2, verbose=4, frequent=1, num_workers=0, seed=1,
    long_tail=dict(head=4, tail_classes=4, tail_samples=2, seed=0),
    leap=dict(enabled=True, start_epoch=1),
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    fh.make_face_folder(str(root / "train"), [6] * 8)  # <H4, T4> keeps 4 x 6 + 4 x 2 = 32 images
    fh.make_pairs_bin(str(root / "pairs.bin"))
    return root


def _config(data, folder, name, **keys):
    path = folder / f"{name}.py"
    fh.write_config(path, **{**BASE, "rec": str(data / "train"), "output": str(folder / name),
                             "val_targets": [str(data / "pairs.bin")], **keys})
    return str(path)


def _checkpoint(folder, name, rank=0):
    return torch.load(folder / name / f"checkpoint_rank{rank}.pt", weights_only=True)


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """Two epochs without interruption."""
    folder = tmp_path_factory.mktemp("runs")
    assert face_train.main([_config(data, folder, "straight")]) == 0
    return folder


def test_trains_verifies_and_turns_the_cloud_on(straight):
    out = straight / "straight"
    assert {"model.pt", "checkpoint_rank0.pt", "training.log", "metrics.jsonl"} <= set(os.listdir(out))
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 9))
    assert all(r["leap/cloud_active"] == (r["epoch"] >= 1) for r in steps)
    assert max(r["leap/clouded_classes"] for r in steps) > 0
    vals = [r for r in records if "val/pairs/accuracy" in r]
    assert [r["step"] for r in vals] == [4, 8]  # every `verbose` steps (8 is also the end)
    assert 0.0 <= vals[-1]["val/pairs/accuracy"] <= 1.0
    state = _checkpoint(straight, "straight")
    assert state["epoch"] == 2 and state["global_step"] == 8
    assert state["partial_fc"]["memory.class_counts"].tolist() == [6] * 4 + [2] * 4


@pytest.mark.parametrize("method", ["ldam", "balanced_softmax", "adaptive_arc"])
def test_peer_method_trains_end_to_end(data, tmp_path, method):
    """A peer long-tail method replaces LEAP by config; its margins come from the kept classes' K_i."""
    m3 = 0.2 if method == "balanced_softmax" else 0.0
    config = _config(data, tmp_path, method, margin_list=(1.0, 0.0, m3), leap=dict(enabled=False),
                     long_tail_loss=dict(method=method), num_epoch=1)
    assert face_train.main([config]) == 0
    records = [json.loads(line) for line in open(tmp_path / method / "metrics.jsonl")]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 4 and all(map(torch.isfinite, torch.tensor(losses)))
    assert not any(k.startswith("leap/") for r in records for k in r)
    state = _checkpoint(tmp_path, method)["partial_fc"]
    assert state["margin_loss.class_counts"].tolist() == [6] * 4 + [2] * 4
    per_class = state["margin_loss.per_class"]
    # Rarer classes get the larger margin (LDAM, adaptive ArcFace) or the lower logit offset.
    assert (per_class[4:] > per_class[:4].max()).all() if method != "balanced_softmax" \
        else (per_class[4:] < per_class[:4].min()).all()


def test_resume_continues_exactly(data, straight, tmp_path, monkeypatch):
    config = _config(data, tmp_path, "split")
    save = face_train.save_checkpoint

    def save_then_die(path, state):
        save(path, state)
        raise KeyboardInterrupt  # the run is killed right after its first checkpoint

    monkeypatch.setattr(face_train, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        face_train.main([config])
    monkeypatch.undo()
    assert _checkpoint(tmp_path, "split")["epoch"] == 1
    assert face_train.main([config, "--resume"]) == 0

    a, b = _checkpoint(straight, "straight"), _checkpoint(tmp_path, "split")
    assert b["global_step"] == 8
    for part in ("backbone", "partial_fc"):
        for key, value in a[part].items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(b[part][key], value, msg=f"{part}.{key}")


def test_two_ranks_train_with_sharded_leap_state(data, tmp_path):
    config = _config(data, tmp_path, "ddp", batch_size=4, num_epoch=1, val_targets=[],
                     leap=dict(enabled=True, start_epoch=0))
    run(fh.train_worker, 2, config)
    r0, r1 = _checkpoint(tmp_path, "ddp", 0), _checkpoint(tmp_path, "ddp", 1)
    assert r0["partial_fc"]["weight"].shape[0] + r1["partial_fc"]["weight"].shape[0] == 8
    # each rank holds the LEAP state of its own class shard, as PartialFC holds its weights
    counts = torch.cat([r0["partial_fc"]["memory.class_counts"], r1["partial_fc"]["memory.class_counts"]])
    assert counts.tolist() == [6] * 4 + [2] * 4 and r0["partial_fc"]["memory.centers"].shape[0] == 4
    fill = r0["partial_fc"]["memory.mem_fill"].sum() + r1["partial_fc"]["memory.mem_fill"].sum()
    assert int(fill) == 32  # every image of the epoch seen once, by the rank of its class
    for key, value in r0["backbone"].items():
        if "running_" not in key and "num_batches" not in key:  # BN statistics stay per rank
            torch.testing.assert_close(r1["backbone"][key], value)


def _main_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        face_train.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_clear_errors_for_bad_config_and_missing_data(data, tmp_path, capsys):
    err = _main_error([_config(data, tmp_path, "a", rec=str(tmp_path / "nowhere"))], capsys)
    assert "nowhere" in err and "does not exist" in err
    err = _main_error([_config(data, tmp_path, "b", sample_rate=1.5)], capsys)
    assert "sample_rate = 1.5" in err
    err = _main_error([_config(data, tmp_path, "c"), "leap.version=fancy"], capsys)
    assert "leap.version = 'fancy'" in err and "'full'" in err
    err = _main_error([_config(data, tmp_path, "d", network="r9")], capsys)
    assert "network = 'r9'" in err and "'r18'" in err


def test_corrupt_image_is_named(data, tmp_path):
    root = tmp_path / "train"
    fh.make_face_folder(str(root), [4, 4])
    (root / "id001" / "2.png").write_bytes(b"not a png")
    config = _config(data, tmp_path, "corrupt", rec=str(root), long_tail=None, num_epoch=1,
                     leap=dict(enabled=True, start_epoch=0))
    with pytest.raises(ValueError, match=r"cannot read image .*id001/2\.png"):
        face_train.main([config])


def test_wrong_or_damaged_checkpoint_is_refused(data, straight, tmp_path):
    shutil.copytree(straight / "straight", tmp_path / "other")
    config = _config(data, tmp_path, "other", embedding_size=16)
    with pytest.raises(ValueError, match="embedding_size = 32, this run has embedding_size = 16"):
        face_train.main([config, "--resume"])
    (tmp_path / "other" / "checkpoint_rank0.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot be read"):
        face_train.main([_config(data, tmp_path, "other"), "--resume"])


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIGS, "*.py"))))
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.network == "r18" and cfg.long_tail["tail_samples"] == 5


# ------------------------------------------------------------------ nothing silent
def test_damaged_verification_bin_fails_before_training(data, tmp_path, capsys):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a pickle")
    err = _main_error([_config(data, tmp_path, "badbin", val_targets=[str(bad)])], capsys)
    assert "val_targets" in err and "bad.bin" in err
    assert not (tmp_path / "badbin" / "checkpoint_rank0.pt").exists()  # nothing trained first
    few = tmp_path / "few.bin"
    fh.make_pairs_bin(str(few), pairs=4)
    err = _main_error([_config(data, tmp_path, "fewbin", val_targets=[str(few)])], capsys)
    assert "needs at least 10 pairs" in err


def test_unknown_config_key_is_refused(data, tmp_path, capsys):
    err = _main_error([_config(data, tmp_path, "typo", num_epochs=3)], capsys)
    assert "unknown config keys ['num_epochs']" in err


def test_a_finished_run_is_not_overwritten_without_being_told(data, straight, tmp_path, capsys):
    shutil.copytree(straight / "straight", tmp_path / "again", ignore=shutil.ignore_patterns(".lock"))
    before = (tmp_path / "again" / "model.pt").read_bytes()
    config = _config(data, tmp_path, "again")
    err = _main_error([config], capsys)
    assert "holds a run already" in err and "--resume" in err and "--overwrite" in err
    assert (tmp_path / "again" / "model.pt").read_bytes() == before
    assert face_train.main([config, "--overwrite", "num_epoch=1", "leap.start_epoch=0"]) == 0


def test_resume_anywhere_on_the_command_line(data, straight, tmp_path):
    shutil.copytree(straight / "straight", tmp_path / "r", ignore=shutil.ignore_patterns(".lock"))
    config = _config(data, tmp_path, "r")
    assert face_train.main([config, "num_epoch=3", "--resume", "leap.start_epoch=1"]) == 0
    assert _checkpoint(tmp_path, "r")["epoch"] == 3


def test_a_busy_output_folder_is_refused(data, tmp_path, capsys):
    import subprocess
    import sys

    out = tmp_path / "busy"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    holder = subprocess.Popen([sys.executable, "-c", "import time; from leap_plugin.io import lock_folder; "
                               f"lock_folder({str(out)!r}); print('locked', flush=True); time.sleep(120)"],
                              env=dict(os.environ, PYTHONPATH=root), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        err = _main_error([_config(data, tmp_path, "busy")], capsys)
        assert "is in use by another leap-face-train run" in err
    finally:
        holder.kill()
        holder.wait()


def test_the_readme_small_data_command_runs_as_written(data, tmp_path):
    """The documented leap-face-train command for a small data set (README.md or the arcface_torch
    page of docs/), with this test's folders; it trains fewer steps than `frequent` per epoch and
    is logged all the same, once per epoch."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    pages = [os.path.join(root, "README.md"), *sorted(glob.glob(os.path.join(root, "docs", "*.md")))]
    lines = next(text.splitlines() for text in (open(page).read() for page in pages) if "output=runs/small" in text)
    line = next(i for i, text in enumerate(lines) if "output=runs/small" in text)
    command = (lines[line].rstrip("\\") + " " + lines[line + 1]).split()
    assert command[0] == "leap-face-train"
    args = [a.replace("/data/faces", str(data / "train")).replace("runs/small", str(tmp_path / "small"))
            for a in command[1:]]
    args = [os.path.join(root, a) if a.startswith("configs/") else a for a in args]
    assert face_train.main(args + ["batch_size=8"]) == 0  # the 48 test images fit a batch of 8 only
    assert (tmp_path / "small" / "model.pt").exists()
    cfg = load_config(args[0], args[1:] + ["batch_size=8"])
    assert cfg.frequent > 6  # the 48 images give 6 steps per epoch: fewer than `frequent`
    losses = [r for r in map(json.loads, open(tmp_path / "small" / "metrics.jsonl")) if "loss" in r]
    assert [r["step"] for r in losses if r["step"] % 6 == 0] == [6 * (e + 1) for e in range(cfg.num_epoch)]
    assert sorted({r["epoch"] for r in losses}) == list(range(cfg.num_epoch))
