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


def count_method_logits(method, cos, labels, scale, counts, options, margin=0.0, columns=None, normal=None):
    """The peer methods of ``leap_plugin.core.longtail.COUNT_METHODS`` by hand (``normal``:
    the standard normal draws of a random method)."""
    if method == "gcl":
        return gcl_logits(cos, labels, scale, counts, options["noise_mul"], normal, margin, columns)
    if method == "ldam":
        return margin_logits(cos, labels, scale, "cos", ldam_margins(counts, **options), columns=columns)
    if method == "balanced_softmax":
        return margin_logits(cos, labels, scale, "cos", margin, offsets=logit_offsets(counts, **options),
                             columns=columns)
    if method == "adaptive_arc":
        return margin_logits(cos, labels, scale, "arc", adaptive_margins(counts, **options), columns=columns)
    raise KeyError(method)


def gcl_amplitudes(counts, noise_mul):
    """GCL: noise_mul * (ln K_max - ln K_j) / (ln K_max - ln K_min); all 0 for equal counts."""
    top, low = math.log(max(counts)), math.log(min(counts))
    if top == low:
        return [0.0] * len(counts)
    return [noise_mul * (top - math.log(k)) / (top - low) for k in counts]


def gcl_logits(cos, labels, scale, counts, noise_mul, normal, margin=0.0, columns=None):
    """GCL by hand: s * (cos_nj - a_j |clamp(z_nj / 3, -1, 1)|), minus the margin on the target."""
    n, c = cos.shape
    columns = list(range(c)) if columns is None else [int(x) for x in columns]
    amp = gcl_amplitudes(counts, noise_mul)
    out = torch.empty(n, c, dtype=torch.float64)
    for i in range(n):
        y = int(labels.reshape(-1)[i])
        for j in range(c):
            eps = min(max(float(normal[i, j]) / 3.0, -1.0), 1.0)
            value = float(cos[i, j]) - amp[columns[j]] * abs(eps)
            out[i, j] = scale * (value - (margin if j == y else 0.0))
    return out


def elastic_margins(cos, labels, mean, std, normal, plus=False):
    """ElasticFace's per-row margins; "+": the k-th highest target cosine gets the k-th smallest draw."""
    n = cos.shape[0]
    ys = [int(v) for v in labels.reshape(-1)]
    margins = [mean + std * float(normal[i]) for i in range(n)]
    if plus:
        valid = [i for i in range(n) if ys[i] >= 0]
        drawn = sorted(margins[i] for i in valid)
        by_cos = sorted(valid, key=lambda i: (-float(cos[i, ys[i]]), i))
        for k, i in enumerate(by_cos):
            margins[i] = drawn[k]
    return margins


def elastic_logits(kind, cos, labels, scale, mean, std, normal, plus=False):
    """ElasticFace-Arc / -Cos by hand: the target gets its row's margin, the others s * cos."""
    margins = elastic_margins(cos, labels, mean, std, normal, plus)
    n, c = cos.shape
    out = torch.empty(n, c, dtype=torch.float64)
    for i in range(n):
        y = int(labels.reshape(-1)[i])
        for j in range(c):
            x = float(cos[i, j])
            if j == y and kind == "arc":
                theta = math.acos(min(max(x, -1 + COS_EPS), 1 - COS_EPS))
                x = math.cos(min(max(theta + margins[i], 0.0), math.pi))
            elif j == y:
                x -= margins[i]
            out[i, j] = scale * x
    return out
