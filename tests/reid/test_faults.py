"""Every bad input or fault gets one clear message and a non-zero exit; nothing
hangs (each run has a timeout), nothing written is lost or mixed. Through leap-train (the
one-line errors) and fastreid's own trainer, on a tiny Market-1501-layout folder."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

import leap_plugin  # noqa: F401
from tests.helpers import market_data
from leap_plugin.reid.config import ConfigError, load_config

from tests.helpers.runs import ROOT, TIMEOUT, last_line, leap_train


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    market_data.write_market1501(str(root / "datasets"))
    return root


@pytest.fixture(scope="module")
def first_run(root):
    """A finished LEAP run (2 epochs, a checkpoint per epoch) the checkpoint tests start from."""
    cfg = market_data.tiny_config(str(root / "leap.yml"), str(root / "first"), epochs=2)
    run = leap_train(root, "--config-file", cfg)
    assert run.returncode == 0, run.stdout[-3000:]
    return cfg


def copy_of(root, name, source="first"):
    target = root / name
    shutil.copytree(root / source, target, ignore=shutil.ignore_patterns(".lock"))
    return target


# ------------------------------------------------------------------------- bad data
def broken_images(root, name, damage):
    """Every training image of the largest identity damaged: the first batch reads one."""
    datasets = root / f"data_{name}"
    market_data.write_market1501(str(datasets))
    train = datasets / "Market-1501-v15.09.15" / "bounding_box_train"
    victims = sorted(train.glob("0001_*.jpg"))
    for victim in victims:
        damage(victim)
    return datasets, victims


@pytest.mark.parametrize("name,damage", [
    ("corrupt", lambda p: p.write_bytes(b"this is not a JPEG at all" * 10)),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])),
    ("zero_bytes", lambda p: p.write_bytes(b"")),
])
def test_a_bad_training_image_ends_the_run_naming_the_file(root, name, damage):
    datasets, victims = broken_images(root, name, damage)
    cfg = market_data.tiny_config(str(root / f"{name}.yml"), str(root / f"out_{name}"), epochs=3)
    start = time.time()
    run = leap_train(root, "--config-file", cfg, datasets=datasets)
    assert run.returncode == 2, run.stdout[-3000:]
    assert last_line(run).startswith("leap-train: error: image ")
    assert any(v.name in last_line(run) for v in victims)
    assert time.time() - start < TIMEOUT


def test_a_long_tail_split_that_keeps_no_image_is_an_error_at_start(root):
    cfg = market_data.tiny_config(str(root / "empty.yml"), str(root / "out_empty"))
    run = leap_train(root, "--config-file", cfg, "DATASETS.LONG_TAIL.ENABLED", "True",
                     "DATASETS.LONG_TAIL.HEAD", "0", "DATASETS.LONG_TAIL.TAIL_SAMPLES", "50")
    assert run.returncode == 2, run.stdout[-3000:]
    assert "DATASETS.LONG_TAIL <H0, S50> keeps no image" in last_line(run)


def test_too_few_identities_for_a_batch_is_an_error_not_a_busy_loop(root):
    cfg = market_data.tiny_config(str(root / "few.yml"), str(root / "out_few"))
    run = leap_train(root, "--config-file", cfg, "SOLVER.IMS_PER_BATCH", "64", "DATALOADER.NUM_INSTANCE", "2")
    assert run.returncode == 2, run.stdout[-3000:]
    assert "draws 32 identities per batch" in last_line(run) and "training set has 8" in last_line(run)


def test_an_empty_image_folder_is_an_error(root, tmp_path):
    (tmp_path / "ids" / "a").mkdir(parents=True)
    cfg = market_data.tiny_config(str(root / "folder.yml"), str(root / "out_folder"))
    run = leap_train(root, "--config-file", cfg, "DATASETS.NAMES", "('LeapFolder',)", "DATASETS.TESTS",
                     "('LeapFolder',)", "DATASETS.FOLDER.DIR", str(tmp_path / "ids"))
    assert run.returncode == 2 and "no images" in last_line(run), run.stdout[-3000:]


# ------------------------------------------------------------------------- LEAP never silently off
def test_leap_layer_without_leap_enabled_is_refused_at_config_time():
    with pytest.raises(ConfigError, match="MODEL.HEADS.LEAP.ENABLED = False.*LeapCosSoftmax.*CosSoftmax"):
        load_config("", ["MODEL.HEADS.CLS_LAYER", "LeapCosSoftmax"])


def tiny_trainer(root, name, trainer_cls=None, leap=True):
    import fastreid.data.build as data_build

    from leap_plugin import LeapTrainer

    data_build._root = str(root / "datasets")
    cfg = load_config(market_data.tiny_config(str(root / f"{name}.yml"), str(root / name), leap=leap, epochs=1),
                      ["SOLVER.CHECKPOINT_PERIOD", "100", "TEST.EVAL_PERIOD", "100"])
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    return (trainer_cls or LeapTrainer)(cfg)


def test_leap_head_trained_without_its_hook_fails_at_the_first_step(root):
    from fastreid.engine import DefaultTrainer, hooks

    class MyTrainer(DefaultTrainer):  # a user's subclass that drops fastreid's hooks
        def build_hooks(self):
            return [hooks.IterationTimer()]

    trainer = tiny_trainer(root, "nohook", MyTrainer)
    with pytest.raises(RuntimeError, match="without LeapHook"):
        trainer.train()


def test_leap_head_trained_without_class_counts_fails_at_the_first_step():
    """A LeapHead in a loop that never hands it K_i (a training set without fastreid's
    labels, a loop of one's own) would train with every S_i = P: an error instead."""
    from fastreid.modeling import build_model
    from fastreid.utils.events import EventStorage

    cfg = load_config("", ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
                           "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.HEADS.NUM_CLASSES", "4",
                           "MODEL.HEADS.NAME", "LeapHead", "MODEL.HEADS.CLS_LAYER", "LeapCosSoftmax",
                           "MODEL.HEADS.LEAP.ENABLED", "True"])
    model = build_model(cfg).train()
    model.heads.hook_attached = True
    with EventStorage(), pytest.raises(RuntimeError, match="no class counts K_i"):
        model({"images": torch.rand(2, 3, 64, 32) * 255, "targets": torch.tensor([0, 1])})
    model.heads.memory.set_class_counts([3, 3, 2, 2])
    with EventStorage():
        model({"images": torch.rand(2, 3, 64, 32) * 255, "targets": torch.tensor([0, 1])})


