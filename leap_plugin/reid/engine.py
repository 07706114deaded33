"""fastreid's own ``DefaultTrainer`` and ``default_setup``, extended on ``import leap_plugin``.

fastreid fixes its hooks in ``build_hooks()`` and its samplers in an if/elif, never tells a
model the per-class sample counts K_i, and its ``default_setup`` neither validates a config
nor guards an output folder. :func:`extend_fastreid` (applied when :mod:`leap_plugin` is
imported) adds to ``DefaultTrainer`` itself, so that upstream's ``tools/train_net.py`` with
``import leap_plugin`` as its first line, and any subclass a user writes, train LEAP:

- the training set with ``DATASETS.LONG_TAIL`` applied, and the sampler of
  ``DATALOADER.SAMPLER_TRAIN`` from :data:`~leap_plugin.reid.sampler.TRAIN_SAMPLERS`
  (``LongTailIdentitySampler`` included); an empty training set is an error;
- K_i handed to every module of the model with ``set_class_counts`` (LEAP's memory, the
  count-aware layers and ``LongTailBaseline``);
- :class:`~leap_plugin.reid.hooks.LeapHook` for a LEAP head and
  :class:`~leap_plugin.reid.hooks.EpochHook` for epoch-aware modules; fastreid's writers
  every ``LOG_PERIOD`` iterations (it hard-codes 200), and every evaluation written to
  metrics.json and TensorBoard (:class:`~leap_plugin.reid.hooks.EvalResultsWriter`);
- the test loader with the data sets' config keys and ``DATALOADER.NUM_WORKERS`` (fastreid
  hard-codes 4 workers);
- ``resume_or_load``: a fine-tune from ``MODEL.WEIGHTS`` rebuilds a LEAP state built for
  other K_i, a resume requires the same (:mod:`leap_plugin.reid.checkpoint`).

``default_setup`` additionally falls back to the CPU when ``MODEL.DEVICE`` is cuda on a
machine without CUDA, validates the config (errors name the key), locks ``OUTPUT_DIR``
against a second run, removes temporary files an interrupted write left there, and seeds
every RNG from ``SEED`` when it is >= 0. :class:`LeapTrainer` is ``DefaultTrainer`` by another name.
"""
from __future__ import annotations

import functools
import glob
import logging
import os

import torch
from fastreid.data import build_reid_test_loader, build_reid_train_loader
from fastreid.data.common import CommDataset
from fastreid.data.transforms import build_transforms
from fastreid.engine import defaults as engine_defaults
from fastreid.engine.defaults import DefaultTrainer
from fastreid.engine.hooks import EvalHook, LRScheduler, PeriodicWriter
from fastreid.utils import comm
from fastreid.utils.env import seed_all_rng

from ..data.longtail import long_tail_split
from ..io import lock_folder
from ..resources import find_config
from ..validation import ConfigError
from .checkpoint import set_mismatch_policy
from .compat._registry import patch
from .compat.hardening import ImageReadError, remove_stale_temporaries
from .config import prepare_config
from .contracts import CountsReceiver
from .datasets import build_dataset
from .head import leap_heads
from .hooks import EpochHook, EvalResultsWriter, LeapHook, epoch_aware_modules
from .sampler import build_train_sampler

__all__ = ["LeapTrainer", "build_train_set", "class_counts", "hand_class_counts", "extend_fastreid"]

logger = logging.getLogger("fastreid." + __name__)  # fastreid's setup_logger handles "fastreid.*"


