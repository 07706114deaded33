"""``LongTailMarginLoss``: the peer methods behind arcface_torch's margin contract."""
import math

import pytest
import torch
import torch.nn.functional as F

from leap_plugin.face import LeapPartialFC, LongTailMarginLoss
from leap_plugin.face.config import validate
from leap_plugin.validation import ConfigError

COUNTS = [40, 10, 3, 1, 7]
S = 16.0


def _cos():
    g = torch.Generator().manual_seed(1)
    return torch.rand(4, len(COUNTS), generator=g) * 1.6 - 0.8


def _reference(method, cos, labels, m3=0.0, **opt):
    """Loop over rows and columns with the papers' formulas in plain Python floats."""
    out = torch.zeros_like(cos)
    total = sum(COUNTS)
    ldam = [k ** -0.25 for k in COUNTS]
    for n in range(cos.shape[0]):
        for j in range(cos.shape[1]):
            c, target = float(cos[n, j]), j == int(labels[n])
            if method == "ldam":  # m_j = C K_j^(-1/4), the rarest class at max_m
                m = opt.get("max_m", 0.5) * ldam[j] / max(ldam)
                out[n, j] = S * (c - m) if target else S * c
            elif method == "balanced_softmax":  # s (cos - m3 [target]) + tau log(K_j / sum K)
                out[n, j] = S * (c - (m3 if target else 0.0)) + opt.get("tau", 1.0) * math.log(COUNTS[j] / total)
            else:  # adaptive ArcFace: cos(theta + a K^-lam + b) on the target
                m = opt.get("a", 0.5) * COUNTS[j] ** -opt.get("lam", 0.25) + opt.get("b", 0.05)
                out[n, j] = S * math.cos(math.acos(c) + m) if target else S * c
    return out


@pytest.mark.parametrize("method, opt, m3", [
    ("ldam", {}, 0.0), ("ldam", {"max_m": 0.3}, 0.0),
    ("balanced_softmax", {}, 0.0), ("balanced_softmax", {"tau": 0.5}, 0.2),
    ("adaptive_arc", {}, 0.0), ("adaptive_arc", {"a": 0.3, "lam": 0.5, "b": 0.1}, 0.0),
])
def test_each_method_matches_the_hand_computed_logits(method, opt, m3):
    cos, labels = _cos(), torch.tensor([0, 3, 2, 4])
    loss = LongTailMarginLoss(S, COUNTS, method, (1.0, 0.0, m3), **opt)
    torch.testing.assert_close(loss(cos, labels.reshape(-1, 1)), _reference(method, cos, labels, m3, **opt),
                               atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("method", ["ldam", "balanced_softmax", "adaptive_arc"])
def test_columns_follow_the_global_class_of_each_column(method):
    """A sampled / sharded set of columns gets the margins and offsets of its classes."""
    cos, labels = _cos(), torch.tensor([0, 3, 2, 4])
    loss = LongTailMarginLoss(S, COUNTS, method)
    full = loss(cos, labels)
    columns = torch.tensor([1, 3, 4])  # class 0 and 2 elsewhere: rows 0 and 2 get label -1
    local = torch.tensor([-1, 1, -1, 2])
    torch.testing.assert_close(loss(cos[:, columns], local, columns=columns), full[:, columns])
    with pytest.raises(ValueError, match="columns="):
        loss(cos[:, columns], local)


def test_partial_fc_loss_is_cross_entropy_of_the_peer_logits():
    torch.manual_seed(0)
    margin = LongTailMarginLoss(S, COUNTS, "ldam")
    pfc = LeapPartialFC(margin, 6, len(COUNTS), enabled=False)
    emb = torch.randn(4, 6, requires_grad=True)
    labels = torch.tensor([0, 3, -1, 4])
    loss = pfc(emb, labels)
    ref_emb = emb.detach().clone().requires_grad_()
    cos = F.linear(F.normalize(ref_emb), F.normalize(pfc.weight.detach()))
    keep = labels >= 0
    ref = F.cross_entropy(margin(cos[keep], labels[keep]), labels[keep])
    torch.testing.assert_close(loss, ref)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(emb.grad, ref_emb.grad)
    # The per-class vectors travel with the checkpoint of the PartialFC.
    assert {"margin_loss.class_counts", "margin_loss.per_class"} <= set(pfc.state_dict())


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="method must be one of"):
        LongTailMarginLoss(S, COUNTS, "focal")
    with pytest.raises(ValueError, match=r"unknown options \['tau'\]"):
        LongTailMarginLoss(S, COUNTS, "ldam", tau=1.0)
    with pytest.raises(ValueError, match="margin_list"):
        LongTailMarginLoss(S, COUNTS, "ldam", (1.0, 0.5, 0.0))
    with pytest.raises(ValueError, match="K_i >= 1"):
        LongTailMarginLoss(S, [3, 0, 2], "adaptive_arc")


def _config(**kw):
    return validate({"rec": "/data/faces", "output": "/tmp/out", **kw})


def test_config_key_long_tail_loss():
    cfg = _config(margin_list=(1.0, 0.0, 0.0), long_tail_loss={"method": "adaptive_arc", "b": 0.1})
    assert cfg.long_tail_loss == {"method": "adaptive_arc", "a": 0.5, "lam": 0.25, "b": 0.1}
    assert _config().long_tail_loss is None
    with pytest.raises(ConfigError, match="long_tail_loss.method"):
        _config(margin_list=(1.0, 0.0, 0.0), long_tail_loss={"method": "focal"})
    with pytest.raises(ConfigError, match="unknown keys"):
        _config(margin_list=(1.0, 0.0, 0.0), long_tail_loss={"method": "ldam", "tau": 1})
    with pytest.raises(ConfigError, match="margin_list.*sets the margins itself"):
        _config(long_tail_loss={"method": "ldam"})  # default margin_list is ArcFace's
    with pytest.raises(ConfigError, match="alternative to LEAP"):
        _config(margin_list=(1.0, 0.0, 0.0), long_tail_loss={"method": "ldam"}, leap={"enabled": True})