# ------------------------------------------------------------------------- checkpoints
def test_fine_tune_on_another_split_rebuilds_the_leap_state(root, first_run):
    """MODEL.WEIGHTS from a run with other K_i and MEMORY_FACTOR: rebuilt, logged once,
    and the cloud switches on (the old K_i used to be kept: never clouded)."""
    run = leap_train(root, "--config-file", first_run, "OUTPUT_DIR", str(root / "finetune"),
                     "MODEL.WEIGHTS", str(root / "first" / "model_final.pth"), "DATASETS.LONG_TAIL.ENABLED", "True",
                     "DATASETS.LONG_TAIL.HEAD", "2", "DATASETS.LONG_TAIL.TAIL_SAMPLES", "3",
                     "MODEL.HEADS.LEAP.MEMORY_FACTOR", "2")
    assert run.returncode == 0, run.stdout[-3000:]
    assert run.stdout.count("rebuilt empty for this run") == 1
    state = torch.load(root / "finetune" / "model_final.pth", weights_only=False)["model"]
    assert sorted(state["heads.memory.class_counts"].tolist(), reverse=True) == [12, 10, 3, 3, 3, 3, 3]
    assert state["heads.memory.memory"].numel() == 2 * 37 and (state["heads.memory.cloud_var"] > 0).any()
    metrics = [json.loads(line) for line in open(root / "finetune" / "metrics.json")]
    assert any(m.get("leap/clouded_classes", 0) > 0 for m in metrics)


@pytest.mark.parametrize("opts,match", [
    (["MODEL.HEADS.LEAP.MEMORY_FACTOR", "3"], "MEMORY_FACTOR 3"),
    (["DATASETS.LONG_TAIL.ENABLED", "True", "DATASETS.LONG_TAIL.HEAD", "2", "DATASETS.LONG_TAIL.TAIL_SAMPLES", "3"],
     "K_i of 7 classes"),
])
def test_resume_with_another_data_set_or_memory_factor_is_an_error_before_training(root, first_run, opts, match):
    out = copy_of(root, f"resume_{opts[0].split('.')[-1]}")
    run = leap_train(root, "--config-file", first_run, "--resume", "OUTPUT_DIR", str(out), "SOLVER.MAX_EPOCH", "3",
                     *opts)
    assert run.returncode == 2, run.stdout[-3000:]
    assert last_line(run).startswith("leap-train: error: the LEAP state in this checkpoint") and match in last_line(run)
    assert "Starting training" not in run.stdout


def test_truncated_weights_are_a_one_line_error(root, first_run, tmp_path):
    bad = tmp_path / "half.pth"
    data = (root / "first" / "model_final.pth").read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    for flag in ([], ["--eval-only"]):
        run = leap_train(root, "--config-file", first_run, *flag, "OUTPUT_DIR", str(tmp_path / f"o{len(flag)}"),
                         "MODEL.WEIGHTS", str(bad))
        assert run.returncode == 2, run.stdout[-3000:]
        assert "half.pth" in last_line(run) and "could not be read" in last_line(run)


