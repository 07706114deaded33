"""Eq. 7-8 and the alpha draw, against straightforward per-element reference math."""
import math

import pytest
import torch

from tests.helpers import reference

from leap_plugin.core.cloud import COS_EPS, arcface_logits, clouded_logits, cosface_logits, perturbed_cos, sample_alpha


@pytest.mark.parametrize("mode_cols", [7, 1])
@pytest.mark.parametrize("kind", ["cos", "arc"])
def test_fixed_alpha_matches_hand_computation(kind, mode_cols):
    g = torch.Generator().manual_seed(0)
    cos = torch.rand(5, 7, generator=g) * 2 - 1
    cos[0, 0], cos[1, 2] = -0.999, 0.999  # near the clip boundaries
    labels = torch.tensor([0, 2, -1, 6, 3])
    alpha = torch.randn(5, mode_cols, generator=g) * 0.8
    alpha[0, 0] = 3.0   # theta + alpha > pi: clipped to pi
    alpha[1, 0] = -3.0  # theta + alpha < 0: clipped to 0
    fn = cosface_logits if kind == "cos" else arcface_logits
    margin = 0.2
    got = fn(cos, labels, 24.0, margin, alpha)
    want = reference.margin_logits(cos, labels, 24.0, kind, margin, alpha)
    torch.testing.assert_close(got.double(), want, atol=2e-4, rtol=1e-5)


def test_clipping_saturates_at_zero_and_pi():
    cos = torch.tensor([[-0.99, 0.99]])
    labels = torch.tensor([-1])
    out = cosface_logits(cos, labels, 1.0, 0.0, torch.tensor([[2.0, -2.0]]))
    torch.testing.assert_close(out, torch.tensor([[-1.0, 1.0]]))


def test_no_alpha_is_plain_cosface_and_arcface():
    cos = torch.tensor([[0.5, -0.2, 0.1], [0.3, 0.9, -0.7]])
    labels = torch.tensor([0, -1])
    torch.testing.assert_close(cosface_logits(cos, labels, 10.0, 0.3),
                               10.0 * torch.tensor([[0.2, -0.2, 0.1], [0.3, 0.9, -0.7]]))
    arc = arcface_logits(cos, labels, 10.0, 0.3)
    torch.testing.assert_close(arc[0, 0], torch.tensor(10.0 * math.cos(math.acos(0.5) + 0.3)))
    # non-target logits are the input cosines exactly, not an arccos round trip
    assert torch.equal(arc[0, 1:], 10.0 * cos[0, 1:]) and torch.equal(arc[1], 10.0 * cos[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fn", [cosface_logits, arcface_logits])
def test_gradients_finite_at_plus_minus_one(fn, dtype):
    cos = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.5]], dtype=dtype, requires_grad=True)
    labels = torch.tensor([0, 1])
    for alpha in (None, torch.tensor([[0.1, -0.1, 0.2], [0.3, 0.0, -0.4]])):
        out = fn(cos, labels, 16.0, 0.2, alpha)
        assert out.dtype == dtype and torch.isfinite(out).all()
        (grad,) = torch.autograd.grad(out.float().sum(), cos)
        assert torch.isfinite(grad).all()


def test_sample_alpha_shapes_spread_and_zero_variance():
    g = torch.Generator().manual_seed(1)
    var = torch.tensor([0.0, 0.04, 0.25])
    a = sample_alpha(var.repeat(2000), 50, "logit", generator=g)
    assert a.shape == (6000, 50)
    a = a.view(2000, 3, 50)
    assert torch.equal(a[:, 0], torch.zeros_like(a[:, 0]))
    assert abs(a[:, 1].std().item() - 0.2) < 0.005 and abs(a[:, 2].std().item() - 0.5) < 0.01
    s = sample_alpha(var, 50, "sample", generator=g)
    assert s.shape == (3, 1)
    with pytest.raises(ValueError, match="alpha_mode"):
        sample_alpha(var, 5, "batch")


def arccos_form(cos, alpha):
    """The direct form of Eq. 7-8's angle arithmetic: cos(clip(arccos(cos) + alpha))."""
    theta = torch.acos(cos.clamp(-1 + COS_EPS, 1 - COS_EPS))
    return torch.cos((theta + alpha).clamp(0.0, math.pi))