def build_train_set(cfg) -> CommDataset:
    """The relabelled training set of ``DATASETS.NAMES``, long-tailed by ``DATASETS.LONG_TAIL``.

    Raises:
        ConfigError: when no training image is left (an empty data set, or a long-tail
            split that keeps none).
    """
    items = []
    for name in cfg.DATASETS.NAMES:
        data = build_dataset(cfg, name)
        if comm.is_main_process():
            data.show_train()
        items.extend(data.train)
    if not items:
        raise ConfigError(f"DATASETS.NAMES {tuple(cfg.DATASETS.NAMES)}: the training set has no images")
    check_image_files(items)
    lt = cfg.DATASETS.LONG_TAIL
    identities = len({item[1] for item in items})
    if lt.ENABLED and lt.HEAD >= identities:
        raise ConfigError(f"DATASETS.LONG_TAIL.HEAD = {lt.HEAD} is not allowed: the training set has {identities} "
                          f"identities, so <H{lt.HEAD}, S{lt.TAIL_SAMPLES}> would keep every one whole (no tail): "
                          f"use a number below {identities}")
    if lt.ENABLED:
        before = len(items)
        items = long_tail_split(items, lt.HEAD, lt.TAIL_SAMPLES, seed=lt.SEED, tail_classes=lt.TAIL_CLASSES)
        if not items:
            raise ConfigError(f"DATASETS.LONG_TAIL <H{lt.HEAD}, S{lt.TAIL_SAMPLES}> keeps no image of the "
                              f"{before} training images: raise HEAD, or lower TAIL_SAMPLES below the "
                              "largest identity's image count")
        logger.info("DATASETS.LONG_TAIL <H%d, S%d>: %d of %d training images, %d identities",
                    lt.HEAD, lt.TAIL_SAMPLES, len(items), before, len({i[1] for i in items}))
    return CommDataset(items, build_transforms(cfg, is_train=True), relabel=True)


def check_image_files(items) -> None:
    """Every ``(path, pid, camid)`` item names a file (not a folder, not a dangling link), so
    that a bad path fails now, naming it, and not at the first batch or the evaluation
    after training.

    Raises:
        ImageReadError: naming the first path that is not a file.
    """
    for path, *_ in items:
        if not os.path.isfile(path):
            what = "a folder" if os.path.isdir(path) else "missing (or a link to nothing)"
            raise ImageReadError(f"image {path!r} is {what}, not an image file")


def check_test_sets(cfg) -> None:
    """Build every test set of ``DATASETS.TESTS`` and check its image files, before training."""
    for name in cfg.DATASETS.TESTS:
        data = build_dataset(cfg, name)
        check_image_files(data.query + data.gallery)


def class_counts(train_set: CommDataset) -> torch.Tensor:
    """K_i of each relabelled class id."""
    labels = torch.tensor([train_set.pid_dict[item[1]] for item in train_set.img_items])
    return torch.bincount(labels, minlength=train_set.num_classes)


def hand_class_counts(model: torch.nn.Module, counts: torch.Tensor) -> int:
    """Give K_i to every module of ``model`` with ``set_class_counts``; returns how many."""
    receivers = [m for m in model.modules() if isinstance(m, CountsReceiver)]
    for module in receivers:
        module.set_class_counts(counts)
    return len(receivers)


# --------------------------------------------------------------------------- DefaultTrainer
def _build_train_loader(cls, cfg):
    train_set = build_train_set(cfg)
    return build_reid_train_loader(cfg, train_set=train_set, sampler=build_train_sampler(cfg, train_set))


def _build_test_loader(cls, cfg, dataset_name):
    data = build_dataset(cfg, dataset_name)
    if comm.is_main_process():
        data.show_test()
    test_set = CommDataset(data.query + data.gallery, build_transforms(cfg, is_train=False), relabel=False)
    return build_reid_test_loader(test_set=test_set, test_batch_size=cfg.TEST.IMS_PER_BATCH,
                                  num_query=len(data.query), num_workers=cfg.DATALOADER.NUM_WORKERS)


