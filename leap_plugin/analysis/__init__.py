"""Diagnostics of the learned feature space (Sec. 1, Figs. 1-3), independent of any toolbox.

- :mod:`.stats`: intra-class angular spread per class, head vs tail, with confidence intervals
- :mod:`.plots`: angle distributions, t-SNE of head and tail classes, training curves
  (imported on demand: it needs matplotlib and scikit-learn)
"""
from .stats import (
    CI_METHOD, STATISTICS, AngleStatistics, angle_statistics, center_angles, format_summary, group_mean_var,
    head_tail_summary, matched_center_angles, mean_ci, pairwise_angle_mean,
)

__all__ = [
    "CI_METHOD", "STATISTICS", "AngleStatistics", "angle_statistics", "center_angles", "format_summary",
    "group_mean_var", "head_tail_summary", "matched_center_angles", "mean_ci", "pairwise_angle_mean",
]
