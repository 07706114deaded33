"""leap-face-train's bad inputs and silent faults: each fed to the program, with the exit
status and the one line the user sees."""
import json

import pytest

from tests.helpers import face_helpers as fh
from tests.helpers.cli_errors import one_error_line
from leap_plugin.cli import face_train
from leap_plugin.face.config import ConfigError, load_config

BASE = dict(
    margin_list=(1.0, 0.0, 0.35), scale=16.0, network="tiny", embedding_size=32, batch_size=8,
    lr=0.05, num_epoch=2, verbose=1000, frequent=1, num_workers=0, seed=1, val_targets=[],
    long_tail=dict(head=4, tail_classes=4, tail_samples=2, seed=0),  # K_i: 6, 6, 6, 6, 2, 2, 2, 2
    leap=dict(enabled=True, start_epoch=1),
)


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces") / "train"
    fh.make_face_folder(str(root), [6] * 8)  # <H4, T4>: 32 images, 4 steps of 8 per epoch
    return root


def _config(faces, folder, name, **keys):
    path = folder / f"{name}.py"
    fh.write_config(path, **{**BASE, "rec": str(faces), "output": str(folder / name), **keys})
    return str(path)


def _error_line(argv, capsys):
    """Run leap-face-train; assert exit status 2 and one error line, no traceback; return it."""
    line = one_error_line(face_train.main, argv, capsys)
    assert line.startswith("leap-face-train: error: ")
    return line


def _strict_records(path):
    """metrics.jsonl read as strict JSON: a bare NaN / Infinity raises."""
    def refuse(name):
        raise ValueError(f"non-JSON constant {name} in {path}")

    return [json.loads(line, parse_constant=refuse) for line in open(path)]


# ------------------------------------------------------------------ LEAP that never starts
def test_start_epoch_not_before_num_epoch_is_refused(faces, tmp_path, capsys):
    line = _error_line([_config(faces, tmp_path, "late", num_epoch=3), "leap.start_epoch=3"], capsys)
    assert "leap.start_epoch = 3 is not allowed: must be smaller than num_epoch = 3" in line
    assert not (tmp_path / "late").exists()  # refused before anything was written
    # the same at config time, and only with LEAP on
    with pytest.raises(ConfigError, match=r"leap.start_epoch = 5 .* num_epoch = 2"):
        load_config(_config(faces, tmp_path, "later", leap=dict(enabled=True, start_epoch=5)))
    assert load_config(_config(faces, tmp_path, "off", leap=dict(enabled=False, start_epoch=5))).num_epoch == 2


def test_no_head_class_is_a_warning_and_a_short_run_is_logged(faces, tmp_path):
    """vanilla with T above every K_i: no class can get a cloud, said at start as a WARNING.
    frequent (50) exceeds the run's 8 steps: the loss is still logged at the end of each epoch,
    in the console log, metrics.jsonl (strict JSON: the NaN head statistics as null) and TensorBoard."""
    config = _config(faces, tmp_path, "nohead", frequent=50,
                     leap=dict(enabled=True, start_epoch=1, version="vanilla", tail_threshold=10))
    assert face_train.main([config]) == 0
    out = tmp_path / "nohead"
    log = (out / "training.log").read_text()
    warnings = [line for line in log.splitlines() if " WARNING " in line]
    assert len(warnings) == 1
    assert ("LEAP: no class has more than leap.tail_threshold = 10 training images (the largest has 6)"
            in warnings[0] and "plain baseline" in warnings[0])
    assert log.index("plain baseline") < log.index("step 4/8")  # at start, before the first step
    assert "step 8/8" in log

    records = _strict_records(out / "metrics.jsonl")
    steps = [r for r in records if "loss" in r]
    assert [(r["step"], r["epoch"]) for r in steps] == [(4, 0), (8, 1)]
    assert all(r["leap/head_angle_mean"] is None for r in steps)  # NaN -> null
    assert max(r["leap/clouded_classes"] for r in steps) == 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [4, 8]


def test_metrics_jsonl_writes_non_finite_values_as_null(tmp_path):
    from types import SimpleNamespace

    monitor = face_train.Monitor(SimpleNamespace(output=str(tmp_path)), 0, 10, 0)
    try:
        monitor.step(1, 0, 1, 2.5, 0.1, 8, {"leap/head_angle_mean": float("nan"), "leap/x": float("inf"),
                                            "leap/clouded_classes": 3.0})
        monitor.verification(1, {"pairs/accuracy": float("-inf")})
    finally:
        monitor.close()
    first, second = _strict_records(tmp_path / "metrics.jsonl")
    assert first["leap/head_angle_mean"] is None and first["leap/x"] is None
    assert first["leap/clouded_classes"] == 3.0 and first["loss"] == 2.5
    assert second == {"step": 1, "val/pairs/accuracy": None}


def test_no_cloud_reason_for_each_version():
    leap = dict(version="vanilla", tail_threshold=5, memory_factor=1)
    assert face_train.no_cloud_reason([6, 2, 2], leap) is None
    assert "no head class" in face_train.no_cloud_reason([5, 2, 2], leap)
    assert "no tail class" in face_train.no_cloud_reason([6, 7], leap)
    full = dict(version="full", tail_threshold=5, memory_factor=3)
    assert face_train.no_cloud_reason([1, 2], full) is None
    assert "more than one training image" in face_train.no_cloud_reason([1, 1, 1], full)


def test_a_leap_run_with_head_classes_has_no_warning(faces, tmp_path):
    config = _config(faces, tmp_path, "ok", num_epoch=1, leap=dict(enabled=True, start_epoch=0,
                                                                     version="vanilla", tail_threshold=3))
    assert face_train.main([config]) == 0
    assert " WARNING " not in (tmp_path / "ok" / "training.log").read_text()


# ------------------------------------------------------------------ flags after the overrides
def test_unknown_flag_after_the_overrides_says_flags_come_first(faces, tmp_path, capsys):
    config = _config(faces, tmp_path, "flags")
    line = _error_line([config, "num_epoch=3", "--output", str(tmp_path / "x")], capsys)
    assert ("'--output' is not a flag of leap-face-train: its flags are --resume and --overwrite, and flags "
            "come before the key=value overrides; set config keys as overrides (output=VALUE)") in line
    line = _error_line([config, "num_epoch=3", "--", "--resume"], capsys)
    assert "'--resume' was read as an override: flags come before the key=value overrides" in line
    assert not (tmp_path / "flags").exists()
