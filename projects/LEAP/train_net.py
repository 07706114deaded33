#!/usr/bin/env python
"""fastreid's ``tools/train_net.py`` for LEAP, in fastreid's ``projects/`` convention:

    python projects/LEAP/train_net.py --config-file configs/Wesnoth/leap_cf_mnv2.yml

Setup, main and launch, as upstream's script: the whole integration is its first import.
``leap-train`` is the same with one-line errors for bad input (:mod:`leap_plugin.cli.train`).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

import leap_plugin  # noqa: E402,F401  (first: patches fastreid, registers LEAP, extends its trainer)
from fastreid.config import get_cfg  # noqa: E402
from fastreid.engine import DefaultTrainer, default_argument_parser, default_setup, launch  # noqa: E402
from fastreid.utils.checkpoint import Checkpointer  # noqa: E402


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
        Checkpointer(model).load(cfg.MODEL.WEIGHTS)
        return DefaultTrainer.test(cfg, model)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
