"""LEAP math and state, independent of any toolbox (Liu et al., CVPR 2020).

- :mod:`.settings`: every LEAP setting with its default and check (one declaration)
- :mod:`.cloud`: perturbed CosFace / ArcFace logits and alpha sampling (Eq. 7-8)
- :mod:`.variance`: head variance (Eq. 6) and sample-count-weighted variance (Eq. 9)
- :mod:`.memory`: class centers (Eq. 4), angle memory (Eq. 5), per-class statistics
- :mod:`.longtail`: the peer methods' count-dependent margins, logit offsets, noise and weights
- :mod:`.elastic`: ElasticFace's random per-sample margins
"""
from .cloud import arcface_logits, clouded_logits, cosface_logits, perturbed_cos, sample_alpha
from .memory import LeapMemory
from .settings import (
    ALPHA_MODES,
    ANGLE_STATISTICS,
    CENTER_UPDATES,
    CLOUDS,
    DEFAULTS,
    VERSIONS,
    LeapSettings,
    check_setting,
)
from .variance import cloud_variance, head_variance, pooled_variance, uniform_cloud

__all__ = [
    "ALPHA_MODES", "ANGLE_STATISTICS", "CENTER_UPDATES", "CLOUDS", "DEFAULTS", "VERSIONS", "LeapMemory",
    "LeapSettings", "arcface_logits", "check_setting", "cloud_variance", "clouded_logits", "cosface_logits",
    "head_variance", "perturbed_cos", "pooled_variance", "sample_alpha", "uniform_cloud",
]
