"""``ElasticMarginLoss`` (ElasticFace behind arcface_torch's margin contract) and GCL through
``LongTailMarginLoss``: against the plain reference, inside LeapPartialFC, and from a config."""
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import reference
from leap_plugin.face import ElasticMarginLoss, LeapPartialFC, LongTailMarginLoss, peer_margin_loss
from leap_plugin.face.config import validate
from leap_plugin.validation import ConfigError

COUNTS = [40, 10, 3, 1, 7]
LABELS = torch.tensor([0, 3, -1, 4, 1])


def _cos():
    g = torch.Generator().manual_seed(1)
    return torch.rand(5, len(COUNTS), generator=g) * 1.6 - 0.8


@pytest.mark.parametrize("plus", [False, True])
@pytest.mark.parametrize("margin_list,kind,mean", [((1.0, 0.5, 0.0), "arc", 0.5), ((1.0, 0.0, 0.35), "cos", 0.35)])
def test_elastic_margin_loss_matches_the_reference(margin_list, kind, mean, plus):
    loss = ElasticMarginLoss(64.0, *margin_list, plus=plus)
    assert loss.kind == kind and loss.std == {False: 0.05, True: 0.0175 if kind == "arc" else 0.02}[plus]
    normal = torch.randn(5, generator=torch.Generator().manual_seed(3))
    got = loss(_cos(), LABELS.reshape(-1, 1), normal=normal)
    want = reference.elastic_logits(kind, _cos(), LABELS, 64.0, mean, loss.std, normal, plus)
    torch.testing.assert_close(got.double(), want, atol=1e-3, rtol=1e-5)
    # without draws passed in: torch's global generator, one draw per row
    torch.manual_seed(7)
    a = loss(_cos(), LABELS)
    torch.manual_seed(7)
    torch.testing.assert_close(a, loss(_cos(), LABELS, normal=torch.randn(5)))


@pytest.mark.parametrize("margin", [ElasticMarginLoss(16.0, 1.0, 0.0, 0.35), LongTailMarginLoss(16.0, COUNTS, "gcl")])
def test_partial_fc_loss_is_cross_entropy_of_the_random_margin_logits(margin):
    """One process, LEAP off: the loss is the cross entropy of the margin's logits with the
    draws LeapPartialFC hands it (the same on every rank), and the gradient is exact."""
    torch.manual_seed(0)
    pfc = LeapPartialFC(margin, 6, len(COUNTS), enabled=False, seed=4)
    emb = torch.randn(5, 6, requires_grad=True)
    extra = {"normal": pfc._normal(5, 0, len(COUNTS), emb.device, stream=1) if margin.draws == "logit"
             else pfc._row_normal(5, emb.device, stream=1)[:, 0]}
    if isinstance(margin, LongTailMarginLoss):
        extra["columns"] = torch.arange(len(COUNTS))
    loss = pfc(emb, LABELS)
    ref_emb = emb.detach().clone().requires_grad_()
    cos = F.linear(F.normalize(ref_emb), F.normalize(pfc.weight.detach()))
    keep = LABELS >= 0
    ref = F.cross_entropy(margin(cos, LABELS, **extra)[keep], LABELS[keep])
    torch.testing.assert_close(loss, ref)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(emb.grad, ref_emb.grad)
    # a new step draws anew
    assert pfc(emb, LABELS).item() != pytest.approx(loss.item(), abs=1e-6)


def test_bad_elastic_arguments_fail_clearly():
    with pytest.raises(ValueError, match="mean margin"):
        ElasticMarginLoss(64.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="margin_list"):
        ElasticMarginLoss(64.0, 1.0, 0.5, 0.35)
    with pytest.raises(ValueError, match="std"):
        ElasticMarginLoss(64.0, 1.0, 0.5, 0.0, std=-0.1)


def _config(**kw):
    return validate({"rec": "/data/faces", "output": "/tmp/out", **kw})


def test_config_key_long_tail_loss_takes_elastic_face_and_gcl():
    cfg = _config(margin_list=(1.0, 0.0, 0.35), long_tail_loss={"method": "elastic_face", "plus": True})
    assert cfg.long_tail_loss == {"method": "elastic_face", "std": None, "plus": True}
    options = dict(cfg.long_tail_loss)
    loss = peer_margin_loss(64.0, COUNTS, options.pop("method"), cfg.margin_list, **options)
    assert isinstance(loss, ElasticMarginLoss) and (loss.kind, loss.mean, loss.plus) == ("cos", 0.35, True)
    cfg = _config(margin_list=(1.0, 0.0, 0.0), long_tail_loss={"method": "gcl", "noise_mul": 0.3})
    assert cfg.long_tail_loss == {"method": "gcl", "noise_mul": 0.3}
    with pytest.raises(ConfigError, match="margin_list.*ElasticFace"):
        _config(margin_list=(1.0, 0.0, 0.0), long_tail_loss={"method": "elastic_face"})
    with pytest.raises(ConfigError, match="long_tail_loss.std"):
        _config(long_tail_loss={"method": "elastic_face", "std": -1})
    with pytest.raises(ConfigError, match="long_tail_loss.plus"):
        _config(long_tail_loss={"method": "elastic_face", "plus": "yes"})
