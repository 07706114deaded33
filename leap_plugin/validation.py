"""Config validation shared by the fastreid and insightface adapters (no toolbox here).

Every failure names the key, the value and what is allowed.
"""
from __future__ import annotations

from typing import Any, Iterable, NoReturn

from .data.longtail import require_int

__all__ = ["ConfigError", "fail", "check_choice", "check_int"]


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and what is allowed."""


def fail(key: str, value: Any, allowed: str) -> NoReturn:
    raise ConfigError(f"{key} = {value!r} is not allowed: {allowed}")


def check_choice(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        fail(key, value, "use one of " + ", ".join(repr(c) for c in choices))


def check_int(key: str, value: Any, minimum: int) -> None:
    try:
        require_int(value, key, minimum)
    except ValueError:
        fail(key, value, f"use an integer >= {minimum}")
