"""One plain reference implementation per method, element by element with Python floats,
shared by the core and adapter tests (a method's tests compare against this, never against
another copy of the code under test)."""
import math

import torch

COS_EPS = 1e-6


def margin_logits(cos, labels, scale, kind, margin=0.0, alpha=None, offsets=None, columns=None):
    """Scaled logits of (N, C) cosines.

    kind: ``"cos"`` CosFace (target ``s * (cos(clip(theta + a)) - m_y)``) or ``"arc"`` ArcFace
    (target ``s * cos(clip(theta + a + m_y))``); non-targets ``s * cos(clip(theta + a))``.
    ``margin``: a float or a per-class list (indexed by class id, through ``columns``).
    ``alpha``: None, or (N, C) / (N, 1) angles. ``offsets``: per-class values added to every
    scaled logit (logit adjustment). ``columns``: class id of each column (default j)."""
    n, c = cos.shape
    columns = list(range(c)) if columns is None else [int(x) for x in columns]
    out = torch.empty(n, c, dtype=torch.float64)
    for i in range(n):
        y = int(labels.reshape(-1)[i])
        for j in range(c):
            x = float(cos[i, j])
            target = j == y
            m = margin[columns[y]] if isinstance(margin, (list, tuple)) and y >= 0 else margin
            a = 0.0 if alpha is None else float(alpha[i, j if alpha.shape[1] > 1 else 0])
            arc_shift = m if kind == "arc" and target else 0.0
            if a == 0.0 and arc_shift == 0.0:
                value = x  # no angle arithmetic: the exact cosine
            else:
                theta = math.acos(min(max(x, -1 + COS_EPS), 1 - COS_EPS))
                value = math.cos(min(max(theta + a + arc_shift, 0.0), math.pi))
            if kind == "cos" and target:
                value -= m
            out[i, j] = scale * value + (offsets[columns[j]] if offsets is not None else 0.0)
    return out


def ldam_margins(counts, max_m):
    k_min = min(counts)
    return [max_m * (k_min / k) ** 0.25 for k in counts]


def logit_offsets(counts, tau):
    return [tau * math.log(k / sum(counts)) for k in counts]


def adaptive_margins(counts, a, lam, b):
    return [a * k ** -lam + b for k in counts]


def count_method_logits(method, cos, labels, scale, counts, options, margin=0.0, columns=None):
    """The peer methods of ``leap_plugin.core.longtail.COUNT_METHODS`` by hand."""
    if method == "ldam":
        return margin_logits(cos, labels, scale, "cos", ldam_margins(counts, **options), columns=columns)
    if method == "balanced_softmax":
        return margin_logits(cos, labels, scale, "cos", margin, offsets=logit_offsets(counts, **options),
                             columns=columns)
    if method == "adaptive_arc":
        return margin_logits(cos, labels, scale, "arc", adaptive_margins(counts, **options), columns=columns)
    raise KeyError(method)