def test_perturbed_cos_equals_the_arccos_form_in_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    cos = torch.cat([torch.rand(400, generator=g) * 2 - 1,
                     torch.tensor([1.0, -1.0, 1 - 1e-7, -1 + 1e-7, 0.0, 0.5, -0.5, 0.999, -0.999])])
    alpha = torch.cat([torch.randn(400, generator=g) * 1.5,
                       torch.tensor([0.3, -0.3, -4.0, 4.0, math.pi, -math.pi, 0.0, -0.1, 0.1])])
    # both sides of both clips are in the sample
    theta = torch.acos(cos.clamp(-1 + COS_EPS, 1 - COS_EPS))
    assert ((theta + alpha) < 0).sum() > 10 and ((theta + alpha) > math.pi).sum() > 10
    x = cos.clone().double().requires_grad_()
    fast = perturbed_cos(x, alpha.double())
    ref_x = cos.clone().double().requires_grad_()
    ref = arccos_form(ref_x, alpha.double())
    # float32 inside; near cos = +-1 the float32 arccos form is no closer to the float64 truth
    torch.testing.assert_close(fast.double(), ref, atol=1e-5, rtol=0)
    (g_fast,) = torch.autograd.grad(fast.sum(), x)
    (g_ref,) = torch.autograd.grad(ref.sum(), ref_x)
    torch.testing.assert_close(g_fast.double(), g_ref, atol=1e-3, rtol=1e-4)
    assert fast.dtype == torch.float32  # the trigonometry runs in float32


@pytest.mark.parametrize("fn", [cosface_logits, arcface_logits])
def test_clouded_logits_touch_only_rows_with_a_cloud(fn):
    g = torch.Generator().manual_seed(2)
    cos = torch.rand(6, 9, generator=g) * 1.6 - 0.8
    labels = torch.tensor([0, 3, -1, 8, 2, 5])
    variance = torch.tensor([0.0, 0.04, 0.0, 0.09, 0.0, 0.01])
    plain = fn(cos, labels, 16.0, 0.2)
    for mode in ("logit", "sample"):
        out = clouded_logits(fn, cos, labels, 16.0, 0.2, variance, mode, torch.Generator().manual_seed(5))
        rows = variance > 0
        assert torch.equal(out[~rows], plain[~rows])
        alpha = sample_alpha(variance[rows], 9, mode, torch.Generator().manual_seed(5))
        torch.testing.assert_close(out[rows], fn(cos[rows], labels[rows], 16.0, 0.2, alpha))
        assert (out[rows] - plain[rows]).abs().amax() > 0.01
    assert torch.equal(clouded_logits(fn, cos, labels, 16.0, 0.2, None), plain)
    assert torch.equal(clouded_logits(fn, cos, labels, 16.0, 0.2, torch.zeros(6)), plain)
    # per-sample margins follow their rows
    margins = torch.linspace(0.1, 0.6, 6)[:, None]
    out = clouded_logits(fn, cos, labels, 16.0, margins, variance, "logit", torch.Generator().manual_seed(5))
    alpha = sample_alpha(variance[variance > 0], 9, "logit", torch.Generator().manual_seed(5))
    torch.testing.assert_close(out[variance > 0], fn(cos[variance > 0], labels[variance > 0], 16.0,
                                                     margins[variance > 0], alpha))


@pytest.mark.parametrize("fn", [cosface_logits, arcface_logits])
def test_labels_outside_the_columns_are_refused(fn):
    with pytest.raises(ValueError, match="labels must be class ids"):
        fn(torch.zeros(2, 3), torch.tensor([0, -2]), 1.0, 0.1)
    with pytest.raises(ValueError, match="labels must be class ids"):
        fn(torch.zeros(2, 3), torch.tensor([3, 0]), 1.0, 0.1)


def test_no_grad_evaluation_is_bit_for_bit_the_autograd_one():
    g = torch.Generator().manual_seed(4)
    cos = torch.rand(64, 300, generator=g) * 2 - 1
    for alpha in (torch.randn(64, 300, generator=g) * 0.5, torch.randn(64, 1, generator=g) * 4.0):
        with_grad = perturbed_cos(cos.clone().requires_grad_(), alpha).detach()
        with torch.no_grad():
            assert torch.equal(perturbed_cos(cos, alpha), with_grad)


