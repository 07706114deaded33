"""``LeapHook``: when the LEAP state is updated, when the feature cloud starts, and
what reaches fastreid's EventStorage (so TensorBoard, metrics.json and the console)."""
from __future__ import annotations

import logging
import math
from typing import Sequence

from fastreid.engine.train_loop import HookBase

from .head import LeapHead

__all__ = ["LeapHook"]

logger = logging.getLogger("fastreid." + __name__)  # fastreid's setup_logger handles "fastreid.*"


class LeapHook(HookBase):
    """Drives the LEAP heads of a fastreid trainer.

    - before each step: the cloud is on iff ``trainer.epoch >= start_epoch``; centers and
      memory are updated on iterations that are multiples of ``center_update_period``.
    - after each step, every ``stats_period`` iterations: per-class statistics and cloud
      widths are refreshed and head vs tail angular mean / variance, the number of
      clouded classes and the mean cloud width are put into the EventStorage.
    - every ``log_period`` iterations those figures are also logged to the console.
    """

    def __init__(self, heads: Sequence[LeapHead], start_epoch: int, center_update_period: int = 1,
                 stats_period: int = 1, log_period: int = 20):
        self.heads = list(heads)
        self.start_epoch = start_epoch
        self.center_update_period = center_update_period
        self.stats_period = stats_period
        self.log_period = log_period

    def before_step(self) -> None:
        cloud = self.trainer.epoch >= self.start_epoch
        update = self.trainer.iter % self.center_update_period == 0
        for head in self.heads:
            head.cloud_active = cloud
            head.update_memory = update

    def after_step(self) -> None:
        it = self.trainer.iter + 1
        if it % self.stats_period:
            return
        for i, head in enumerate(self.heads):
            head.memory.refresh_statistics()
            summary = head.memory.summary()
            summary["leap/cloud_active"] = float(head.cloud_active)
            prefix = "" if len(self.heads) == 1 else f"head{i}/"
            finite = {prefix + k: v for k, v in summary.items() if math.isfinite(v)}
            self.trainer.storage.put_scalars(**finite, smoothing_hint=False)
            if it % self.log_period == 0:
                logger.info("iter %d LEAP %s", it, " ".join(f"{k}={v:.4g}" for k, v in summary.items()))

    def after_train(self) -> None:
        for head in self.heads:
            head.cloud_active = False
