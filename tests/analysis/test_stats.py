"""The angle statistics of :mod:`leap_plugin.analysis.stats` against hand-computed values
and brute-force loops, and the small-sample bias of the paper's statistic (Sec. 1)."""
import math

import numpy as np
import pytest
import torch

from leap_plugin.analysis.stats import (
    angle_statistics, center_angles, group_mean_var, head_tail_summary, matched_center_angles, mean_ci,
    pairwise_angle_mean,
)


def unit(deg):
    r = math.radians(deg)
    return [math.cos(r), math.sin(r)]


def angle(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return math.acos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))


@pytest.fixture
def plane():
    """2-D features at known angles. Class 0: +-10 deg. Class 1: 0, 30, 60 deg (scaled:
    lengths must not matter). Class 2: a single sample."""
    feats = [unit(10), unit(-10), unit(0), [3 * x for x in unit(30)], unit(60), unit(123)]
    return torch.tensor(feats), torch.tensor([0, 0, 1, 1, 1, 2])


def test_hand_checkable_angles(plane):
    feats, labels = plane
    d = math.radians
    # Class 1: the center points at 30 deg, so the angles are 30, 0, 30 deg.
    assert torch.allclose(center_angles(feats, labels, 3),
                          torch.tensor([d(10), d(10), d(30), 0, d(30), 0], dtype=torch.float64), atol=1e-7)
    mean, var, n = group_mean_var(center_angles(feats, labels, 3), labels, 3)
    assert torch.allclose(mean, torch.tensor([d(10), d(20), 0], dtype=torch.float64), atol=1e-7)
    # Unbiased variance of (30, 0, 30) deg = 300 deg^2; one sample has none.
    assert torch.allclose(var[:2], torch.tensor([0, d(1) ** 2 * 300], dtype=torch.float64), atol=1e-9)
    assert math.isnan(var[2]) and n.tolist() == [2, 3, 1]
    # Pairs of class 1: 30, 60, 30 deg.
    pair = pairwise_angle_mean(feats, labels, 3)
    assert torch.allclose(pair[:2], torch.tensor([d(20), d(40)], dtype=torch.float64), atol=1e-7)
    assert math.isnan(pair[2])
    # Leave-one-out, class 1: 0 deg against the mean of 30 and 60 (45 deg) etc.
    loo = center_angles(feats, labels, 3, leave_one_out=True)
    assert torch.allclose(loo[:5], torch.tensor([d(20), d(20), d(45), 0, d(45)], dtype=torch.float64), atol=1e-7)
    assert math.isnan(loo[5])


def test_class_sizes_matter_only_through_labels(plane):
    feats, labels = plane
    with_empty = center_angles(feats, labels, 5)  # classes 3 and 4 have no sample
    assert torch.allclose(with_empty, center_angles(feats, labels, 3))


@pytest.fixture
def uneven():
    gen = torch.Generator().manual_seed(0)
    sizes = [1, 2, 3, 7, 12, 30]
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    labels = labels[torch.randperm(len(labels), generator=gen)]
    return torch.randn(len(labels), 16, generator=gen), labels


def test_leave_one_out_equals_brute_force(uneven):
    feats, labels = uneven
    fast = center_angles(feats, labels, 6, leave_one_out=True)
    f = torch.nn.functional.normalize(feats.double(), dim=1).numpy()
    for n in range(len(labels)):
        others = [m for m in range(len(labels)) if labels[m] == labels[n] and m != n]
        if not others:
            assert math.isnan(fast[n])
            continue
        assert fast[n].item() == pytest.approx(angle(f[n], f[others].mean(0)), abs=1e-9)


@pytest.mark.parametrize("max_elements", [1 << 24, 1])  # one block / one class per block
def test_pairwise_equals_brute_force(uneven, max_elements):
    feats, labels = uneven
    fast = pairwise_angle_mean(feats, labels, 6, max_elements=max_elements)
    for c in range(6):
        idx = torch.nonzero(labels == c).flatten().tolist()
        pairs = [angle(feats[a], feats[b]) for i, a in enumerate(idx) for b in idx[i + 1:]]
        if pairs:
            assert fast[c].item() == pytest.approx(np.mean(pairs), abs=1e-9)
        else:
            assert math.isnan(fast[c])


def test_group_mean_var_ignores_nan():
    values = torch.tensor([1.0, math.nan, 3.0, 5.0, 2.0])
    mean, var, n = group_mean_var(values, torch.tensor([0, 0, 0, 1, 2]), 4)
    assert mean[:3].tolist() == [2.0, 5.0, 2.0] and math.isnan(mean[3])
    assert var[0].item() == 2.0 and math.isnan(var[1]) and n.tolist() == [2, 1, 1, 0]


