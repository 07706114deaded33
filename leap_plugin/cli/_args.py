"""Argument checks shared by the console scripts that take fastreid-style ``KEY VALUE``
overrides after their flags (``argparse.REMAINDER``)."""
from __future__ import annotations

import argparse
from typing import Sequence


def reject_flags_after_overrides(parser: argparse.ArgumentParser, opts: Sequence[str], usage: str) -> None:
    """A flag written after the ``KEY VALUE`` overrides is swallowed by them (``... MODEL.DEVICE
    cpu -o x.onnx``): one clear line (exit 2) naming it, with ``usage`` as the right order,
    instead of a confusing error later."""
    flags = {option for action in parser._actions for option in action.option_strings}
    for token in opts:
        if token.split("=")[0] in flags or token.startswith("--"):
            parser.error(f"{token!r} comes after the KEY VALUE overrides: flags come before the overrides ({usage})")
