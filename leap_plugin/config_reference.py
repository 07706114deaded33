"""``docs/config.md``: every config key this package adds, generated from the declarations.

    python -m leap_plugin.config_reference > docs/config.md

The tables come from the one place each key is declared: LEAP's settings
(:class:`leap_plugin.core.LeapSettings`), the fastreid keys (:mod:`leap_plugin.reid.keys`
and the layers' ``options_config``) and the ``leap-face-train`` keys
(:data:`leap_plugin.face.config.FACE_KEYS`). A test fails when the file drifts from them.
"""
from __future__ import annotations

import sys

__all__ = ["config_reference"]


def _cell(value) -> str:
    return "`" + repr(value).replace("|", "\\|") + "`"


def config_reference() -> str:
    from .core import DEFAULTS, LeapSettings
    from .face.config import FACE_KEYS, LEAP_DEFAULTS
    from .face.longtail import LONG_TAIL_METHODS
    from .reid.config import all_keys

    lines = ["# Configuration keys", "",
             "Generated from the declarations in the code by `python -m leap_plugin.config_reference`; "
             "do not edit by hand (a test compares the two).", "",
             "## fastreid (`MODEL.HEADS.LEAP.*` and the rest, added to fastreid's defaults by `import leap_plugin`)",
             "", "| key | default | meaning |", "|---|---|---|"]
    for key in all_keys():
        lines.append(f"| `{key.path}` | {_cell(key.default)} | {key.meaning} |")
    lines += ["", "## leap-face-train (arcface_torch-style Python config files)", "",
              "Keys of arcface_torch's `configs/base.py` that this trainer does not use (`dali`, `wandb_*` ...) are "
              "reported and ignored.", "", "| key | default | meaning |", "|---|---|---|"]
    for name, (default, meaning) in FACE_KEYS.items():
        lines.append(f"| `{name}` | {_cell(default)} | {meaning} |")
    lines += ["", "### `leap = dict(...)`", "", "The same settings as fastreid's `MODEL.HEADS.LEAP.*`, in lower case "
              "(`start_epoch` counts epochs from 0), plus `exact_grad`.", "",
              "| key | default | meaning |", "|---|---|---|"]
    for name in LeapSettings.names():
        lines.append(f"| `leap.{name}` | {_cell(getattr(DEFAULTS, name))} | {LeapSettings.doc(name)} |")
    lines.append(f"| `leap.exact_grad` | {_cell(LEAP_DEFAULTS['exact_grad'])} | False: arcface_torch's gradient "
                 "(the margin under no_grad); True: the exact derivative of Eq. 7-8 |")
    lines += ["", "### `long_tail_loss = dict(method=..., ...)`", "", "| method | options (defaults) |", "|---|---|"]
    for method, options in LONG_TAIL_METHODS.items():
        shown = ", ".join(f"`{k}={v!r}`" for k, v in options.items()) or "none"
        lines.append(f"| `{method}` | {shown} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import leap_plugin  # noqa: F401  (fastreid's registries: the layers and their keys)

    sys.stdout.write(config_reference())
