"""The ``@patch`` decorator: each patch runs once per process, in the order of :data:`PATCHES`."""
from __future__ import annotations

import functools
from typing import Callable

__all__ = ["APPLIED", "patch"]

#: Names of the patches applied in this process.
APPLIED: set[str] = set()


def patch(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Make a patch function idempotent under ``name``."""
    def deco(fn: Callable[[], None]) -> Callable[[], None]:
        @functools.wraps(fn)
        def wrapper() -> None:
            if name not in APPLIED:
                fn()
                APPLIED.add(name)
        wrapper.patch_name = name
        return wrapper
    return deco
