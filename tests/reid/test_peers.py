"""Peer long-tail methods (LDAM, LDAM-DRW, Balanced Softmax, dynamic-margin ArcFace,
class-balanced CE) against straightforward reference math, their config, their shipped
configs, and a few training iterations of each through LeapTrainer."""
import math
import os

import numpy as np
import pytest
import torch
from fastreid.config import get_cfg
from fastreid.utils.events import EventStorage

import leap_plugin  # noqa: F401
import market_data
from leap_plugin.reid.config import load_config
from leap_plugin.core.cloud import arcface_logits, cosface_logits
from leap_plugin.core.longtail import (
    adaptive_arc_margins,
    effective_number_weights,
    ldam_margins,
    logit_adjustment,
    per_sample,
    weighted_cross_entropy,
)
from leap_plugin.reid.config import ConfigError
from leap_plugin.reid.peers import (
    PEER_METHODS,
    AdaptiveArcSoftmax,
    BalancedSoftmax,
    EpochHook,
    LDAMSoftmax,
    LongTailBaseline,
    add_peer_config,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COUNTS = [40, 12, 7, 3, 1, 20]
BUILD_OPTS = ["MODEL.BACKBONE.PRETRAIN", "False", "SOLVER.AMP.ENABLED", "False",
              "MODEL.HEADS.NUM_CLASSES", "10", "MODEL.DEVICE", "cpu"]


def cosines(n=7, c=len(COUNTS), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, generator=g) * 1.6 - 0.8  # theta_y + margin stays below pi


TARGETS = torch.tensor([0, 4, 3, -1, 5, 1, 2])


# ------------------------------------------------------------------------- core math
def test_count_vectors_match_the_papers_formulas():
    k_min = min(COUNTS)
    total = sum(COUNTS)
    beta = 0.99
    raw = [(1 - beta) / (1 - beta ** k) for k in COUNTS]
    for i, k in enumerate(COUNTS):
        assert ldam_margins(COUNTS, 0.5)[i].item() == pytest.approx(0.5 * (k_min / k) ** 0.25, rel=1e-6)
        assert logit_adjustment(COUNTS, 0.7)[i].item() == pytest.approx(0.7 * math.log(k / total), rel=1e-6)
        arc = adaptive_arc_margins(COUNTS, 0.4, 0.3, 0.1)[i].item()
        assert arc == pytest.approx(0.4 * k ** -0.3 + 0.1, rel=1e-6)
        assert effective_number_weights(COUNTS, beta)[i].item() == pytest.approx(
            raw[i] * len(COUNTS) / sum(raw), rel=1e-6)
    assert ldam_margins(COUNTS).max().item() == pytest.approx(0.5)
    assert effective_number_weights(COUNTS).sum().item() == pytest.approx(len(COUNTS), rel=1e-6)
    torch.testing.assert_close(effective_number_weights(COUNTS, 0.0), torch.ones(len(COUNTS)))
    # beta -> 1: inverse class frequency
    inv = torch.tensor([1 / k for k in COUNTS])
    torch.testing.assert_close(effective_number_weights(COUNTS, 0.999999), inv * len(COUNTS) / inv.sum(),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad", [[3, 0, 2], []])
@pytest.mark.parametrize("fn", [ldam_margins, logit_adjustment, adaptive_arc_margins, effective_number_weights])
def test_counts_must_be_positive(fn, bad):
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


# ---------------------------------------------------------------------------- layers
def reference_logits(kind, cos, targets, s, m_cls=0.0, margins=None, offsets=None):
    """Per-element logits with Python floats."""
    out = np.empty(tuple(cos.shape))
    for i, y in enumerate(targets.tolist()):
        for j, c in enumerate(cos[i].tolist()):
            value = c
            if j == y and kind == "cos":
                value = c - (margins[y] if margins is not None else m_cls)
            if j == y and kind == "arc":
                value = math.cos(min(math.acos(c) + margins[y], math.pi))
            out[i, j] = s * value + (offsets[j] if offsets is not None else 0.0)
    return torch.from_numpy(out).float()


def layer(cls, **options):
    out = cls(len(COUNTS), 16.0, 0.2)
    for k, v in options.items():
        setattr(out, k, v)
    out.set_class_counts(COUNTS)
    return out


def test_ldam_layer():
    cos = cosines()
    margins = [0.3 * (min(COUNTS) / k) ** 0.25 for k in COUNTS]
    want = reference_logits("cos", cos, TARGETS, 16.0, margins=margins)
    torch.testing.assert_close(layer(LDAMSoftmax, max_m=0.3)(cos.clone(), TARGETS), want)


@pytest.mark.parametrize("margin", [0.0, 0.2])
def test_balanced_softmax_layer(margin):
    cos = cosines()
    lay = layer(BalancedSoftmax, tau=0.5)
    lay.m = margin
    offsets = [0.5 * math.log(k / sum(COUNTS)) for k in COUNTS]
    want = reference_logits("cos", cos, TARGETS, 16.0, m_cls=margin, offsets=offsets)
    torch.testing.assert_close(lay(cos.clone(), TARGETS), want)


def test_adaptive_arc_layer():
    cos = cosines()
    margins = [0.5 * k ** -0.25 + 0.05 for k in COUNTS]
    want = reference_logits("arc", cos, TARGETS, 16.0, margins=margins)
    torch.testing.assert_close(layer(AdaptiveArcSoftmax)(cos.clone(), TARGETS), want, atol=2e-4, rtol=1e-5)


@pytest.mark.parametrize("cls,stock,margin", [(LDAMSoftmax, "CosSoftmax", 0.5),
                                              (AdaptiveArcSoftmax, "ArcSoftmax", 0.5 * 16 ** -0.25 + 0.05)])
def test_equal_counts_give_fastreids_stock_layer(cls, stock, margin):
    from fastreid.layers import any_softmax

    lay = cls(len(COUNTS), 16.0, 0.2)
    lay.set_class_counts([16] * len(COUNTS))
    want = getattr(any_softmax, stock)(len(COUNTS), 16.0, margin)(cosines(), TARGETS)
    torch.testing.assert_close(lay(cosines(), TARGETS), want, atol=2e-4, rtol=1e-5)


@pytest.mark.parametrize("cls", [LDAMSoftmax, BalancedSoftmax, AdaptiveArcSoftmax])
def test_layer_needs_counts_and_checkpoints_them(cls):
    from fastreid.layers import any_softmax

    assert getattr(any_softmax, cls.__name__) is cls and cls.__name__ in any_softmax.__all__
    fresh = cls(len(COUNTS), 16.0, 0.2)
    with pytest.raises(RuntimeError, match="set_class_counts"):
        fresh(cosines(), TARGETS)
    with pytest.raises(ValueError, match="shape"):
        fresh.set_class_counts([1, 2])
    fresh.load_state_dict(layer(cls).state_dict())
    torch.testing.assert_close(fresh(cosines(), TARGETS), layer(cls)(cosines(), TARGETS))


# ------------------------------------------------------------------- meta-architecture
def long_tail_baseline(class_balanced):
    ce = {"eps": 0.1, "alpha": 0.2, "scale": 1.0}
    model = LongTailBaseline(backbone=torch.nn.Identity(), heads=torch.nn.Identity(), pixel_mean=[0, 0, 0],
                             pixel_std=[1, 1, 1], loss_kwargs={"loss_names": ("CrossEntropyLoss",), "ce": ce},
                             num_classes=len(COUNTS), class_balanced=class_balanced)
    model.set_class_counts(COUNTS)
    return model


def test_class_balanced_loss_from_start_epoch_on():
    from fastreid.modeling.losses import cross_entropy_loss

    logits = cosines() * 16
    labels = TARGETS.clamp_min(0)
    outputs = {"cls_outputs": logits, "pred_class_logits": logits, "features": logits}
    model = long_tail_baseline({"beta": 0.9999, "start_epoch": 2})
    hook = EpochHook([model])
    hook.trainer = type("T", (), {"epoch": 1})()
    with EventStorage():
        hook.before_epoch()
        torch.testing.assert_close(model.losses(outputs, labels)["loss_cls"],
                                   cross_entropy_loss(logits, labels, 0.1, 0.2))
        hook.trainer.epoch = 2
        hook.before_epoch()
        raw = [(1 - 0.9999) / (1 - 0.9999 ** k) for k in COUNTS]
        total = 0.0
        for row, y in zip(logits.tolist(), labels.tolist()):
            log_z = math.log(sum(math.exp(v) for v in row))
            ce = -sum((0.9 if j == y else 0.1 / 5) * (v - log_z) for j, v in enumerate(row))
            total += raw[y] * len(COUNTS) / sum(raw) * ce
        got = model.losses(outputs, labels)["loss_cls"].item()
        assert got == pytest.approx(total / len(labels), rel=1e-5)
        assert long_tail_baseline(None).reweighting is False


# ---------------------------------------------------------------------------- config
def test_add_peer_config_is_idempotent_and_keeps_values():
    cfg = get_cfg()
    cfg.MODEL.HEADS.LDAM.MAX_M = 0.3
    add_peer_config(cfg)
    assert cfg.MODEL.HEADS.LDAM.MAX_M == 0.3
    assert cfg.MODEL.HEADS.LOGIT_ADJUST.TAU == 1.0
    assert dict(cfg.MODEL.HEADS.ADAPTIVE_ARC) == {"A": 0.5, "LAMBDA": 0.25, "B": 0.05}
    assert dict(cfg.MODEL.LOSSES.CLASS_BALANCED) == {"ENABLED": False, "BETA": 0.9999, "START_EPOCH": 0}


@pytest.mark.parametrize("opts,match", [
    (["MODEL.HEADS.LDAM.MAX_M", "-0.5"], "MODEL.HEADS.LDAM.MAX_M = -0.5.*>= 0"),
    (["MODEL.LOSSES.CLASS_BALANCED.BETA", "1.0"], "BETA = 1.0.*\\[0, 1\\)"),
    (["MODEL.LOSSES.CLASS_BALANCED.START_EPOCH", "-1"], "START_EPOCH = -1"),
    (["MODEL.HEADS.CLS_LAYER", "LDAMSoftmax"], "META_ARCHITECTURE = 'Baseline'.*LongTailBaseline"),
    (["MODEL.LOSSES.CLASS_BALANCED.ENABLED", "True"], "META_ARCHITECTURE = 'Baseline'.*LongTailBaseline"),
    (PEER_METHODS["cb_cosface"] + ["MODEL.LOSSES.CE.EPSILON", "-1.0"], "CE.EPSILON = -1.0"),
    (PEER_METHODS["cb_cosface"] + ["MODEL.LOSSES.NAME", "('TripletLoss',)"], "LOSSES.NAME.*CrossEntropyLoss"),
])
def test_bad_peer_values_name_key_and_allowed_values(opts, match):
    with pytest.raises(ConfigError, match=match):
        load_config("", opts)


def test_configured_hyperparameters_reach_the_layer():
    from fastreid.modeling import build_model

    cfg = load_config("", BUILD_OPTS + PEER_METHODS["adaptive_arc"] + [
        "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
        "MODEL.HEADS.ADAPTIVE_ARC.A", "0.3", "MODEL.HEADS.ADAPTIVE_ARC.B", "0.1"])
    cls_layer = build_model(cfg).heads.cls_layer
    assert (type(cls_layer), cls_layer.a, cls_layer.lam, cls_layer.b) == (AdaptiveArcSoftmax, 0.3, 0.25, 0.1)


# --------------------------------------------------------------------- shipped configs
DATASETS = ["Market1501", "DukeMTMC", "MSMT17"]
#: each shipped config = (the config it extends, the overrides that make it)
SHIPPED = {m: ("cosface_R50", opts) for m, opts in PEER_METHODS.items()}
SHIPPED["leap_cf_cb"] = ("leap_cf_R50", ["MODEL.META_ARCHITECTURE", "LongTailBaseline",
                                         "MODEL.LOSSES.CLASS_BALANCED.ENABLED", "True"])


def config_path(dataset, name):
    return os.path.join(ROOT, "configs", dataset, f"{name}.yml")


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("method", SHIPPED)
def test_shipped_config_is_its_base_plus_the_overrides(dataset, method):
    base, opts = SHIPPED[method]
    shipped = load_config(config_path(dataset, f"{method}_R50"))
    want = load_config(config_path(dataset, base), opts)
    shipped.OUTPUT_DIR = want.OUTPUT_DIR
    assert shipped == want


@pytest.mark.parametrize("method", SHIPPED)
def test_shipped_config_builds_and_trains_its_model(method):
    """Every data set's config is Market1501's but for the data set (test above)."""
    from fastreid.modeling import build_model

    model = build_model(load_config(config_path("Market1501", f"{method}_R50"), BUILD_OPTS))
    assert isinstance(model, LongTailBaseline)
    for module in model.modules():
        if hasattr(module, "set_class_counts"):
            module.set_class_counts(torch.arange(1, 11))
    model.train()
    with EventStorage():
        losses = model({"images": torch.rand(2, 3, 64, 32) * 255, "targets": torch.tensor([0, 9])})
    assert math.isfinite(losses["loss_cls"].item())


# ------------------------------------------------------------------ end to end, tiny
@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = tmp_path_factory.mktemp("market")
    market_data.write_market1501(str(root / "datasets"))
    return root


@pytest.mark.parametrize("method", SHIPPED)
def test_trains_through_leap_trainer(method, market, monkeypatch):
    """Two epochs of 2 iterations (fastreid's timer needs more than 3), LDAM-DRW re-weighting
    from the second, then fastreid's evaluation; the only checkpoint is the final one."""
    import fastreid.data.build as data_build

    from leap_plugin import LeapTrainer

    monkeypatch.setattr(data_build, "_root", str(market / "datasets"))
    os.makedirs(market / method)  # default_setup would make it; fastreid writes config.yaml there
    epochs = 2
    path = market_data.tiny_config(str(market / f"{method}.yml"), str(market / method),
                                   leap=method.startswith("leap"), epochs=epochs, eval_period=epochs)
    drw_start = "1" if method == "ldam_drw" else "0"
    opts = SHIPPED[method][1] + ["MODEL.LOSSES.CLASS_BALANCED.START_EPOCH", drw_start,
                                 "SOLVER.CHECKPOINT_PERIOD", "100"]
    trainer = LeapTrainer(load_config(path, opts))
    model = trainer.model
    assert sorted(model.class_counts.tolist(), reverse=True) == [12, 10, 8, 4, 4, 3, 3, 2]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert trainer.train() is not None  # evaluated once, at the end
    assert model.epoch == epochs - 1 and model.reweighting == (model.class_balanced is not None)
    assert len(trainer.storage.history("total_loss").values()) == trainer.max_iter  # fastreid fails on NaN
    after = model.state_dict()
    for name in ("backbone.conv1.weight", "heads.weight"):
        assert not torch.equal(before[name], after[name]), name
