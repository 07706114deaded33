"""Peer long-tail methods beside LEAP, selected by config.

- The count-aware classification layers (LDAM, Balanced Softmax, adaptive ArcFace margins)
  are in :mod:`leap_plugin.reid.layers`, their math in :mod:`leap_plugin.core.longtail`.
- :class:`LongTailBaseline` (``MODEL.META_ARCHITECTURE``): fastreid's ``Baseline`` that, with
  ``MODEL.LOSSES.CLASS_BALANCED.ENABLED``, weights the cross-entropy of each sample by the
  class-balanced weight of its class (Cui et al., CVPR 2019), from epoch
  ``CLASS_BALANCED.START_EPOCH`` on (deferred re-weighting, DRW, when > 0). It works with
  any head, LEAP's included; :class:`~leap_plugin.reid.hooks.EpochHook` tells it the epoch.
- The overrides that turn a stock config into each peer method are in the method table,
  :data:`leap_plugin.reid.methods.METHODS`.

Every count-dependent vector is derived from the class counts K_i, a buffer: checkpoints
carry it, and since every rank counts the same training set it is identical on all ranks.
"""
from __future__ import annotations

import logging

import torch
from fastreid.config import configurable
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY, Baseline

from ..core.longtail import effective_number_weights, weighted_cross_entropy
from .counts import ClassCounts

__all__ = ["LongTailBaseline"]

logger = logging.getLogger("fastreid." + __name__)  # fastreid's setup_logger handles "fastreid.*"


@META_ARCH_REGISTRY.register()
class LongTailBaseline(ClassCounts, Baseline):
    """fastreid's ``Baseline`` + class-balanced re-weighting of the cross-entropy.

    Extra arguments: ``num_classes`` (C), ``class_balanced`` (None, or a dict with ``beta``
    and ``start_epoch``). When re-weighting is on (``epoch >= start_epoch``), ``loss_cls`` is
    ``mean_n w_{y_n} * CE_n`` with ``w_i = (1 - beta) / (1 - beta^K_i)`` normalised to
    ``sum_i w_i = C`` (Cui et al., CVPR 2019); before, it is fastreid's cross-entropy.
    ``start_epoch > 0`` is LDAM's deferred re-weighting (DRW; Cao et al. 2019, Sec. 3.3).
    """

    @configurable
    def __init__(self, *, num_classes: int, class_balanced: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self._register_class_counts(num_classes)
        self.class_balanced = class_balanced
        self.epoch = 0  # set by EpochHook before each epoch, so also right after --resume

    @classmethod
    def from_config(cls, cfg) -> dict:
        args = super().from_config(cfg)
        cb = cfg.MODEL.LOSSES.CLASS_BALANCED
        args["num_classes"] = cfg.MODEL.HEADS.NUM_CLASSES
        args["class_balanced"] = {"beta": cb.BETA, "start_epoch": cb.START_EPOCH} if cb.ENABLED else None
        return args

    @property
    def reweighting(self) -> bool:
        """Whether this epoch's cross-entropy is class-balanced."""
        return self.class_balanced is not None and self.epoch >= self.class_balanced["start_epoch"]

    def set_epoch(self, epoch: int) -> None:
        """Called by :class:`EpochHook` before each epoch; logs when re-weighting switches on."""
        was = self.reweighting
        self.epoch = epoch
        if self.reweighting and not was:
            logger.info("epoch %d: class-balanced re-weighting of the cross-entropy on (beta=%g)",
                        epoch, self.class_balanced["beta"])

    def losses(self, outputs: dict, gt_labels: torch.Tensor) -> dict:
        # fastreid's losses first: its accuracy logging and the other losses stay as they are;
        # only the cross-entropy is replaced by its weighted form.
        loss_dict = super().losses(outputs, gt_labels)
        if self.reweighting and "loss_cls" in loss_dict:
            ce = self.loss_kwargs["ce"]
            weights = effective_number_weights(self.checked_counts(), self.class_balanced["beta"])
            loss_dict["loss_cls"] = weighted_cross_entropy(
                outputs["cls_outputs"], gt_labels, weights, ce["eps"]) * ce["scale"]
        return loss_dict
