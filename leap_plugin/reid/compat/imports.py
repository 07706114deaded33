"""Import breakages: fastreid 1.4.0 cannot be imported on Python >= 3.10 / torch >= 2.0."""
from __future__ import annotations

import collections
import collections.abc
import math
import sys
import types

import torch

from ._registry import patch

__all__ = ["patch_torch_six", "patch_collections_abc"]


@patch("torch_six")
def patch_torch_six() -> None:
    """torch >= 2.0 removed ``torch._six``; fastreid.data imports ``string_classes`` from it."""
    if "torch._six" not in sys.modules:
        six = types.ModuleType("torch._six")
        six.string_classes = (str, bytes)
        six.int_classes = int
        six.inf = math.inf
        six.container_abcs = collections.abc
        sys.modules["torch._six"] = six
        torch._six = six


@patch("collections_abc")
def patch_collections_abc() -> None:
    """Python >= 3.10 removed the ABC aliases in ``collections``; fastreid.data does
    ``from collections import Mapping`` (breaks fastreid.data, .engine, .evaluation)."""
    for name in ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