def _extend_init(original):
    @functools.wraps(original)
    def __init__(self, cfg):
        check_test_sets(cfg)  # fastreid builds them only to evaluate, after training
        original(self, cfg)
        dataset = self.data_loader.dataset
        if hasattr(dataset, "pid_dict") and hasattr(dataset, "img_items"):
            n = hand_class_counts(self.model, class_counts(dataset))
            if n:
                logger.info("class counts K_i of %d classes handed to %d module(s)", dataset.num_classes, n)
        # else: a custom training set without fastreid's labels; a LEAP head then fails at its
        # first step, saying so, instead of training without K_i.
    return __init__


def _extend_build_hooks(original):
    @functools.wraps(original)
    def build_hooks(self):
        hooks = original(self)
        writers = [hook for hook in hooks if isinstance(hook, PeriodicWriter)]
        for hook in writers:  # fastreid hard-codes 200 iterations
            hook._period = self.cfg.LOG_PERIOD
        evals = [i for i, hook in enumerate(hooks) if isinstance(hook, EvalHook)]
        for i in evals:
            hooks[i]._do_eval = _saving_on_failure(hooks[i]._do_eval, self)
        if writers and evals:  # only the main process writes
            hooks.insert(evals[0] + 1, EvalResultsWriter(writers[0]))
        heads = leap_heads(self.model)
        if heads:
            leap = self.cfg.MODEL.HEADS.LEAP
            # Right after the LR scheduler, before evaluation, checkpointing and the writers.
            after = next(i for i, hook in enumerate(hooks) if isinstance(hook, LRScheduler))
            hooks.insert(after + 1, LeapHook(heads, leap.START_EPOCH, leap.CENTER_UPDATE_PERIOD, leap.STATS_PERIOD,
                                     self.cfg.LOG_PERIOD))
        epoch_aware = epoch_aware_modules(self.model)
        if epoch_aware:  # e.g. LongTailBaseline's deferred re-weighting
            hooks.append(EpochHook(epoch_aware))
        return hooks
    return build_hooks


def _saving_on_failure(evaluate, trainer):
    """``evaluate`` that, when it fails, first saves the model trained so far (a checkpoint
    ``--resume`` continues from), so an evaluation error never loses a training."""
    @functools.wraps(evaluate)
    def do_eval():
        try:
            return evaluate()
        except Exception:
            if comm.is_main_process() and getattr(trainer, "checkpointer", None) is not None:
                name = f"model_{trainer.epoch:04d}"
                trainer.checkpointer.save(name, epoch=trainer.epoch)
                logger.error("the evaluation after epoch %d failed; the model trained so far is saved as %s.pth "
                             "in %s", trainer.epoch, name, trainer.cfg.OUTPUT_DIR)
            raise
    return do_eval


#: Files of a training run in OUTPUT_DIR: starting a new run there without --resume mixes them.
RUN_FILES = ("last_checkpoint", "model_*.pth", "metrics.json", "eval_results.json", "events.out.tfevents.*",
             "results.json")


def _run_paths(folder: str) -> list[str]:
    """Paths of the files of a training run already in ``folder``, sorted by name."""
    return sorted((p for pattern in RUN_FILES for p in glob.glob(os.path.join(glob.escape(folder), pattern))),
                  key=os.path.basename)


def check_output_dir(cfg, args) -> None:
    """OUTPUT_DIR must be a writable folder; a new training (no ``--resume``, no
    ``--eval-only``) refuses a folder that holds another run, unless ``args.overwrite``
    (``leap-train --overwrite``), which removes that run's files first.

    Raises:
        ConfigError: naming the folder and what to do.
    """
    folder = cfg.OUTPUT_DIR
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ConfigError(f"OUTPUT_DIR {folder!r} is a file, not a folder: choose another OUTPUT_DIR")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"OUTPUT_DIR {folder!r} cannot be created: {e.strerror}") from e
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"OUTPUT_DIR {folder!r} is not writable: choose another OUTPUT_DIR or fix its permissions")
    if getattr(args, "resume", False) or getattr(args, "eval_only", False):
        return
    paths = _run_paths(folder)
    found = [os.path.basename(p) for p in paths]
    if found and getattr(args, "overwrite", False):
        for path in paths:
            os.unlink(path)
        logger.info("--overwrite: removed the earlier run's files from %s (%s)", folder, ", ".join(found[:5]))
    elif found:
        raise ConfigError(f"OUTPUT_DIR {folder!r} holds an earlier run ({', '.join(found[:4])}"
                          f"{', ...' if len(found) > 4 else ''}): add --resume to continue it, or start a new run "
                          "with leap-train --overwrite (its files are removed) or in another OUTPUT_DIR")


