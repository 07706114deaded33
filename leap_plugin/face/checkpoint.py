"""Atomic files and the checkpoints of ``leap-face-train``.

Each rank writes its own checkpoint (the class weights of PartialFC are sharded per rank;
the LEAP state inside it is identical on all ranks). A checkpoint records the settings it
cannot be resumed without, so a mismatched resume fails with a message, not a shape error.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from ..io import atomic_write

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "checkpoint_path", "recorded_settings"]

FORMAT = "leap-face-train/1"
#: Settings a resumed run must share with the run that wrote the checkpoint.
IDENTITY_KEYS = ("world_size", "rank", "network", "embedding_size", "num_classes", "input_size")
#: Of those, the ones that older checkpoints do not record (not checked when absent).
OPTIONAL_KEYS = ("input_size",)
#: What a checkpoint says about its backbone (what ``leap-export face`` needs to rebuild it).
BACKBONE_KEYS = ("network", "embedding_size", "input_size")


def checkpoint_path(output: str, rank: int) -> str:
    return os.path.join(output, f"checkpoint_rank{rank}.pt")


def save_checkpoint(path: str, state: dict[str, Any]) -> None:
    """Save ``state`` (tagged with :data:`FORMAT`) atomically."""
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def load_checkpoint(path: str, expect: dict[str, Any], device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` and check that it belongs to a
    run with the settings ``expect`` (a subset of :data:`IDENTITY_KEYS`)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"resume asked for, but there is no checkpoint at {path!r}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise ValueError(f"checkpoint {path!r} cannot be read ({type(e).__name__}: {e}); "
                         "it is damaged or not a leap-face-train checkpoint") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a {FORMAT} checkpoint")
    for key, value in expect.items():
        if key in OPTIONAL_KEYS and key not in state:
            continue
        if state.get(key) != value:
            raise ValueError(f"checkpoint {path!r} was written with {key} = {state.get(key)!r}, "
                             f"this run has {key} = {value!r}; resume with the same setting")
    return state


def recorded_settings(weights: str) -> dict[str, Any]:
    """The backbone settings (:data:`BACKBONE_KEYS` it records) of the leap-face-train run
    that wrote ``weights``: read from ``weights`` itself when it is a checkpoint, else from
    ``checkpoint_rank0.pt`` beside it (``<output>/model.pt``). ``{}`` when there is none, it
    cannot be read, or it is not a leap-face-train checkpoint (arcface_torch's files)."""
    folder, name = os.path.split(weights)
    path = weights if name.startswith("checkpoint_rank") else checkpoint_path(folder, 0)
    if not os.path.isfile(path):
        return {}
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # damaged or foreign: nothing recorded
        return {}
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return {}
    return {key: state[key] for key in BACKBONE_KEYS if key in state}