def test_mean_ci_student_t():
    # sd of 1..4 = 1.290994, t_{0.975, 3} = 3.182446: half-width 3.182446 * 1.290994 / 2.
    s = mean_ci(torch.tensor([1.0, 2.0, math.nan, 3.0, 4.0]))
    assert s["mean"] == 2.5 and s["n"] == 4
    assert s["sd"] == pytest.approx(1.290994, abs=1e-6)
    assert s["ci"] == pytest.approx(2.054260, abs=1e-5)
    assert mean_ci([0.3]) == {"mean": 0.3, "ci": None, "sd": None, "n": 1}
    assert mean_ci(torch.tensor([math.nan]))["mean"] is None


def test_matched_size_of_whole_class_is_the_paper_statistic(uneven):
    feats, labels = uneven
    mean, var = matched_center_angles(feats, labels, 6, size=7, draws=3, seed=1)
    full_mean, full_var, _ = group_mean_var(center_angles(feats, labels, 6), labels, 6)
    # Class 3 has exactly 7 samples: every draw takes all of them.
    assert mean[3].item() == pytest.approx(full_mean[3].item()) and var[3].item() == pytest.approx(full_var[3].item())
    assert torch.isnan(mean[:3]).all()  # fewer than 7 samples
    assert torch.isfinite(mean[3:]).all()
    again, _ = matched_center_angles(feats, labels, 6, size=7, draws=3, seed=1)
    assert torch.equal(mean.nan_to_num(), again.nan_to_num())
    with pytest.raises(ValueError, match="at least 2"):
        matched_center_angles(feats, labels, 6, size=1)


def test_head_tail_split_and_ratios(plane):
    feats, labels = plane
    counts = torch.tensor([2, 3, 1])
    stats = angle_statistics(feats, labels, counts, tail_threshold=2)
    assert stats.matched_size is None  # lower median of the tail sizes (2, 1) is 1: nothing to match
    summary = head_tail_summary(stats, tail_threshold=2)
    # K_i = T is a tail class.
    assert summary["head"]["classes"] == 1 and summary["tail"]["classes"] == 2
    assert summary["head"]["center_angle_mean"]["mean"] == pytest.approx(math.radians(20))
    assert summary["tail"]["center_angle_mean"]["mean"] == pytest.approx(math.radians(5))
    assert summary["tail_head_ratio"]["center_angle_mean"] == pytest.approx(0.25)
    assert summary["tail_head_ratio"]["matched_center_angle_mean"] is None
    assert "matched_center_angle_mean" not in summary["tail"]


def test_paper_statistic_depends_on_sample_count_pairwise_does_not():
    """Equal true spread (one center + Gaussian noise, normalised, 64-d), K = 4 vs K = 40.

    The angle to the sample center shrinks like sqrt(1 - 1/K) (each sample pulls its
    center by 1/K): tail/head ratio about sqrt(0.75 / 0.975) = 0.877, and the variance
    shrinks too (ratio 0.58 to 0.79 over seeds 0-9). The pairwise angle
    has no center and no bias (ratio 1 within 3%); the head re-measured on 4 samples
    matches the tail (within 3%); leaving one out overshoots for small K.
    """
    gen = torch.Generator().manual_seed(0)
    classes, dim = 120, 64
    counts = torch.tensor([4, 40]).repeat_interleave(classes // 2)
    centers = torch.nn.functional.normalize(torch.randn(classes, dim, generator=gen), dim=1)
    labels = torch.repeat_interleave(torch.arange(classes), counts)
    feats = centers[labels] + 0.07 * torch.randn(len(labels), dim, generator=gen)
    ratio = head_tail_summary(angle_statistics(feats, labels, counts, tail_threshold=10), 10)["tail_head_ratio"]
    assert ratio["center_angle_mean"] == pytest.approx(math.sqrt(0.75 / 0.975), abs=0.03)
    assert ratio["center_angle_mean"] < 0.92
    assert ratio["center_angle_var"] < 0.85  # the paper's variance gap, also from K alone
    assert ratio["pairwise_angle_mean"] == pytest.approx(1.0, abs=0.03)
    assert ratio["matched_center_angle_mean"] == pytest.approx(1.0, abs=0.03)
    assert ratio["loo_angle_mean"] > 1.08
