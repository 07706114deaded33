"""LeapMarginLoss against an independent reference of arcface_torch's CombinedMarginLoss and of
LEAP's Eq. 7-8."""
import math

import pytest
import torch

from leap_plugin.face import LeapMarginLoss

ARCFACE, COSFACE = (1.0, 0.5, 0.0), (1.0, 0.0, 0.4)


def reference_combined_margin(cos, labels, s, m1, m2, m3):
    """arcface_torch's CombinedMarginLoss from its formulas: ArcFace (m3 = 0) replaces the target
    cosine by cos(arccos(x) + m2) with the arccos/cos outside autograd, so the values change but
    the gradient is s; CosFace subtracts m3 from the target cosine. Labels of -1 are untouched."""
    rows = torch.nonzero(labels.reshape(-1) != -1).reshape(-1)
    cols = labels.reshape(-1)[rows]
    if m3 == 0:
        values = cos.detach().clone()
        values[rows, cols] = torch.cos(torch.arccos(values[rows, cols]) + m2)
        return s * cos + (s * values - s * cos).detach()
    out = cos.clone()
    out[rows, cols] = out[rows, cols] - m3
    return s * out


def reference_leap(cos, labels, s, m_a, m_c, alpha):
    """Eq. 7 (m_c > 0) / Eq. 8: theta + alpha (+ m_a on the target) clipped to [0, pi]."""
    theta = torch.arccos(cos)
    target = torch.zeros_like(cos, dtype=torch.bool)
    rows = torch.nonzero(labels != -1).reshape(-1)
    target[rows, labels[rows]] = True
    angle = (theta + alpha + m_a * target).clamp(0, math.pi)
    return s * (torch.cos(angle) - m_c * target)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    # theta_y + m_a stays below pi here (cos > -0.85), where arcface_torch does not clip.
    cos = torch.empty(6, 9).uniform_(-0.85, 0.98, generator=g)
    labels = torch.tensor([[3], [-1], [0], [8], [-1], [3]])
    return cos, labels


@pytest.mark.parametrize("margin_list", [ARCFACE, COSFACE])
def test_cloud_off_reproduces_combined_margin_loss(batch, margin_list):
    cos, labels = batch
    a = cos.clone().requires_grad_()
    b = cos.clone().requires_grad_()
    ours = LeapMarginLoss(64.0, *margin_list)(a, labels)
    ref = reference_combined_margin(b, labels, 64.0, *margin_list)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-5)
    weights = torch.randn_like(ours)
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("margin_list", [ARCFACE, COSFACE])
def test_fixed_alpha_gives_eq_7_and_8(batch, margin_list):
    cos, labels = batch
    alpha = torch.empty_like(cos).uniform_(-0.4, 0.4, generator=torch.Generator().manual_seed(1))
    alpha[0, 3] = 2.9  # theta + alpha past pi: clipped
    m_a, m_c = margin_list[1], margin_list[2]
    ref = reference_leap(cos.double(), labels.reshape(-1), 30.0, m_a, m_c, alpha.double()).float()
    for exact in (False, True):
        x = cos.clone().requires_grad_()
        out = LeapMarginLoss(30.0, *margin_list, exact_grad=exact)(x, labels, alpha=alpha)
        torch.testing.assert_close(out, ref, atol=2e-4, rtol=1e-5)
        out.sum().backward()
        if exact:
            y = cos.double().clone().requires_grad_()
            reference_leap(y, labels.reshape(-1), 30.0, m_a, m_c, alpha.double()).sum().backward()
            torch.testing.assert_close(x.grad, y.grad.float(), atol=1e-3, rtol=1e-3)
        else:
            torch.testing.assert_close(x.grad, torch.full_like(cos, 30.0))


def test_variance_clouds_only_its_rows_and_sample_mode_shares_alpha(batch):
    cos, labels = batch
    variance = torch.tensor([0.0, 0.04, 0.0, 0.09, 0.0, 0.0])
    loss = LeapMarginLoss(10.0, *COSFACE, alpha_mode="sample")
    plain = loss(cos, labels)
    out = loss(cos, labels, variance=variance, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[[0, 2, 4, 5]], plain[[0, 2, 4, 5]])
    assert not torch.allclose(out[[1, 3]], plain[[1, 3]])
    # Row 1 has no target here: every logit moved by the same angle.
    shift = torch.arccos(out[1] / 10.0) - torch.arccos(cos[1])
    torch.testing.assert_close(shift, shift[:1].expand_as(shift), atol=1e-4, rtol=0)
    again = loss(cos, labels, variance=variance, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, out)


def test_interclass_filtering_matches_arcface_torch(batch):
    cos, labels = batch
    out = LeapMarginLoss(64.0, *COSFACE, interclass_filtering_threshold=0.5)(cos, labels)
    filtered = torch.where(cos > 0.5, torch.zeros_like(cos), cos)
    rows = torch.tensor([0, 2, 3, 5])
    filtered[rows, labels.reshape(-1)[rows]] = cos[rows, labels.reshape(-1)[rows]]
    torch.testing.assert_close(out, reference_combined_margin(filtered, labels, 64.0, *COSFACE))


@pytest.mark.parametrize("margin_list", [(1.0, 0.5, 0.4), (1.35, 0.0, 0.0), (1.0, -0.1, 0.0)])
def test_unsupported_margin_lists_fail(margin_list):
    with pytest.raises(ValueError, match="margin_list"):
        LeapMarginLoss(64.0, *margin_list)


def test_labels_below_minus_one_are_refused():
    from leap_plugin.face import LeapMarginLoss, LongTailMarginLoss

    cos = torch.zeros(2, 4)
    for loss in (LeapMarginLoss(16.0, 1.0, 0.0, 0.35), LongTailMarginLoss(16.0, [2, 3, 4, 5], "ldam")):
        with pytest.raises(ValueError, match="labels must be class ids"):
            loss(cos, torch.tensor([0, -2]))
