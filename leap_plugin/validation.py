"""Value checks shared by the core, the data helpers and both adapters (no toolbox here).

Two levels: ``require_*`` check a plain argument and raise ``ValueError`` naming it;
``check_*`` check a config value and raise :class:`ConfigError` naming the key, the value
and what is allowed.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, NoReturn

import numpy as np

__all__ = [
    "ConfigError", "fail", "require_int", "require_counts", "check_choice", "check_int", "check_number",
    "check_bool", "is_number",
]


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and what is allowed."""


def fail(key: str, value: Any, allowed: str) -> NoReturn:
    raise ConfigError(f"{key} = {value!r} is not allowed: {allowed}")


def is_number(value: Any) -> bool:
    """A finite int or float (bools are not numbers here)."""
    return (not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
            and math.isfinite(value))


def require_int(value: Any, name: str, minimum: int) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def require_counts(counts: Any, name: str = "class counts"):
    """``counts`` as a 1-d long tensor of K_i, every one >= 1 (a class without training
    samples has no statistics and would divide by zero in the count-aware methods)."""
    import torch

    k = torch.as_tensor(counts).reshape(-1) if not isinstance(counts, torch.Tensor) else counts.reshape(-1)
    if k.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-d sequence")
    if k.is_floating_point() and not bool((k == k.round()).all()):
        raise ValueError(f"{name} must be integers (K_i = training samples of class i)")
    k = k.long()
    if bool((k < 1).any()):
        raise ValueError(f"every class needs at least one training sample (K_i >= 1); {name} has "
                         f"{int((k < 1).sum())} entries below 1")
    return k


def check_choice(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    # True == 1 in Python: a bool is only one of the choices if they are bools too.
    mistyped = isinstance(value, bool) and not any(isinstance(c, bool) for c in choices)
    if mistyped or value not in choices:
        fail(key, value, "use one of " + ", ".join(repr(c) for c in choices))


def check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        fail(key, value, "use True or False")


def check_int(key: str, value: Any, minimum: int) -> None:
    try:
        require_int(value, key, minimum)
    except ValueError:
        fail(key, value, f"use an integer >= {minimum}")


def check_number(key: str, value: Any, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False, hint: str = "") -> float:
    """A number in ``[low, high]`` (``(low, high]`` with ``low_open``); ints are accepted and
    returned as float (``CENTER_LR 1`` means 1.0)."""
    if not is_number(value) or value > high or value < low or (low_open and value == low):
        if high == math.inf:
            allowed = f"use a number {'>' if low_open else '>='} {low:g}"
        else:
            allowed = f"use a number in {'(' if low_open else '['}{low:g}, {high:g}]"
        fail(key, value, allowed + (f" ({hint})" if hint else ""))
    return float(value)
