"""The promise: upstream fastreid's own ``tools/train_net.py`` (its
default_argument_parser, default_setup, DefaultTrainer and launch) with ``import
leap_plugin`` as its first line trains LEAP: K_i reach the head, the hook runs, the cloud
switches on, and a LEAP-off run of the same seed differs only after START_EPOCH."""
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

#: fastreid's tools/train_net.py as upstream writes it, plus its first line.
UPSTREAM_TRAIN_NET = '''import leap_plugin  # must come before any fastreid.engine / .data / .evaluation import
from fastreid.config import get_cfg
from fastreid.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from fastreid.utils.checkpoint import Checkpointer


def setup(args):
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        cfg.defrost()
        cfg.MODEL.BACKBONE.PRETRAIN = False
        model = DefaultTrainer.build_model(cfg)
        Checkpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return DefaultTrainer.test(cfg, model)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
'''


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = tmp_path_factory.mktemp("upstream")
    market_data.write_market1501(str(root / "datasets"))
    (root / "train_net.py").write_text(UPSTREAM_TRAIN_NET)
    return root


def run_upstream(market, *args, script=None):
    env = dict(os.environ, FASTREID_DATASETS=str(market / "datasets"), CUDA_VISIBLE_DEVICES="",
               OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, script or str(market / "train_net.py"), *args], cwd=market, env=env,
                          text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)


@pytest.fixture(scope="module")
def upstream_run(market):
    # MODEL.DEVICE cuda as in fastreid's own configs: the CPU fallback holds in this flow too
    cfg = market_data.tiny_config(str(market / "leap.yml"), str(market / "out"), epochs=2, eval_period=2)
    run = run_upstream(market, "--config-file", cfg, "MODEL.DEVICE", "cuda", "LOG_PERIOD", "1")
    assert run.returncode == 0, run.stdout[-4000:]
    return run.stdout


def test_upstream_train_net_trains_leap_after_the_import(market, upstream_run):
    assert "CUDA is not available: using the CPU" in upstream_run
    metrics = [json.loads(line) for line in open(market / "out" / "metrics.json")]
    # the hook ran every iteration (LOG_PERIOD reached it: a console line per iteration too)
    assert sum("leap/clouded_classes" in m for m in metrics) >= 4
    assert upstream_run.count(" LEAP leap/") >= 4
    assert any(m.get("leap/cloud_active") == 1.0 and m["leap/clouded_classes"] > 0 for m in metrics)
    # the final evaluation reached metrics.json (fastreid's writers skip it)
    assert any("mAP" in m and "Rank-1" in m for m in metrics)
    assert any(p.name.startswith("events.out.tfevents") for p in (market / "out").iterdir())
    state = torch.load(market / "out" / "model_final.pth", weights_only=False)["model"]
    # K_i of the training set reached the head, and the final checkpoint holds clouded classes
    assert sorted(state["heads.memory.class_counts"].tolist(), reverse=True) == [12, 10, 8, 4, 4, 3, 3, 2]
    assert (state["heads.memory.cloud_var"] > 0).any()


@pytest.mark.parametrize("script", [None, os.path.join(ROOT, "projects", "LEAP", "train_net.py")])
def test_the_same_error_messages_hold_in_the_upstream_flow(market, upstream_run, script):
    """Upstream's script as a user writes it, and this project's projects/LEAP/train_net.py."""
    cfg = str(market / "leap.yml")
    run = run_upstream(market, "--config-file", cfg, "MODEL.HEADS.LEAP.VERSION", "half", "OUTPUT_DIR",
                       str(market / "bad"), script=script)
    assert run.returncode != 0
    assert "MODEL.HEADS.LEAP.VERSION = 'half' is not allowed: use one of 'full', 'vanilla'" in run.stdout


def trained_losses(market, name, leap, start_epoch):
    import fastreid.data.build as data_build
    from fastreid.utils.env import seed_all_rng

    from leap_plugin import LeapTrainer

    data_build._root = str(market / "datasets")
    path = market_data.tiny_config(str(market / f"{name}.yml"), str(market / name), leap=leap, epochs=3,
                                   start_epoch=start_epoch)
    cfg = load_config(path, ["SOLVER.CHECKPOINT_PERIOD", "100", "TEST.EVAL_PERIOD", "100"])
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    seed_all_rng(0)
    trainer = LeapTrainer(cfg)
    trainer.train()
    return [v for v, _ in trainer.storage.history("total_loss").values()], trainer.iters_per_epoch


def test_leap_on_and_off_of_one_seed_differ_only_after_start_epoch(market):
    off, per_epoch = trained_losses(market, "off", leap=False, start_epoch=1)
    on, _ = trained_losses(market, "on", leap=True, start_epoch=1)
    assert len(on) == len(off) == 3 * per_epoch
    assert on[:per_epoch] == off[:per_epoch]  # bit for bit: the memory fills but draws nothing
    assert on[per_epoch:] != off[per_epoch:]


def test_two_gloo_ranks_hold_the_same_leap_state(market):
    """Under torch.distributed every rank updates its LEAP state from the gathered global
    batch: after training, the two ranks' centers, memory and statistics are identical."""
    script = market / "train_net_ranks.py"
    script.write_text(UPSTREAM_TRAIN_NET.replace(
        "    return trainer.train()",
        "    results = trainer.train()\n"
        "    import os, torch\n"
        "    from fastreid.utils import comm\n"
        "    head = trainer.model.module.heads if hasattr(trainer.model, 'module') else trainer.model.heads\n"
        "    torch.save(head.memory.state_dict(), os.path.join(cfg.OUTPUT_DIR, f'leap_rank{comm.get_rank()}.pt'))\n"
        "    return results"))
    cfg = market_data.tiny_config(str(market / "ddp.yml"), str(market / "ddp"), epochs=2, eval_period=2)
    env = dict(os.environ, FASTREID_DATASETS=str(market / "datasets"), CUDA_VISIBLE_DEVICES="",
               OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, str(script), "--config-file", cfg, "--num-gpus", "2", "--dist-url", "auto"],
                         cwd=market, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:]
    r0, r1 = (torch.load(market / "ddp" / f"leap_rank{r}.pt") for r in (0, 1))
    assert r0["mem_fill"].sum() > 0 and r0["stats_valid"].any()
    for key, value in r0.items():
        assert torch.equal(value, r1[key]), key
