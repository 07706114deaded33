"""Files shipped inside the package: the configs (``leap_plugin/configs``, also reachable
as ``configs/`` at the top of a checkout), so that an installed ``leap_plugin`` finds them."""
from __future__ import annotations

import os

__all__ = ["CONFIGS", "find_config"]

#: The shipped configs: ``<data set>/*.yml`` for fastreid, ``face/*.py`` for leap-face-train.
CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def find_config(path: str) -> str:
    """``path`` if it is a file; else, for a shipped config named as the README does
    (``configs/Wesnoth/leap_cf_mnv2.yml``), that config inside the installed package;
    else ``path`` unchanged (the caller reports it missing)."""
    if os.path.isfile(path) or os.path.isabs(path):
        return path
    relative = os.path.normpath(path)
    if relative.split(os.sep)[0] == "configs":
        relative = os.path.relpath(relative, "configs")
    packaged = os.path.join(CONFIGS, relative)
    return packaged if os.path.isfile(packaged) else path
