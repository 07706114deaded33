"""LEAP state in fastreid checkpoints, and loading weights that must fit.

fastreid's ``Checkpointer`` drops every checkpoint tensor whose shape differs from the
model's before loading, and loads the rest: a LEAP memory sized for other K_i lost its
angles but kept its counts and running sums (half adopted). :func:`extend_checkpointer`
(applied on import) lets every module with ``match_checkpoint`` (the LEAP memory)
reconcile itself with the checkpoint first, by its ``on_mismatch`` policy, which fastreid's
trainer sets: a fine-tune from ``MODEL.WEIGHTS`` rebuilds the LEAP state for this run, a
``--resume`` with other K_i or ``MEMORY_FACTOR`` is an error.

:func:`load_weights` is the strict load of evaluation, export and analysis: weights that
leave part of the model at its initialisation are an error, not a log line.
"""
from __future__ import annotations

import functools
import os
from typing import Sequence

import torch

from ..validation import ConfigError
from .compat._registry import patch
from .compat.hardening import CheckpointReadError
from .contracts import CheckpointMatcher

__all__ = ["extend_checkpointer", "set_mismatch_policy", "load_weights", "FEATURE_FREE_KEYS"]

#: Checkpoint entries the embedding does not depend on: the classifier weights (their shape
#: follows the class count of the split) and LEAP's center / angle-memory buffers (absent
#: from a baseline checkpoint, sized by K_i).
FEATURE_FREE_KEYS = ("heads.weight", "heads.memory.", "heads.cls_layer.class_counts", "class_counts")


def _bare(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def set_mismatch_policy(model: torch.nn.Module, policy: str) -> None:
    """Set ``on_mismatch`` of every LEAP memory inside ``model`` (see ``LeapMemory``)."""
    for module in model.modules():
        if isinstance(module, CheckpointMatcher):
            module.on_mismatch = policy


@patch("checkpointer_reconcile")
def extend_checkpointer() -> None:
    """Make fastreid's ``Checkpointer`` let modules reconcile with a checkpoint first (once)."""
    from fastreid.utils.checkpoint import Checkpointer

    original = Checkpointer._load_model

    @functools.wraps(original)
    def _load_model(self, checkpoint):
        state = checkpoint.get("model", {})
        if any(k.startswith("module.") for k in state):  # saved from a DDP-wrapped model
            for key in list(state):
                state[key[len("module."):] if key.startswith("module.") else key] = state.pop(key)
        for name, module in _bare(self.model).named_modules():
            if isinstance(module, CheckpointMatcher):
                module.match_checkpoint(state, f"{name}." if name else "")
        return original(self, checkpoint)

    Checkpointer._load_model = _load_model


def load_weights(model: torch.nn.Module, weights: str, what: str = "--weights",
                 optional: Sequence[str] = FEATURE_FREE_KEYS) -> None:
    """Load a fastreid checkpoint into ``model``; every weight the embedding depends on must
    come from it.

    Raises:
        ConfigError: the file is missing or not a fastreid checkpoint, or it lacks weights of
            this model (a checkpoint of another architecture or config), naming some of them.
    """
    from fastreid.utils.checkpoint import Checkpointer

    if not os.path.isfile(weights):
        raise ConfigError(f"{what} {weights!r}: no such file")
    checkpointer = Checkpointer(model)
    # Checkpointer.load() only logs missing keys: a checkpoint of another backbone would
    # leave random weights and give a meaningless model. Its two steps, called here, let
    # us see what did not load.
    try:
        checkpoint = checkpointer._load_file(weights)
    except CheckpointReadError as e:
        raise ConfigError(f"{what}: {e}") from e
    incompatible = checkpointer._load_model(checkpoint)
    missing = [k for k in incompatible.missing_keys + [k for k, _, _ in incompatible.incorrect_shapes]
               if not k.startswith(tuple(optional)) and not k.endswith(tuple(optional))]
    if missing:
        raise ConfigError(f"{what} {weights!r} does not fit the model of this config: "
                          f"{len(missing)} weights missing or of another shape, e.g. {missing[:3]}")
