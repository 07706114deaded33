"""``leap-train``: fastreid's ``tools/train_net.py`` with LEAP registered.

Same arguments as fastreid's: ``--config-file``, ``--resume``, ``--eval-only``,
``--num-gpus`` (on a CPU-only machine: that many gloo processes), ``--num-machines``,
``--machine-rank``, ``--dist-url`` and trailing ``KEY VALUE`` overrides, plus
``--overwrite`` (start a new run in an OUTPUT_DIR that holds one). Beyond upstream's
script: every data set is opened and its image files checked before training (a missing
folder or image fails now, naming it), a bad config value, a damaged checkpoint, a busy,
unwritable or full output folder ends the run with one line and exit status 2,
``--eval-only`` refuses weights that do not fit the config, and the final evaluation is
also written to ``OUTPUT_DIR/eval_results.json``.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import sys
import warnings
from typing import Optional, Sequence

import leap_plugin  # noqa: F401  (patches fastreid, registers LEAP)
from fastreid.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from fastreid.utils import comm
from fastreid.utils.checkpoint import Checkpointer

from ..core.memory import LeapStateMismatch
from ..io import FolderInUse, atomic_write
from ..reid.checkpoint import load_weights
from ..reid.compat.hardening import CheckpointReadError, ImageReadError
from ..reid.config import ConfigError, load_config
from ..reid.datasets import build_dataset
from ..reid.engine import check_image_files

__all__ = ["setup", "run", "main", "USER_ERRORS"]

logger = logging.getLogger("leap_plugin")

#: Errors that mean a bad input, not a bug: reported in one line, exit status 2.
USER_ERRORS = (ConfigError, FileNotFoundError, FolderInUse, CheckpointReadError, ImageReadError, LeapStateMismatch)
#: Operating-system errors that are the machine's state, not a bug: a full disk, no permission.
_MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}


def check_data(cfg) -> None:
    """Open every training and test data set once, so that a missing folder fails now
    with its path, not minutes later in a worker process."""
    for name in dict.fromkeys(list(cfg.DATASETS.NAMES) + list(cfg.DATASETS.TESTS)):
        with warnings.catch_warnings():  # the run itself shows them; here only the error counts
            warnings.simplefilter("ignore")
            data = build_dataset(cfg, name)
        check_image_files(data.train if name in cfg.DATASETS.NAMES else [])
        check_image_files(data.query + data.gallery if name in cfg.DATASETS.TESTS else [])


def setup(args):
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)  # validates, locks OUTPUT_DIR, seeds from SEED (leap_plugin.reid.engine)
    return cfg


def run(args) -> dict:
    """Train (or evaluate, with ``--eval-only``) as fastreid's ``train_net.main`` does."""
    cfg = setup(args)
    if args.eval_only:
        cfg.defrost()
        cfg.MODEL.BACKBONE.PRETRAIN = False
        weights = cfg.MODEL.WEIGHTS or Checkpointer(None, cfg.OUTPUT_DIR).get_checkpoint_file()
        if not weights:
            raise ConfigError("--eval-only needs MODEL.WEIGHTS or a checkpoint in OUTPUT_DIR "
                              f"({cfg.OUTPUT_DIR!r} has none)")
        model = DefaultTrainer.build_model(cfg)
        load_weights(model, weights, "MODEL.WEIGHTS")
        return save_results(cfg, DefaultTrainer.test(cfg, model))
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return save_results(cfg, trainer.train())


def save_results(cfg, results):
    """Also write the final evaluation to ``OUTPUT_DIR/eval_results.json`` (fastreid only
    logs it), for scripts that compare runs."""
    if comm.is_main_process() and results:
        path = os.path.join(cfg.OUTPUT_DIR, "eval_results.json")
        atomic_write(path, lambda f: f.write(json.dumps(results, indent=1, default=float).encode()))
    return results


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, FileNotFoundError):
        where = f": {e.filename}" if e.filename else ""
        hint = "; the checkpoints written before are intact" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        return f"{e.strerror or e}{where}{hint}"
    # A loader worker's error arrives with its traceback: its last line is the message.
    return str(e).strip().splitlines()[-1]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = default_argument_parser()
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run in an OUTPUT_DIR that holds an earlier one (its files are removed)")
    args = parser.parse_args(argv)
    try:
        check_data(load_config(args.config_file, args.opts))
        launch(run, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except (*USER_ERRORS, OSError) as e:
        if isinstance(e, OSError) and not isinstance(e, USER_ERRORS) and e.errno not in _MACHINE_ERRNOS:
            raise
        print(f"leap-train: error: {_message(e)}", file=sys.stderr)
        if argv is None:
            # fastreid's prefetch thread may be inside torch's C++ code by now; a normal
            # interpreter shutdown then aborts (SIGABRT) instead of exiting with status 2.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(2)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
