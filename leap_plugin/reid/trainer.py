"""``LeapTrainer``: fastreid's ``DefaultTrainer`` with the three things LEAP needs.

fastreid fixes its hooks in ``build_hooks()`` and its samplers in an if/elif, and never
tells a head the per-class sample counts K_i. This subclass (the rest is fastreid's own
flow: checkpointing, evaluation, writers, DDP):

- builds the training set with ``DATASETS.LONG_TAIL`` applied and the sampler from
  ``DATALOADER.SAMPLER_TRAIN`` including ``LongTailIdentitySampler``;
- gives K_i to every module of the model that has ``set_class_counts`` (LEAP's memory,
  count-aware classification layers);
- appends :class:`LeapHook` when the model has a LEAP head, and
  :class:`~leap_plugin.reid.peers.EpochHook` when a module of it has ``set_epoch``.
"""
from __future__ import annotations

import logging

import torch
from fastreid.data import build_reid_test_loader, build_reid_train_loader
from fastreid.data.common import CommDataset
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.transforms import build_transforms
from fastreid.engine import DefaultTrainer
from fastreid.engine.hooks import PeriodicWriter
from fastreid.utils import comm

from ..data.longtail import long_tail_split
from .datasets import dataset_kwargs
from .head import leap_heads
from .hooks import LeapHook
from .peers import EpochHook, epoch_aware_modules
from .sampler import LongTailIdentitySampler

__all__ = ["LeapTrainer", "build_train_set", "class_counts"]

logger = logging.getLogger("fastreid." + __name__)  # fastreid's setup_logger handles "fastreid.*"


def build_train_set(cfg) -> CommDataset:
    """The relabelled training set of ``DATASETS.NAMES``, long-tailed by ``DATASETS.LONG_TAIL``."""
    items = []
    for name in cfg.DATASETS.NAMES:
        data = DATASET_REGISTRY.get(name)(root=_datasets_root(), **dataset_kwargs(cfg, name))
        if comm.is_main_process():
            data.show_train()
        items.extend(data.train)
    lt = cfg.DATASETS.LONG_TAIL
    if lt.ENABLED:
        before = len(items)
        items = long_tail_split(items, lt.HEAD, lt.TAIL_SAMPLES, seed=lt.SEED, tail_classes=lt.TAIL_CLASSES)
        logger.info("DATASETS.LONG_TAIL <H%d, S%d>: %d of %d training images, %d identities",
                    lt.HEAD, lt.TAIL_SAMPLES, len(items), before, len({i[1] for i in items}))
    return CommDataset(items, build_transforms(cfg, is_train=True), relabel=True)


def _datasets_root() -> str:
    import fastreid.data.build as data_build

    return data_build._root


def class_counts(train_set: CommDataset) -> torch.Tensor:
    """K_i of each relabelled class id."""
    labels = torch.tensor([train_set.pid_dict[item[1]] for item in train_set.img_items])
    return torch.bincount(labels, minlength=train_set.num_classes)


class LeapTrainer(DefaultTrainer):
    """``DefaultTrainer`` + long-tail data set / sampler, class counts and :class:`LeapHook`."""

    def __init__(self, cfg):
        super().__init__(cfg)
        counts = class_counts(self.data_loader.dataset)
        model = self.model.module if hasattr(self.model, "module") else self.model
        for module in model.modules():
            if hasattr(module, "set_class_counts"):
                module.set_class_counts(counts)

    @classmethod
    def build_train_loader(cls, cfg):
        train_set = build_train_set(cfg)
        sampler = None
        if cfg.DATALOADER.SAMPLER_TRAIN == "LongTailIdentitySampler":
            sampler = LongTailIdentitySampler(
                train_set.img_items, cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size(),
                cfg.DATALOADER.NUM_INSTANCE, q=cfg.DATALOADER.LONG_TAIL_Q)
        return build_reid_train_loader(cfg, train_set=train_set, sampler=sampler)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_reid_test_loader(cfg, dataset_name=dataset_name, **dataset_kwargs(cfg, dataset_name))

    def build_hooks(self):
        hooks = super().build_hooks()
        for hook in hooks:
            if isinstance(hook, PeriodicWriter):  # fastreid hard-codes 200 iterations
                hook._period = self.cfg.LOG_PERIOD
        heads = leap_heads(self.model)
        if heads:
            leap = self.cfg.MODEL.HEADS.LEAP
            # After the LR scheduler, before evaluation, checkpointing and the writers.
            hooks.insert(2, LeapHook(heads, leap.START_EPOCH, leap.CENTER_UPDATE_PERIOD, leap.STATS_PERIOD))
        epoch_aware = epoch_aware_modules(self.model)
        if epoch_aware:  # e.g. LongTailBaseline's deferred re-weighting
            hooks.append(EpochHook(epoch_aware))
        return hooks
