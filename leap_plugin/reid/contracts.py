"""The duck-typed contracts fastreid's extended trainer relies on, named in one place.

The trainer never asks what a module is, only what it can do: any module of the model (a
layer, a head, the meta-architecture, a user's own) that has one of these methods takes
part. ``isinstance(module, Protocol)`` checks for the method.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["Configurable", "CountsReceiver", "EpochAware", "CheckpointMatcher"]


@runtime_checkable
class Configurable(Protocol):
    """Reads the keys its constructor cannot take: called once after fastreid's
    ``build_heads`` (fastreid builds a classification layer as ``cls(num_classes, scale, margin)``)."""

    def configure(self, cfg) -> None: ...


@runtime_checkable
class CountsReceiver(Protocol):
    """Needs K_i, the training samples of each class id: handed over when the trainer has
    built its training set."""

    def set_class_counts(self, counts: torch.Tensor) -> None: ...


@runtime_checkable
class EpochAware(Protocol):
    """Changes behaviour by epoch (e.g. deferred re-weighting): told the epoch before each one."""

    def set_epoch(self, epoch: int) -> None: ...


@runtime_checkable
class CheckpointMatcher(Protocol):
    """Reconciles its state with a checkpoint before fastreid's Checkpointer loads it (the
    LEAP memory, sized by K_i), by its ``on_mismatch`` policy: ``"rebuild"`` (a fine-tune
    from ``MODEL.WEIGHTS``) or ``"require"`` (a ``--resume``)."""

    on_mismatch: str

    def match_checkpoint(self, state: dict, prefix: str) -> None: ...