def _extend_resume_or_load(original):
    @functools.wraps(original)
    def resume_or_load(self, resume=True):
        resuming = resume and self.checkpointer.has_checkpoint()
        set_mismatch_policy(self.model, "require" if resuming else "rebuild")
        return original(self, resume=resume)
    return resume_or_load


def _extend_default_setup(original):
    @functools.wraps(original)
    def default_setup(cfg, args):
        prepare_config(cfg)
        if comm.is_main_process() and cfg.OUTPUT_DIR:
            check_output_dir(cfg, args)
            lock_folder(cfg.OUTPUT_DIR)
            stale = remove_stale_temporaries(cfg.OUTPUT_DIR)
        else:
            stale = []
        original(cfg, args)
        if stale:
            logger.info("removed %d temporary file(s) of an interrupted write in %s", len(stale), cfg.OUTPUT_DIR)
        if cfg.SEED >= 0:
            # Each rank gets its own stream; the identity samplers share one seed through fastreid.
            seed_all_rng(cfg.SEED + comm.get_rank())
    return default_setup


@patch("trainer_extensions")
def extend_fastreid() -> None:
    """Extend fastreid's ``DefaultTrainer`` and ``default_setup`` in place (once)."""
    import fastreid.engine as engine

    DefaultTrainer.__init__ = _extend_init(DefaultTrainer.__init__)
    DefaultTrainer.build_hooks = _extend_build_hooks(DefaultTrainer.build_hooks)
    DefaultTrainer.resume_or_load = _extend_resume_or_load(DefaultTrainer.resume_or_load)
    DefaultTrainer.build_train_loader = classmethod(_build_train_loader)
    DefaultTrainer.build_test_loader = classmethod(_build_test_loader)
    setup = _extend_default_setup(engine_defaults.default_setup)
    engine_defaults.default_setup = setup
    engine.default_setup = setup
    parser = _extend_argument_parser(engine_defaults.default_argument_parser)
    engine_defaults.default_argument_parser = parser
    engine.default_argument_parser = parser


def _extend_argument_parser(original):
    """``--config-file`` resolved once, when parsed: a shipped config named as the docs do
    (``configs/Wesnoth/leap_cf_mnv2.yml``) is found inside the installed package from any
    folder, and every later reader (fastreid's ``default_setup`` reopens it) gets the same
    path; a flag after the ``KEY VALUE`` overrides is an error saying so."""
    @functools.wraps(original)
    def default_argument_parser(*args, **kwargs):
        parser = original(*args, **kwargs)
        parse = parser.parse_args

        def parse_args(argv=None, namespace=None):
            parsed = parse(argv, namespace)
            if getattr(parsed, "config_file", ""):
                parsed.config_file = find_config(parsed.config_file)
            flags = [o for o in getattr(parsed, "opts", None) or [] if str(o).startswith("--")]
            if flags:
                parser.error(f"{flags[0]} comes after the KEY VALUE overrides: flags go before them")
            return parsed

        parser.parse_args = parse_args
        return parser
    return default_argument_parser


class LeapTrainer(DefaultTrainer):
    """fastreid's ``DefaultTrainer``, under the name earlier versions exported.

    Everything LEAP needs is added to ``DefaultTrainer`` itself on ``import leap_plugin``
    (:func:`extend_fastreid`), so upstream's ``train_net.py`` and any trainer a user derives
    from ``DefaultTrainer`` train LEAP too; this subclass adds nothing."""