def test_fused_kernel_equals_the_reference_in_value_and_gradient():
    """torch.compile's fused kernel where a compiler is present (else the eager fallback,
    which must then equal the reference too)."""
    from leap_plugin.core import cloud

    g = torch.Generator().manual_seed(5)
    cos = torch.cat([torch.rand(200, generator=g) * 2 - 1, torch.tensor([1.0, -1.0, 0.999, -0.999])])
    alpha = torch.cat([torch.randn(200, generator=g) * 1.5, torch.tensor([-4.0, 4.0, 0.1, -0.1])])
    cloud.use_fused(True)
    try:
        x = cos.clone().requires_grad_()
        fused = perturbed_cos(x, alpha)
        (g_fused,) = torch.autograd.grad(fused.sum(), x)
    finally:
        cloud.use_fused(False)
    ref_x = cos.clone().double().requires_grad_()
    ref = arccos_form(ref_x, alpha.double())
    (g_ref,) = torch.autograd.grad(ref.sum(), ref_x)
    torch.testing.assert_close(fused.double(), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(g_fused.double(), g_ref, atol=1e-3, rtol=1e-4)


def _one_hot_forms(kind, cos, labels, scale, margin, alpha):
    """The one-hot expressions of Eq. 7-8 the first version computed (bit-for-bit reference)."""
    one_hot = torch.zeros_like(cos, dtype=torch.bool)
    idx = (labels != -1).nonzero(as_tuple=True)[0]
    one_hot[idx, labels[idx]] = True
    if kind == "cos":
        base = cos if alpha is None else perturbed_cos(cos, alpha)
        return scale * (base - margin * one_hot.to(cos.dtype))
    return scale * perturbed_cos(cos, alpha + margin * one_hot.to(torch.float32))


@pytest.mark.parametrize("kind", ["cos", "arc"])
@pytest.mark.parametrize("alpha_cols", [0, 1, 9])
@pytest.mark.parametrize("per_row", [False, True])
def test_target_scatter_equals_the_one_hot_form_bit_for_bit(kind, alpha_cols, per_row):
    """The logits and their gradients equal those of the one-hot form exactly (so a run
    trains bit for bit as before the rewrite)."""
    if kind == "arc" and alpha_cols == 0:
        pytest.skip("ArcFace without alpha never used the one-hot form")
    g = torch.Generator().manual_seed(7)
    cos = torch.rand(6, 9, generator=g) * 1.6 - 0.8
    labels = torch.tensor([0, 3, -1, 8, 2, 5])
    margin = torch.linspace(0.1, 0.6, 6)[:, None] if per_row else 0.3
    alpha = None if alpha_cols == 0 else torch.randn(6, alpha_cols, generator=g) * 0.4
    fn = cosface_logits if kind == "cos" else arcface_logits
    a = cos.clone().requires_grad_()
    b = cos.clone().requires_grad_()
    got, want = fn(a, labels, 16.0, margin, alpha), _one_hot_forms(kind, b, labels, 16.0, margin, alpha)
    assert torch.equal(got, want)
    weights = torch.randn(6, 9, generator=g)
    (ga,), (gb,) = torch.autograd.grad((got * weights).sum(), a), torch.autograd.grad((want * weights).sum(), b)
    assert torch.equal(ga, gb)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("mode", ["logit", "sample"])
def test_fast_gradient_is_bit_for_bit_autograd_through_the_reference(dtype, mode):
    """perturbed_cos with a cos that needs a gradient runs _PerturbedCos (in-place forward,
    hand-written backward); it must give autograd's values and gradients through
    _perturbed_cos exactly, clips on both sides, |alpha| >= pi and clamp boundaries
    included, so that training numbers do not move by a bit."""
    from leap_plugin.core.cloud import _perturbed_cos

    g = torch.Generator().manual_seed(7)
    for scale in (0.05, 0.3, 1.5, 4.0):
        cos = torch.rand(48, 200, generator=g) * 2 - 1
        cos[0, :6] = torch.tensor([1.0, -1.0, 1 - 1e-7, -1 + 1e-7, 0.0, 0.9999])
        alpha = torch.randn(48, 200 if mode == "logit" else 1, generator=g) * scale
        weights = torch.randn(48, 200, generator=g)
        x_ref = cos.to(dtype).requires_grad_()
        ref = _perturbed_cos(x_ref, alpha)
        (ref * weights).sum().backward()
        x = cos.to(dtype).requires_grad_()
        fast = perturbed_cos(x, alpha)
        assert fast.grad_fn is not None and "PerturbedCos" in type(fast.grad_fn).__name__
        (fast * weights).sum().backward()
        assert torch.equal(fast.detach(), ref.detach())
        assert torch.equal(x.grad, x_ref.grad) and x.grad.dtype == dtype
        if scale >= 1.5:  # the clipped logits are in the sample and get no gradient
            theta = torch.acos(x.detach().float().clamp(-1 + COS_EPS, 1 - COS_EPS))
            clipped = ((theta + alpha) < 0) | ((theta + alpha) > math.pi)
            assert clipped.sum() > 10 and torch.equal(x.grad[clipped], torch.zeros_like(x.grad[clipped]))


def test_fast_gradient_refuses_a_second_backward_through_the_same_graph():
    """Its backward works in the saved tensors' memory; autograd's version check makes a
    second pass (retain_graph) an error, never a wrong gradient."""
    x = (torch.rand(4, 6) * 2 - 1).requires_grad_()
    y = perturbed_cos(x, torch.randn(4, 6) * 0.3).sum()
    y.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()