def test_resume_falls_back_to_the_newest_intact_checkpoint(root, first_run):
    out = copy_of(root, "damaged")
    final = out / "model_final.pth"
    final.write_bytes(final.read_bytes()[:1000])
    (out / ".tmp-abc123model_final.pth").write_bytes(b"left by a killed write")
    run = leap_train(root, "--config-file", first_run, "--resume", "OUTPUT_DIR", str(out), "SOLVER.MAX_EPOCH", "3")
    assert run.returncode == 0, run.stdout[-3000:]
    # epoch 0's checkpoint: the final one (epoch 1) is damaged
    assert "resumed from the newest intact checkpoint" in run.stdout and "model_0000.pth instead" in run.stdout
    assert "Starting training from epoch 1" in run.stdout
    assert not (out / ".tmp-abc123model_final.pth").exists() and "removed 1 temporary file" in run.stdout


def test_eval_only_and_export_refuse_weights_of_another_model(root, first_run, tmp_path):
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"backbone.other.weight": torch.zeros(3)}}, foreign)
    run = leap_train(root, "--config-file", first_run, "--eval-only", "OUTPUT_DIR", str(tmp_path / "e"),
                     "MODEL.WEIGHTS", str(foreign))
    assert run.returncode == 2 and "does not fit the model of this config" in last_line(run), run.stdout[-3000:]
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    export = subprocess.run([sys.executable, "-m", "leap_plugin.cli.export", "reid", "--config-file", first_run,
                             "--weights", str(foreign), "-o", str(tmp_path / "x.onnx")], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT)
    assert export.returncode == 2 and "does not fit the model of this config" in export.stdout
    assert not (tmp_path / "x.onnx").exists()


# ------------------------------------------------------------------------- output folders
def test_a_second_run_into_a_busy_output_folder_fails_at_once(root, first_run, tmp_path):
    busy = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from leap_plugin.io import lock_folder; "
                               f"lock_folder({str(busy)!r}); print('locked', flush=True); time.sleep(120)"],
                              env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        run = leap_train(root, "--config-file", first_run, "OUTPUT_DIR", str(busy))
        assert run.returncode == 2, run.stdout[-3000:]
        assert "is in use by another run" in last_line(run) and str(holder.pid) in last_line(run)
        assert not (busy / "model_final.pth").exists()
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------- numbers and small things
def test_integers_are_accepted_for_float_keys():
    cfg = load_config("", ["MODEL.HEADS.LEAP.CENTER_LR", "1", "DATALOADER.LONG_TAIL_Q", "1",
                           "MODEL.HEADS.LEAP.CLOUD_SCALE", "2"])
    assert (cfg.MODEL.HEADS.LEAP.CENTER_LR, cfg.DATALOADER.LONG_TAIL_Q, cfg.MODEL.HEADS.LEAP.CLOUD_SCALE) == (1.0, 1.0, 2.0)
    assert isinstance(cfg.MODEL.HEADS.LEAP.CENTER_LR, float)


def test_no_head_class_is_said_once(root):
    cfg = market_data.tiny_config(str(root / "nohead.yml"), str(root / "out_nohead"), epochs=2)
    run = leap_train(root, "--config-file", cfg, "MODEL.HEADS.LEAP.TAIL_THRESHOLD", "100")
    assert run.returncode == 0, run.stdout[-3000:]
    assert run.stdout.count("no class has more than TAIL_THRESHOLD = 100") == 1


def test_precise_bn_passes_do_not_update_the_leap_memory(root, monkeypatch):
    trainer = tiny_trainer(root, "precise")
    trainer.cfg.defrost()
    memory = trainer.model.heads.memory
    calls = []
    original = memory.update
    monkeypatch.setattr(memory, "update", lambda f, y: (calls.append(len(y)), original(f, y))[1])
    from fastreid.engine import hooks

    precise = hooks.PreciseBN(trainer.model, trainer.build_train_loader(trainer.cfg), 3)
    trainer.register_hooks([precise])  # after LeapHook, as fastreid places it
    trainer.train()
    assert len(calls) == trainer.max_iter  # one update per training step, none from the 3 PreciseBN passes


def test_test_loader_honours_num_workers(root):
    from leap_plugin import LeapTrainer

    cfg = load_config(market_data.tiny_config(str(root / "w.yml"), str(root / "w")), ["DATALOADER.NUM_WORKERS", "0"])
    import fastreid.data.build as data_build

    data_build._root = str(root / "datasets")
    loader, num_query = LeapTrainer.build_test_loader(cfg, "Market1501")
    assert loader.num_workers == 0 and num_query == 4  # fastreid hard-codes 4 workers


def test_pretrain_without_internet_names_the_key(monkeypatch, tmp_path):
    import fastreid.modeling.backbones.resnet as resnet
    from fastreid.modeling import build_model

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    import gdown  # fastreid's ResNet imports it unconditionally: a declared dependency

    monkeypatch.setattr(gdown, "download", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = load_config("", ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
                           "MODEL.BACKBONE.PRETRAIN", "True", "MODEL.HEADS.NUM_CLASSES", "4"])
    with pytest.raises(RuntimeError, match="MODEL.BACKBONE.PRETRAIN_PATH"):
        build_model(cfg)
    assert resnet.init_pretrained_weights.__wrapped__
