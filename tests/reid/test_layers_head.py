"""LEAP classification layers and head against fastreid's stock ones."""
import pytest
import torch
from fastreid.layers import any_softmax

import leap_plugin  # noqa: F401
from leap_plugin.reid.layers import LeapArcSoftmax, LeapCosSoftmax


@pytest.mark.parametrize("leap_cls,stock_cls", [(LeapCosSoftmax, any_softmax.CosSoftmax),
                                                (LeapArcSoftmax, any_softmax.ArcSoftmax)])
def test_alpha_zero_reproduces_stock_layers(leap_cls, stock_cls):
    g = torch.Generator().manual_seed(0)
    cos = torch.rand(8, 6, generator=g) * 1.6 - 0.8  # theta_y + m stays below pi
    targets = torch.tensor([0, 1, 2, 3, 4, 5, -1, 2])
    stock = stock_cls(6, 24.0, 0.2)(cos.clone(), targets)
    leap = leap_cls(6, 24.0, 0.2)
    torch.testing.assert_close(leap(cos.clone(), targets), stock)
    torch.testing.assert_close(leap(cos.clone(), targets, variance=torch.zeros(8)), stock)
    # a clouded sample changes only its own row
    var = torch.zeros(8)
    var[3] = 0.05
    out = leap(cos.clone(), targets, variance=var)
    rows = (out - stock).abs().sum(1) > 1e-4
    assert rows.tolist() == [i == 3 for i in range(8)]


def test_layers_are_found_by_fastreid_name():
    assert any_softmax.LeapCosSoftmax is LeapCosSoftmax and "LeapArcSoftmax" in any_softmax.__all__


def test_leap_head_equals_embedding_head_at_inference_and_feeds_memory():
    from fastreid.config import get_cfg
    from fastreid.modeling.heads import build_heads

    cfg = get_cfg()
    cfg.MODEL.BACKBONE.FEAT_DIM = 32
    cfg.MODEL.HEADS.NUM_CLASSES = 5
    cfg.MODEL.HEADS.WITH_BNNECK = True
    cfg.MODEL.HEADS.NECK_FEAT = "after"
    cfg.MODEL.HEADS.CLS_LAYER = "LeapCosSoftmax"
    cfg.MODEL.HEADS.SCALE, cfg.MODEL.HEADS.MARGIN = 24, 0.2
    stock = build_heads(cfg)
    cfg.MODEL.HEADS.NAME = "LeapHead"
    cfg.MODEL.HEADS.LEAP.ENABLED = True
    head = build_heads(cfg)
    head.load_state_dict(stock.state_dict(), strict=False)
    x = torch.randn(6, 32, 2, 2)
    stock.eval(), head.eval()
    torch.testing.assert_close(head(x), stock(x))

    head.train()
    head.memory.set_class_counts([4, 4, 3, 2, 2])
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    out = head(x, targets)
    assert set(out) == {"cls_outputs", "pred_class_logits", "features"}
    assert head.memory.mem_fill.tolist() == [2, 2, 2, 0, 0]
    head.update_memory = False
    head(x, targets)
    assert head.memory.mem_fill.tolist() == [2, 2, 2, 0, 0]
