"""Peer long-tail methods in fastreid: class-balanced CE (LongTailBaseline), the peers'
config keys, their shipped configs, and a few training iterations of each through
fastreid's trainer. Their layers are tested with every other layer in test_layers.py, their
math in tests/core/test_longtail.py."""
import math
import os

import pytest
import torch
from fastreid.config import get_cfg
from fastreid.utils.events import EventStorage

import leap_plugin  # noqa: F401
from tests.helpers import market_data
from leap_plugin.reid.config import ConfigError, add_leap_config, load_config
from leap_plugin.reid.hooks import EpochHook
from leap_plugin.reid.layers import AdaptiveArcSoftmax
from leap_plugin.reid.methods import method_overrides
from leap_plugin.reid.peers import LongTailBaseline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: shipped config name -> the method of the table it is
PEERS = {"ldam": "ldam", "ldam_drw": "ldam_drw", "balanced_softmax": "balanced_softmax",
         "adaptive_arc": "adaptive_arc", "cb_cosface": "cb_cosface", "gcl": "GCL", "elastic_cos": "ElasticFace-Cos",
         "elastic_arc": "ElasticFace-Arc"}


def peer(name):
    """The overrides of a peer method on the shipped Market-1501 CosFace config (60 epochs)."""
    stock = load_config(os.path.join(ROOT, "configs", "Market1501", "cosface_R50.yml"))
    return method_overrides(PEERS[name], stock)
COUNTS = [40, 12, 7, 3, 1, 20]
BUILD_OPTS = ["MODEL.BACKBONE.PRETRAIN", "False", "SOLVER.AMP.ENABLED", "False",
              "MODEL.HEADS.NUM_CLASSES", "10", "MODEL.DEVICE", "cpu"]


def cosines(n=7, c=len(COUNTS), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, generator=g) * 1.6 - 0.8  # theta_y + margin stays below pi


TARGETS = torch.tensor([0, 4, 3, -1, 5, 1, 2])


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
def test_add_leap_config_is_idempotent_and_keeps_values():
    cfg = get_cfg()
    cfg.MODEL.HEADS.LDAM.MAX_M = 0.3
    add_leap_config(cfg)
    assert cfg.MODEL.HEADS.LDAM.MAX_M == 0.3
    assert cfg.MODEL.HEADS.LOGIT_ADJUST.TAU == 1.0
    assert dict(cfg.MODEL.HEADS.ADAPTIVE_ARC) == {"A": 0.5, "LAMBDA": 0.25, "B": 0.05}
    assert dict(cfg.MODEL.LOSSES.CLASS_BALANCED) == {"ENABLED": False, "BETA": 0.9999, "START_EPOCH": 0}


@pytest.mark.parametrize("opts,match", [
    (["MODEL.HEADS.LDAM.MAX_M", "-0.5"], "MODEL.HEADS.LDAM.MAX_M = -0.5.*>= 0"),
    (["MODEL.HEADS.GCL.NOISE_MUL", "-1.0"], "MODEL.HEADS.GCL.NOISE_MUL = -1.0.*>= 0"),
    (["MODEL.HEADS.ELASTIC.PLUS", "1"], "Type mismatch.*MODEL.HEADS.ELASTIC.PLUS"),
    (["MODEL.LOSSES.CLASS_BALANCED.BETA", "1.0"], "BETA = 1.0.*\\[0, 1\\)"),
    (["MODEL.LOSSES.CLASS_BALANCED.START_EPOCH", "-1"], "START_EPOCH = -1"),
    (["MODEL.LOSSES.CLASS_BALANCED.ENABLED", "True"], "META_ARCHITECTURE = 'Baseline'.*LongTailBaseline"),
    (peer("cb_cosface") + ["MODEL.LOSSES.CE.EPSILON", "-1.0"], "CE.EPSILON = -1.0"),
    (peer("cb_cosface") + ["MODEL.LOSSES.NAME", "('TripletLoss',)"], "LOSSES.NAME.*CrossEntropyLoss"),
])
def test_bad_peer_values_name_key_and_allowed_values(opts, match):
    with pytest.raises(ConfigError, match=match):
        load_config("", opts)


def test_configured_hyperparameters_reach_the_layer():
    from fastreid.modeling import build_model

    cfg = load_config("", BUILD_OPTS + peer("adaptive_arc") + [
        "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
        "MODEL.HEADS.ADAPTIVE_ARC.A", "0.3", "MODEL.HEADS.ADAPTIVE_ARC.B", "0.1"])
    cls_layer = build_model(cfg).heads.cls_layer  # fastreid's Baseline: configured without LongTailBaseline
    assert type(cls_layer) is AdaptiveArcSoftmax and cls_layer.options == {"a": 0.3, "lam": 0.25, "b": 0.1}


@pytest.mark.parametrize("extra,want", [
    ([], {"m": 0.3, "std": 0.05, "plus": False}),
    (["MODEL.HEADS.ELASTIC.PLUS", "True"], {"m": 0.3, "std": 0.0175, "plus": True}),
    (["MODEL.HEADS.ELASTIC.MEAN", "0.45", "MODEL.HEADS.ELASTIC.STD", "0.01"], {"m": 0.45, "std": 0.01, "plus": False}),
])
def test_elastic_face_keys_reach_the_layer(extra, want):
    from fastreid.modeling import build_model

    cfg = load_config("", BUILD_OPTS + peer("elastic_arc") + [
        "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.HEADS.MARGIN", "0.3"] + extra)
    layer = build_model(cfg).heads.cls_layer
    assert type(layer).__name__ == "ElasticArcSoftmax"
    assert {"m": layer.m, "std": layer.std, "plus": layer.plus} == pytest.approx(want)


def test_gcl_noise_mul_reaches_the_layer():
    from fastreid.modeling import build_model

    cfg = load_config("", BUILD_OPTS + peer("gcl") + [
        "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.HEADS.GCL.NOISE_MUL", "0.2"])
    assert build_model(cfg).heads.cls_layer.options == {"noise_mul": 0.2}


# --------------------------------------------------------------------- shipped configs
DATASETS = ["Market1501", "DukeMTMC", "MSMT17"]
#: each shipped config = (the config it extends, the overrides that make it)
SHIPPED = {m: ("cosface_R50", peer(m)) for m in PEERS}
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
    assert isinstance(model, LongTailBaseline) == (method in ("ldam_drw", "cb_cosface", "leap_cf_cb"))
    for module in model.modules():
        if hasattr(module, "set_class_counts"):
            module.set_class_counts(torch.arange(1, 11))
        if hasattr(module, "hook_attached"):  # a LeapHead, driven by hand as LeapHook would
            module.hook_attached = True
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
    # K_i reached every module that depends on it (the layer, LongTailBaseline, LEAP's memory);
    # ElasticFace alone draws the same margins for every class
    receivers = [m for m in model.modules() if hasattr(m, "set_class_counts")]
    assert bool(receivers) != method.startswith("elastic")
    for module in receivers:
        assert sorted(module.class_counts.tolist(), reverse=True) == [12, 10, 8, 4, 4, 3, 3, 2]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert trainer.train() is not None  # evaluated once, at the end
    if isinstance(model, LongTailBaseline):
        assert model.epoch == epochs - 1 and model.reweighting == (model.class_balanced is not None)
    assert len(trainer.storage.history("total_loss").values()) == trainer.max_iter  # fastreid fails on NaN
    after = model.state_dict()
    for name in ("backbone.conv1.weight", "heads.weight"):
        assert not torch.equal(before[name], after[name]), name
