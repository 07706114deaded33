"""Hooks for fastreid's trainer: :class:`LeapHook` (when the LEAP state is updated, when
the feature cloud starts, what reaches fastreid's EventStorage: TensorBoard, metrics.json,
the console) and :class:`EpochHook` (the epoch for epoch-aware modules, e.g. DRW)."""
from __future__ import annotations

import json
import logging
import math
from typing import Sequence

import torch
from fastreid.engine.train_loop import HookBase

from .contracts import EpochAware
from .head import LeapHead

__all__ = ["LeapHook", "EpochHook", "EvalResultsWriter", "epoch_aware_modules"]

logger = logging.getLogger("fastreid." + __name__)  # fastreid's setup_logger handles "fastreid.*"


class LeapHook(HookBase):
    """Drives the LEAP heads of a fastreid trainer.

    - before each step: the cloud is on iff ``trainer.epoch >= start_epoch``; centers and
      memory are updated on iterations that are multiples of ``center_update_period``.
    - after each step both are off again, so that forward passes between training steps
      (PreciseBN, evaluation) never touch the LEAP state; every ``stats_period`` iterations
      the per-class statistics and cloud widths are refreshed and head vs tail angular
      mean / variance, the number of clouded classes and the mean cloud width are put into
      the EventStorage, and logged to the console every ``log_period`` iterations.
    """

    def __init__(self, heads: Sequence[LeapHead], start_epoch: int, center_update_period: int = 1,
                 stats_period: int = 1, log_period: int = 20):
        self.heads = list(heads)
        self.start_epoch = start_epoch
        self.center_update_period = center_update_period
        self.stats_period = stats_period
        self.log_period = log_period
        self._said_no_head = False
        self._dropped = [0] * len(self.heads)

    def before_train(self) -> None:
        for head in self.heads:
            head.hook_attached = True

    def before_step(self) -> None:
        cloud = self.trainer.epoch >= self.start_epoch
        update = self.trainer.iter % self.center_update_period == 0
        for head in self.heads:
            head.cloud_active = cloud
            head.update_memory = update

    def after_step(self) -> None:
        for head in self.heads:
            head.update_memory = False
            head.cloud_active = False
        it = self.trainer.iter + 1
        if it % self.stats_period:
            return
        for i, head in enumerate(self.heads):
            memory = head.memory
            memory.refresh_statistics()
            summary = memory.summary()
            summary["leap/cloud_active"] = float(self.trainer.epoch >= self.start_epoch)
            prefix = "" if len(self.heads) == 1 else f"head{i}/"
            finite = {prefix + k: v for k, v in summary.items() if math.isfinite(v)}
            self.trainer.storage.put_scalars(**finite, smoothing_hint=False)
            if not self._said_no_head and not bool((memory.class_counts > memory.tail_threshold).any()):
                logger.info("LEAP: no class has more than TAIL_THRESHOLD = %d training images, so there are "
                            "no head classes and no leap/head_* statistics", memory.tail_threshold)
                self._said_no_head = True
            if memory.dropped_rows > self._dropped[i]:
                logger.warning("LEAP: %d non-finite feature rows left out of the centers and the angle memory "
                               "so far (%d new)", memory.dropped_rows, memory.dropped_rows - self._dropped[i])
                self._dropped[i] = memory.dropped_rows
            if it % self.log_period == 0:
                logger.info("iter %d LEAP %s", it, " ".join(f"{k}={v:.4g}" for k, v in summary.items()))

    def after_train(self) -> None:
        for head in self.heads:
            head.cloud_active = False


def epoch_aware_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules of ``model`` (DDP-wrapped or not) that have ``set_epoch``."""
    return [m for m in model.modules() if isinstance(m, EpochAware)]


class EpochHook(HookBase):
    """Before each epoch, calls ``set_epoch(trainer.epoch)`` on the given modules."""

    def __init__(self, modules: Sequence[torch.nn.Module]):
        self.modules = list(modules)

    def before_epoch(self) -> None:
        for module in self.modules:
            module.set_epoch(self.trainer.epoch)


class EvalResultsWriter(HookBase):
    """Writes each evaluation to ``metrics.json`` and TensorBoard as it happens.

    fastreid evaluates in ``after_epoch`` (and the final time in ``after_train``) and puts
    the results into the EventStorage at the epoch's last iteration, which its writers
    have already written; they skip it, so no evaluation ever reaches metrics.json or
    TensorBoard. Placed right after fastreid's ``EvalHook``, this hook writes the new
    results itself with the writers of ``periodic_writer``.
    """

    def __init__(self, periodic_writer):
        self.writers = periodic_writer._writers
        self._written = None

    def _write_new_results(self) -> None:
        from fastreid.evaluation.testing import flatten_results_dict
        from fastreid.utils.events import JSONWriter, TensorboardXWriter

        results = getattr(self.trainer, "_last_eval_results", None)
        if not results or results is self._written:
            return
        self._written = results
        scalars = {k: float(v) for k, v in flatten_results_dict(results).items()}
        step = self.trainer.iter
        for writer in self.writers:
            if isinstance(writer, JSONWriter):
                writer._file_handle.write(json.dumps({**scalars, "iteration": step}, sort_keys=True) + "\n")
                writer._file_handle.flush()
            elif isinstance(writer, TensorboardXWriter):
                for key, value in scalars.items():
                    writer._writer.add_scalar(key, value, step)

    def after_epoch(self) -> None:
        self._write_new_results()

    def after_train(self) -> None:
        self._write_new_results()
