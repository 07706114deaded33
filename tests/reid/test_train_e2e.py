"""End to end on CPU through fastreid's own trainer, data loading and evaluator:
a tiny data set in Market-1501's real layout, trained by ``leap-train`` with the cloud on."""
import json
import os
import subprocess
import sys

import pytest
import torch

import leap_plugin  # noqa: F401
from tests.helpers import market_data
from leap_plugin.reid.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_NET = os.path.join(ROOT, "projects", "LEAP", "train_net.py")


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = tmp_path_factory.mktemp("market")
    market_data.write_market1501(str(root / "datasets"))
    return root


def leap_train(market, *args, env_extra=None, script=None):
    """``leap-train`` (or ``script``, e.g. a train_net.py) in a subprocess; a hang fails the test."""
    env = dict(os.environ, FASTREID_DATASETS=str(market / "datasets"), CUDA_VISIBLE_DEVICES="",
               OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    env.update(env_extra or {})
    cmd = [sys.executable, script] if script else [sys.executable, "-m", "leap_plugin.cli.train"]
    return subprocess.run([*cmd, *args], cwd=market, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)


@pytest.fixture(scope="module")
def trained(market):
    """2 epochs with the cloud on from epoch 0, evaluated at the end."""
    cfg = market_data.tiny_config(str(market / "leap.yml"), str(market / "out"), epochs=2, eval_period=2)
    run = leap_train(market, "--config-file", cfg)
    assert run.returncode == 0, run.stdout[-4000:]
    return cfg, run.stdout


def in_process_trainer(market, cfg_path, *opts):
    import fastreid.data.build as data_build
    from fastreid.utils.env import seed_all_rng

    from leap_plugin import LeapTrainer

    data_build._root = str(market / "datasets")
    cfg = load_config(cfg_path, list(opts))
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    # Seeded as leap-train seeds a run, so the sampler, the initial weights and the cloud draws
    # do not depend on what earlier tests left in the global random streams.
    seed_all_rng(0)
    return LeapTrainer(cfg)


def test_leap_train_trains_evaluates_and_logs_the_cloud(market, trained):
    cfg, out = trained
    assert "Evaluation results" in out and "mAP" in out and "Rank-1" in out
    metrics = [json.loads(line) for line in open(market / "out" / "metrics.json")]
    clouded = [m["leap/clouded_classes"] for m in metrics if "leap/clouded_classes" in m]
    training = [m for m in metrics if "leap/cloud_active" in m]
    assert clouded and max(clouded) > 0 and training[-1]["leap/cloud_active"] == 1.0
    assert "mAP" in metrics[-1]  # the final evaluation reached metrics.json
    state = torch.load(market / "out" / "model_final.pth", weights_only=False)["model"]
    assert state["heads.memory.mem_fill"].sum() > 0 and state["heads.memory.center_seen"].any()


def test_resume_restores_leap_buffers_bit_exactly_and_continues(market, trained):
    cfg, _ = trained
    saved = torch.load(market / "out" / "model_final.pth", weights_only=False)["model"]
    trainer = in_process_trainer(market, cfg, "OUTPUT_DIR", str(market / "out"))
    trainer.resume_or_load(resume=True)
    assert trainer.start_epoch == 2
    buffers = dict(trainer.model.heads.memory.named_buffers())
    assert set(buffers) - {"mem_offset"} == {k.split(".")[-1] for k in saved if k.startswith("heads.memory.")}
    for name in buffers.keys() - {"mem_offset"}:
        assert torch.equal(buffers[name], saved[f"heads.memory.{name}"]), name
    run = leap_train(market, "--config-file", cfg, "--resume", "SOLVER.MAX_EPOCH", "4", "TEST.EVAL_PERIOD", "4")
    assert run.returncode == 0, run.stdout[-4000:]
    assert "Starting training from epoch 2" in run.stdout and "mAP" in run.stdout


def test_eval_only(market, trained):
    cfg, _ = trained
    run = leap_train(market, "--config-file", cfg, "--eval-only",
                     "MODEL.WEIGHTS", str(market / "out" / "model_final.pth"))
    assert run.returncode == 0, run.stdout[-4000:]
    assert "Evaluation results" in run.stdout and "mAP" in run.stdout


def test_two_gloo_processes(market):
    cfg = market_data.tiny_config(str(market / "ddp.yml"), str(market / "out_ddp"), epochs=2, eval_period=2)
    run = leap_train(market, "--config-file", cfg, "--num-gpus", "2", "--dist-url", "auto")
    assert run.returncode == 0, run.stdout[-4000:]
    assert "World size: 2" in run.stdout and "mAP" in run.stdout
    state = torch.load(market / "out_ddp" / "model_final.pth", weights_only=False)["model"]
    assert state["heads.memory.mem_fill"].sum() > 0


def test_one_step_changes_backbone_and_head_and_loss_falls(market):
    from fastreid.utils.events import EventStorage

    cfg = market_data.tiny_config(str(market / "steps.yml"), str(market / "out_steps"), epochs=1)
    trainer = in_process_trainer(market, cfg)
    trainer.before_train()  # what trainer.train() does first: LeapHook attaches to the head
    model = trainer.model
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    with EventStorage(0) as storage:
        for it in range(30):
            trainer.iter = it
            trainer.run_step()
            if it == 0:
                assert not torch.equal(before["heads.weight"], model.heads.weight)
                assert not torch.equal(before["backbone.conv1.weight"], model.backbone.conv1.weight)
        losses = [v for v, _ in storage.history("total_loss").values()]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_bad_config_value_fails_at_start_with_one_message(market, trained):
    cfg, _ = trained
    run = leap_train(market, "--config-file", cfg, "MODEL.HEADS.LEAP.VERSION", "half")
    assert run.returncode == 2
    assert run.stdout.strip().splitlines() == [
        "leap-train: error: MODEL.HEADS.LEAP.VERSION = 'half' is not allowed: use one of 'full', 'vanilla'"]


def test_missing_data_folder_fails_at_start_with_one_message(market, trained):
    cfg, _ = trained
    env = {"FASTREID_DATASETS": str(market / "nowhere")}
    run = leap_train(market, "--config-file", cfg, env_extra=env)
    assert run.returncode == 2
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1 and "nowhere" in lines[0] and "not found" in lines[0], run.stdout[-2000:]
