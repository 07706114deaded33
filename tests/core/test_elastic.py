"""ElasticFace (core.elastic) against the plain reference: values, gradients, the draws'
mean and std, and the "+" pairing."""
import math

import pytest
import torch

from tests.helpers import reference
from leap_plugin.core.elastic import elastic_logits, elastic_margins, pair_by_cosine, paper_std, target_cosines

TARGETS = torch.tensor([0, 4, 3, -1, 5, 1, 2])


def cosines(n=7, c=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, generator=g) * 1.6 - 0.8  # theta_y + margin stays below pi


def normals(n=7, seed=1):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("plus", [False, True])
@pytest.mark.parametrize("kind,mean", [("arc", 0.5), ("cos", 0.35)])
def test_values_match_the_reference(kind, mean, plus):
    std = 0.05
    got = elastic_logits(kind, cosines(), TARGETS, 16.0, mean, std, plus, normals())
    want = reference.elastic_logits(kind, cosines(), TARGETS, 16.0, mean, std, normals(), plus)
    torch.testing.assert_close(got.double(), want, atol=2e-4, rtol=1e-5)


@pytest.mark.parametrize("kind,mean", [("arc", 0.5), ("cos", 0.35)])
def test_gradient_is_the_exact_derivative_of_plain_torch(kind, mean):
    cos = cosines().double().requires_grad_()
    got = elastic_logits(kind, cos.float(), TARGETS, 16.0, mean, 0.05, normal=normals())
    weights = torch.randn(got.shape, generator=torch.Generator().manual_seed(4))
    (g_got,) = torch.autograd.grad((got * weights).sum(), cos)

    cos2 = cosines().double().requires_grad_()
    margins = mean + 0.05 * normals().double()
    rows = (TARGETS >= 0).nonzero(as_tuple=True)[0]
    target = cos2[rows, TARGETS[rows]]
    if kind == "arc":
        new = torch.cos(torch.acos(target) + margins[rows])
    else:
        new = target - margins[rows]
    plain = cos2.index_put((rows, TARGETS[rows]), new) * 16.0
    (g_want,) = torch.autograd.grad((plain * weights.double()).sum(), cos2)
    torch.testing.assert_close(g_got, g_want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind,mean", [("arc", 0.5), ("cos", 0.35)])
def test_draws_have_the_papers_mean_and_std(kind, mean):
    n = 20000
    cos = torch.full((n, 2), 0.3)
    labels = torch.zeros(n, dtype=torch.long)
    torch.manual_seed(0)
    out = elastic_logits(kind, cos, labels, 1.0, mean, 0.05)[:, 0].double()
    margins = torch.acos(out) - math.acos(0.3) if kind == "arc" else 0.3 - out
    assert margins.mean().item() == pytest.approx(mean, abs=0.002)
    assert margins.std().item() == pytest.approx(0.05, rel=0.03)
    # the other column keeps its cosine exactly
    assert torch.equal(elastic_logits(kind, cos, labels, 1.0, mean, 0.05)[:, 1], cos[:, 1])


def test_plus_gives_the_smallest_margin_to_the_highest_cosine():
    margins = torch.tensor([0.3, 0.1, 0.5, 0.2])
    cos_y = torch.tensor([0.9, 0.1, 0.5, -0.2])
    assert pair_by_cosine(margins, cos_y).tolist() == pytest.approx([0.1, 0.3, 0.2, 0.5])
    # rows without a class (NaN) keep their own draw and are left out of the sort
    got = elastic_margins(torch.tensor([3.0, 1.0, -1.0]), 0.5, 0.1, torch.tensor([0.2, float("nan"), 0.8]))
    assert got.tolist() == pytest.approx([0.8, 0.6, 0.4])


def test_rows_without_a_target_keep_plain_cosines_and_target_cosines_say_nan():
    got = elastic_logits("arc", cosines(), TARGETS, 16.0, 0.5, 0.05, normal=normals())
    torch.testing.assert_close(got[3], 16.0 * cosines()[3])
    t = target_cosines(cosines(), TARGETS)
    assert math.isnan(t[3]) and t[0] == cosines()[0, 0]


def test_paper_stds_and_bad_kind():
    assert (paper_std("arc"), paper_std("cos"), paper_std("arc", True), paper_std("cos", True)) == \
        (0.05, 0.05, 0.0175, 0.02)
    with pytest.raises(ValueError, match="kind"):
        elastic_logits("sphere", cosines(), TARGETS, 16.0, 0.5, 0.05)
