"""The peer methods' count-dependent vectors and logits (core.longtail) against the papers'
formulas and the shared reference implementation, for every method of the table."""
import math

import pytest
import torch

from tests.helpers import reference
from leap_plugin.core.cloud import arcface_logits, cosface_logits
from leap_plugin.core.longtail import (
    COUNT_METHODS,
    adaptive_arc_margins,
    effective_number_weights,
    ldam_margins,
    logit_adjustment,
    per_sample,
    weighted_cross_entropy,
)

COUNTS = [40, 12, 7, 3, 1, 20]
TARGETS = torch.tensor([0, 4, 3, -1, 5, 1, 2])


def cosines(n=7, c=len(COUNTS), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, generator=g) * 1.6 - 0.8  # theta_y + margin stays below pi


def test_count_vectors_match_the_papers_formulas():
    beta = 0.99
    raw = [(1 - beta) / (1 - beta ** k) for k in COUNTS]
    torch.testing.assert_close(ldam_margins(COUNTS, 0.5).double(), torch.tensor(reference.ldam_margins(COUNTS, 0.5), dtype=torch.float64))
    torch.testing.assert_close(logit_adjustment(COUNTS, 0.7).double(),
                               torch.tensor(reference.logit_offsets(COUNTS, 0.7), dtype=torch.float64))
    torch.testing.assert_close(adaptive_arc_margins(COUNTS, 0.4, 0.3, 0.1).double(),
                               torch.tensor(reference.adaptive_margins(COUNTS, 0.4, 0.3, 0.1), dtype=torch.float64))
    for i in range(len(COUNTS)):
        assert effective_number_weights(COUNTS, beta)[i].item() == pytest.approx(
            raw[i] * len(COUNTS) / sum(raw), rel=1e-6)
    assert ldam_margins(COUNTS).max().item() == pytest.approx(0.5)
    assert effective_number_weights(COUNTS).sum().item() == pytest.approx(len(COUNTS), rel=1e-6)
    torch.testing.assert_close(effective_number_weights(COUNTS, 0.0), torch.ones(len(COUNTS)))
    # beta -> 1: inverse class frequency
    inv = torch.tensor([1 / k for k in COUNTS])
    torch.testing.assert_close(effective_number_weights(COUNTS, 0.999999), inv * len(COUNTS) / inv.sum(),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad", [[3, 0, 2], [], [1.5, 2]])
@pytest.mark.parametrize("fn", [ldam_margins, logit_adjustment, adaptive_arc_margins, effective_number_weights])
def test_counts_must_be_positive_integers(fn, bad):
    with pytest.raises(ValueError, match="class"):
        fn(bad)


def test_beta_must_be_below_one():
    with pytest.raises(ValueError, match="beta"):
        effective_number_weights([1, 2], 1.0)


@pytest.mark.parametrize("fn", [cosface_logits, arcface_logits])
def test_per_sample_margin_tensor_equals_scalar_margin_row_by_row(fn):
    cos = cosines()
    margins = torch.linspace(0.1, 0.6, len(COUNTS))
    got = fn(cos, TARGETS, 16.0, per_sample(margins, TARGETS))
    for i, y in enumerate(TARGETS.tolist()):
        m = margins[y].item() if y >= 0 else 0.0
        torch.testing.assert_close(got[i], fn(cos[i:i + 1], TARGETS[i:i + 1], 16.0, m)[0])


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_weighted_cross_entropy_matches_a_loop(eps):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 4, generator=g) * 3
    labels = torch.tensor([0, 3, 3, 1, 2])
    weights = torch.tensor([0.5, 2.0, 1.0, 0.25])
    total = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        log_z = math.log(sum(math.exp(v) for v in row))
        ce = -sum(((1 - eps) if j == y else eps / 3) * (v - log_z) for j, v in enumerate(row))
        total += weights[y].item() * ce
    assert weighted_cross_entropy(logits, labels, weights, eps).item() == pytest.approx(total / 5, rel=1e-5)


OPTIONS = {"ldam": {"max_m": 0.3}, "balanced_softmax": {"tau": 0.5}, "adaptive_arc": {"a": 0.4, "lam": 0.3, "b": 0.1},
           "gcl": {"noise_mul": 0.4}}


def draws(method, n, c):
    """Standard normal draws for a random method (None for the others)."""
    return torch.randn(n, c, generator=torch.Generator().manual_seed(9)) if method.random else None


