"""``leap-train``: fastreid's ``tools/train_net.py`` with LEAP registered.

Same arguments as fastreid's: ``--config-file``, ``--resume``, ``--eval-only``,
``--num-gpus`` (on a CPU-only machine: that many gloo processes), ``--num-machines``,
``--machine-rank``, ``--dist-url`` and trailing ``KEY VALUE`` overrides.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from typing import Optional, Sequence

import leap_plugin  # noqa: F401  (patches fastreid, registers LEAP)
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.engine import default_argument_parser, default_setup, launch
from fastreid.utils import comm
from fastreid.utils.checkpoint import Checkpointer
from fastreid.utils.env import seed_all_rng

from ..io import atomic_write
from ..reid.config import ConfigError, load_config
from ..reid.datasets import dataset_kwargs
from ..reid.trainer import LeapTrainer, _datasets_root

__all__ = ["setup", "main", "cli"]

logger = logging.getLogger("leap_plugin")


def check_data(cfg) -> None:
    """Open every training and test data set once, so that a missing folder fails now
    with its path, not minutes later in a worker process."""
    for name in dict.fromkeys(list(cfg.DATASETS.NAMES) + list(cfg.DATASETS.TESTS)):
        try:
            cls = DATASET_REGISTRY.get(name)
        except KeyError as e:
            raise ConfigError(f"DATASETS: unknown data set {name!r}; registered: "
                              f"{', '.join(sorted(k for k, _ in DATASET_REGISTRY))}") from e
        with warnings.catch_warnings():  # the run itself shows them; here only the error counts
            warnings.simplefilter("ignore")
            cls(root=_datasets_root(), **dataset_kwargs(cfg, name))


def setup(args):
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    if cfg.SEED >= 0:
        # Each rank gets its own stream; the identity samplers share one seed through fastreid.
        seed_all_rng(cfg.SEED + comm.get_rank())
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        cfg.defrost()
        cfg.MODEL.BACKBONE.PRETRAIN = False
        weights = cfg.MODEL.WEIGHTS or Checkpointer(None, cfg.OUTPUT_DIR).get_checkpoint_file()
        if not weights:
            raise ConfigError("--eval-only needs MODEL.WEIGHTS or a checkpoint in OUTPUT_DIR "
                              f"({cfg.OUTPUT_DIR!r} has none)")
        model = LeapTrainer.build_model(cfg)
        Checkpointer(model).load(weights)
        return save_results(cfg, LeapTrainer.test(cfg, model))
    trainer = LeapTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return save_results(cfg, trainer.train())


def save_results(cfg, results):
    """Also write the final evaluation to ``OUTPUT_DIR/eval_results.json`` (fastreid only
    logs it), for scripts that compare runs."""
    if comm.is_main_process() and results:
        path = os.path.join(cfg.OUTPUT_DIR, "eval_results.json")
        atomic_write(path, lambda f: f.write(json.dumps(results, indent=1, default=float).encode()))
    return results


def cli(argv: Optional[Sequence[str]] = None) -> int:
    args = default_argument_parser().parse_args(argv)
    try:
        check_data(load_config(args.config_file, args.opts))
    except (ConfigError, FileNotFoundError) as e:
        print(f"leap-train: error: {e}", file=sys.stderr)
        return 2
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
