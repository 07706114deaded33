"""LEAP math and state, independent of any toolbox (Liu et al., CVPR 2020).

- :mod:`.cloud`: perturbed CosFace / ArcFace logits and alpha sampling (Eq. 7-8)
- :mod:`.variance`: head variance (Eq. 6) and sample-count-weighted variance (Eq. 9)
- :mod:`.memory`: class centers (Eq. 4), angle memory (Eq. 5), per-class statistics
- :mod:`.longtail`: the peer methods' count-dependent margins, logit offsets and weights
"""
from .cloud import ALPHA_MODES, arcface_logits, cosface_logits, sample_alpha
from .memory import STATISTICS, LeapMemory
from .variance import VERSIONS, cloud_variance, head_variance, pooled_variance

__all__ = [
    "ALPHA_MODES", "STATISTICS", "VERSIONS", "LeapMemory", "arcface_logits", "cloud_variance",
    "cosface_logits", "head_variance", "pooled_variance", "sample_alpha",
]