@pytest.mark.parametrize("name", sorted(COUNT_METHODS))
def test_every_method_matches_the_reference(name):
    method = COUNT_METHODS[name]
    assert set(OPTIONS[name]) == set(method.options)  # a new option needs its test here
    per_class = method.per_class(COUNTS, **OPTIONS[name])
    margin = 0.2 if method.uses_margin else 0.0
    normal = draws(method, 7, len(COUNTS))
    got = method.logits(cosines(), TARGETS, 16.0, per_class, margin, normal=normal)
    want = reference.count_method_logits(name, cosines(), TARGETS, 16.0, COUNTS, OPTIONS[name], margin,
                                         normal=normal)
    torch.testing.assert_close(got.double(), want, atol=2e-4, rtol=1e-5)
    # columns: a sharded / sampled subset of the classes keeps each class's vector
    columns = torch.tensor([5, 2, 0])
    local = torch.tensor([0, -1, 2, 1, -1, -1, 0])
    normal = draws(method, 7, 3)
    got = method.logits(cosines(c=3), local, 16.0, per_class, margin, columns=columns, normal=normal)
    want = reference.count_method_logits(name, cosines(c=3), local, 16.0, COUNTS, OPTIONS[name], margin,
                                         columns=columns, normal=normal)
    torch.testing.assert_close(got.double(), want, atol=2e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown options"):
        method.per_class(COUNTS, gamma=1.0)


def test_method_defaults_are_the_papers():
    assert COUNT_METHODS["ldam"].options == {"max_m": 0.5}
    assert COUNT_METHODS["balanced_softmax"].options == {"tau": 1.0}
    assert COUNT_METHODS["adaptive_arc"].options == {"a": 0.5, "lam": 0.25, "b": 0.05}
    assert COUNT_METHODS["gcl"].options == {"noise_mul": 0.5}


# ---------------------------------------------------------------------------- GCL
def test_gcl_amplitudes_follow_the_log_counts():
    from leap_plugin.core.longtail import gcl_amplitudes

    got = gcl_amplitudes(COUNTS, 0.5)
    torch.testing.assert_close(got.double(), torch.tensor(reference.gcl_amplitudes(COUNTS, 0.5), dtype=torch.float64))
    assert got[COUNTS.index(max(COUNTS))] == 0.0 and got[COUNTS.index(min(COUNTS))] == pytest.approx(0.5)
    # every class equally frequent: no noise at all (the formula would be 0 / 0)
    assert torch.equal(gcl_amplitudes([7, 7, 7]), torch.zeros(3))


def test_gcl_logits_match_the_reference_and_noise_every_column():
    method = COUNT_METHODS["gcl"]
    normal = torch.randn(7, len(COUNTS), generator=torch.Generator().manual_seed(2))
    per_class = method.per_class(COUNTS, noise_mul=0.5)
    got = method.logits(cosines(), TARGETS, 30.0, per_class, 0.1, normal=normal)
    want = reference.gcl_logits(cosines(), TARGETS, 30.0, COUNTS, 0.5, normal, margin=0.1)
    torch.testing.assert_close(got.double(), want, atol=2e-4, rtol=1e-5)
    # the target column is noised too (then the margin); the most frequent class is never
    moved = (got / 30.0 - cosines()).abs() > 1e-6
    assert moved[:, COUNTS.index(1)].all() and not moved[:, COUNTS.index(40)][TARGETS != 0].any()


def test_gcl_noise_has_the_papers_size():
    from leap_plugin.core.longtail import gcl_noise

    torch.manual_seed(0)
    eps = gcl_noise(torch.randn(200000))
    # |N(0, (1/3)^2)| clamped at 1 (3 sigma): mean sqrt(2 / pi) / 3
    assert eps.mean().item() == pytest.approx(math.sqrt(2 / math.pi) / 3, rel=0.01)
    assert eps.max().item() <= 1.0 and eps.min().item() >= 0.0
    # drawn from torch's generator when no draws are passed
    method = COUNT_METHODS["gcl"]
    per_class = method.per_class(COUNTS)
    torch.manual_seed(5)
    a = method.logits(cosines(), TARGETS, 30.0, per_class)
    torch.manual_seed(5)
    b = method.logits(cosines(), TARGETS, 30.0, per_class, normal=torch.randn(7, len(COUNTS)))
    assert torch.equal(a, b)
