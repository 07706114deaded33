"""Eq. 6 and Eq. 9 on hand-computed examples."""
import pytest
import torch

from leap_plugin.core.cloud import sample_alpha
from leap_plugin.core.variance import cloud_variance, head_variance, pooled_variance, uniform_cloud

VAR = torch.tensor([0.09, 0.05, 0.01, 0.02, 0.50])
VALID = torch.tensor([True, True, True, True, False])
COUNTS = torch.tensor([30, 11, 4, 5, 100])

def paper_cloud(*args, **kwargs):
    """cloud_variance with the paper's scale 1 unless the test says otherwise."""
    kwargs.setdefault("cloud_scale", 1.0)
    return cloud_variance(*args, **kwargs)


def test_head_variance_eq6():
    # head (K > 10) with statistics: classes 0 and 1 -> (0.09 + 0.05) / 2; class 4 has none
    assert head_variance(VAR, VALID, COUNTS, 10).item() == pytest.approx(0.07)


def test_pooled_variance_eq9():
    want = (29 * 0.09 + 10 * 0.05 + 3 * 0.01 + 4 * 0.02) / (29 + 10 + 3 + 4)
    assert pooled_variance(VAR, VALID, COUNTS).item() == pytest.approx(want)


def test_full_version_clouds_every_class_below_the_pooled_variance():
    sigma2 = pooled_variance(VAR, VALID, COUNTS).item()
    got = paper_cloud(VAR, VALID, COUNTS, "full")
    want = [max(sigma2 - v, 0) if ok else 0 for v, ok in zip(VAR.tolist(), VALID.tolist())]
    torch.testing.assert_close(got, torch.tensor(want))
    assert got[0] == 0 and got[1] > 0 and got[4] == 0  # above sigma^2 / no statistics


def test_vanilla_version_clouds_tail_only():
    got = paper_cloud(VAR, VALID, COUNTS, "vanilla", tail_threshold=10)
    torch.testing.assert_close(got, torch.tensor([0.0, 0.0, 0.06, 0.05, 0.0]))


def test_empty_head_set_and_all_head_data_give_no_cloud():
    counts = torch.tensor([3, 4, 5, 2, 1])
    assert torch.count_nonzero(paper_cloud(VAR, VALID, counts, "vanilla", 10)) == 0
    counts = torch.tensor([30, 40, 50, 20, 11])
    assert torch.count_nonzero(paper_cloud(VAR, VALID, counts, "vanilla", 10)) == 0
    none = torch.zeros(5, dtype=torch.bool)
    assert torch.count_nonzero(paper_cloud(VAR, none, COUNTS, "full")) == 0
    assert torch.count_nonzero(paper_cloud(VAR, VALID, torch.ones(5, dtype=torch.long), "full")) == 0


def test_unknown_version():
    with pytest.raises(ValueError, match="version"):
        paper_cloud(VAR, VALID, COUNTS, "half")


@pytest.mark.parametrize("version", ["full", "vanilla"])
def test_cloud_scale_scales_the_std_of_the_draws_exactly(version):
    base = paper_cloud(VAR, VALID, COUNTS, version, 10)
    assert base.count_nonzero() > 0
    for scale in (0.0, 2.0, 3.0):
        scaled = paper_cloud(VAR, VALID, COUNTS, version, 10, cloud_scale=scale)
        torch.testing.assert_close(scaled, base * scale ** 2)
        # the same random numbers drawn with the scaled width: alpha scales exactly
        a1 = sample_alpha(base, 6, generator=torch.Generator().manual_seed(0))
        a2 = sample_alpha(scaled, 6, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(a2, a1 * scale)


def test_uniform_cloud_gives_every_class_with_statistics_the_mean_width():
    widths = paper_cloud(VAR, VALID, COUNTS, "full")
    positive = widths[widths > 0]
    got = paper_cloud(VAR, VALID, COUNTS, "full", cloud="uniform")
    # every class with statistics, head classes included; none without
    torch.testing.assert_close(got, torch.where(VALID, positive.mean(), 0.0))
    assert got[0] > 0 and got[4] == 0
    torch.testing.assert_close(paper_cloud(VAR, VALID, COUNTS, "full", cloud_scale=2.0, cloud="uniform"), got * 4)
    # no class clouded yet: nothing to spread
    assert uniform_cloud(torch.zeros(5), VALID).count_nonzero() == 0
    with pytest.raises(ValueError, match="cloud"):
        paper_cloud(VAR, VALID, COUNTS, "full", cloud="flat")


def test_vanilla_head_is_strictly_more_than_t():
    """Head = K_i > T: a class with exactly T samples is a tail class."""
    var = torch.tensor([0.09, 0.02, 0.01])
    valid = torch.ones(3, dtype=torch.bool)
    counts = torch.tensor([30, 10, 4])
    assert head_variance(var, valid, counts, 10).item() == pytest.approx(0.09)
    got = paper_cloud(var, valid, counts, "vanilla", tail_threshold=10)
    torch.testing.assert_close(got, torch.tensor([0.0, 0.07, 0.08]))
