"""LEAP's settings: every one declared once, with its default, meaning and check.

The fastreid adapter turns each field into the key ``MODEL.HEADS.LEAP.<NAME>`` (upper
case), the insightface adapter into ``leap.<name>``; :class:`~leap_plugin.core.LeapMemory`
and :class:`~leap_plugin.face.LeapPartialFC` take a :class:`LeapSettings` (default: these
defaults) plus keyword overrides of the same names. A new setting is added here and reaches
all of them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..validation import check_bool, check_choice, check_int, check_number, fail

__all__ = [
    "ALPHA_MODES", "ANGLE_STATISTICS", "CENTER_UPDATES", "CLOUDS", "VERSIONS", "LeapSettings", "DEFAULTS",
    "check_setting",
]

#: ``"full"``: LEAP-CF / LEAP-AF (Eq. 9, no head/tail threshold);
#: ``"vanilla"``: LEAP-CV / LEAP-AV (Eq. 6, head = K_i > T).
VERSIONS = ("full", "vanilla")
#: ``"logit"``: one alpha draw per logit (the paper's alpha in R^{1xC});
#: ``"sample"``: one draw per sample, shared by all its logits.
ALPHA_MODES = ("logit", "sample")
#: ``"paper"``: angle of each sample to the updated center (Eq. 3);
#: ``"loo"``: bias-aware: the sample's own share removed from the center, corrected for
#: the finite number of samples behind it (:meth:`LeapMemory.update`).
ANGLE_STATISTICS = ("paper", "loo")
#: ``"ema"``: ``c <- (1 - gamma) c + gamma m`` (a moving average, the center loss of the
#: paper's [39]); ``"printed"``: ``c <- (1 - gamma) m + gamma c``, Eq. 4 as printed.
CENTER_UPDATES = ("ema", "printed")
#: ``"class"``: each class's own width (Eq. 6 / Eq. 9, the paper); ``"uniform"``: a control,
#: every class with statistics gets the mean of the positive per-class widths.
CLOUDS = ("class", "uniform")

_Check = Callable[[str, Any], Any]

#: Upper bound of ``cloud_scale``. Per-class cloud stds measured at scale 1 are 0.03-0.15 rad
#: (sprites, faces); 30 times that is 1-4.5 rad, already past pi, where every angle is clipped.
MAX_CLOUD_SCALE = 30.0


def _choice(choices: tuple) -> _Check:
    def check(key: str, value: Any) -> Any:
        check_choice(key, value, choices)
        return value
    return check


def _int(minimum: int) -> _Check:
    def check(key: str, value: Any) -> int:
        check_int(key, value, minimum)
        return int(value)
    return check


def _number(low: float, high: float = float("inf"), hint: str = "") -> _Check:
    return lambda key, value: check_number(key, value, low, high, hint=hint)


def _bool(key: str, value: Any) -> bool:
    check_bool(key, value)
    return value


def _setting(default: Any, check: _Check, doc: str) -> Any:
    return field(default=default, metadata={"check": check, "doc": doc})


@dataclass(frozen=True)
class LeapSettings:
    """The feature-cloud settings (equations of the paper in brackets; docs/design.md says where
    we read the paper one way among several)."""

    enabled: bool = _setting(False, _bool, "build the LEAP state and perturb the training logits")
    version: str = _setting("full", _choice(VERSIONS),
                            "full: every class with sigma_i^2 < sigma^2 gets a cloud (Eq. 9); "
                            "vanilla: tail classes (K_i <= T) get sigma_h^2 - sigma_i^2 (Eq. 6)")
    tail_threshold: int = _setting(20, _int(0), "T: head = K_i > T (vanilla; also the logged head/tail split)")
    center_lr: float = _setting(0.1, _number(0.0, 1.0, "gamma of Eq. 4"), "gamma of Eq. 4, in [0, 1]")
    center_update: str = _setting("ema", _choice(CENTER_UPDATES),
                                  "ema: c <- (1 - gamma) c + gamma m (moving average); "
                                  "printed: c <- (1 - gamma) m + gamma c (Eq. 4 as printed)")
    center_update_period: int = _setting(1, _int(1), "iterations between center / memory updates "
                                                     "(the paper uses 5 on faces)")
    memory_factor: int = _setting(1, _int(1), "P of Eq. 5: the angle memory of class i holds K_i * P angles")
    stats_period: int = _setting(1, _int(1), "iterations between refreshes of the statistics and cloud widths")
    start_epoch: int = _setting(10, _int(0), "no cloud before this epoch (the memory fills from the start)")
    alpha_mode: str = _setting("logit", _choice(ALPHA_MODES),
                               "logit: one alpha per logit (the paper's alpha in R^{1xC}); "
                               "sample: one alpha per sample, shared by its logits")
    statistic: str = _setting("paper", _choice(ANGLE_STATISTICS),
                              "paper: Eq. 3-5 as printed; loo: bias-aware leave-one-out angles")
    cloud_scale: float = _setting(5.0, _number(0.0, MAX_CLOUD_SCALE, "clouds wider than pi clip every angle"),
                                  "multiplies the std of every alpha draw: alpha ~ N(0, scale^2 * w_i); 1 = the paper")
    cloud: str = _setting("class", _choice(CLOUDS),
                          "class: each class's own width (the paper); uniform: the control, "
                          "the same width for every class with statistics")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def doc(cls, name: str) -> str:
        return cls.__dataclass_fields__[name].metadata["doc"]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], key: Callable[[str], str] = str,
                     node: str = "LEAP settings") -> "LeapSettings":
        """Checked settings from ``values`` (missing names take their defaults).

        ``key(name)`` spells a name as the caller's config does (``MODEL.HEADS.LEAP.CENTER_LR``,
        ``leap.center_lr``), so that a :class:`~leap_plugin.validation.ConfigError` names it.
        """
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            fail(node, dict(values), f"unknown keys {unknown}; allowed: {sorted(cls.names())}")
        return cls(**{name: check_setting(name, value, key(name)) for name, value in values.items()})

    def replace(self, **changes: Any) -> "LeapSettings":
        """These settings with ``changes`` (checked; an unknown name raises ConfigError)."""
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            fail("LEAP settings", changes, f"unknown names {unknown}; allowed: {sorted(self.names())}")
        return dataclasses.replace(self, **{name: check_setting(name, value) for name, value in changes.items()})


def check_setting(name: str, value: Any, key: str | None = None) -> Any:
    """``value`` checked (and normalised: ints for float settings become floats) as the
    setting ``name``; a bad value raises ConfigError naming ``key`` (default: ``name``)."""
    return LeapSettings.__dataclass_fields__[name].metadata["check"](key or name, value)


#: The settings as shipped.
DEFAULTS = LeapSettings()
