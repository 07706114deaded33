"""Every registered classification layer (parametrized over the registry: a new layer gets
these tests) against the shared reference, fastreid's stock layers and the config; LeapHead."""

import pytest
import torch
from fastreid.layers import any_softmax

import leap_plugin  # noqa: F401
from tests.helpers import reference
from leap_plugin.core.cloud import sample_alpha
from leap_plugin.reid.config import load_config
from leap_plugin.reid.layers import CLS_LAYERS, CountAwareSoftmax, LeapArcSoftmax, LeapCosSoftmax, cloud_layers

COUNTS = [40, 12, 7, 3, 1, 20]
TARGETS = torch.tensor([0, 4, 3, -1, 5, 1, 2])
#: name -> (reference kind, method of the count-aware peers or None)
REFERENCE = {"LeapCosSoftmax": ("cos", None), "LeapArcSoftmax": ("arc", None), "LDAMSoftmax": ("cos", "ldam"),
             "BalancedSoftmax": ("cos", "balanced_softmax"), "AdaptiveArcSoftmax": ("arc", "adaptive_arc"),
             "LeapLDAMSoftmax": ("cos", "ldam"), "GCLSoftmax": ("cos", "gcl"),
             "ElasticCosSoftmax": ("cos", "elastic"), "ElasticArcSoftmax": ("arc", "elastic")}
#: Layers whose logits take random draws from torch's global generator at every call.
RANDOM = ("GCLSoftmax", "ElasticCosSoftmax", "ElasticArcSoftmax")


def cosines(n=7, c=len(COUNTS), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, generator=g) * 1.6 - 0.8  # theta_y + margin stays below pi


def build(name):
    layer = CLS_LAYERS[name](len(COUNTS), 16.0, 0.2)
    if isinstance(layer, CountAwareSoftmax):
        layer.set_class_counts(COUNTS)
    return layer


def want(name, cos, labels, alpha=None, seed=0):
    """The reference logits; a random layer's draws are torch's global generator's after
    ``torch.manual_seed(seed)``, as the layer takes them."""
    kind, method = REFERENCE[name]
    if method is None:
        return reference.margin_logits(cos, labels, 16.0, kind, 0.2, alpha)
    torch.manual_seed(seed)
    if method == "elastic":
        return reference.elastic_logits(kind, cos, labels, 16.0, 0.2, 0.05, torch.randn(cos.shape[0]))
    options = CLS_LAYERS[name].method.options
    if alpha is None:
        margin = 0.2 if CLS_LAYERS[name].method.uses_margin else 0.0
        normal = torch.randn(cos.shape) if name in RANDOM else None
        return reference.count_method_logits(method, cos, labels, 16.0, COUNTS, options, margin, normal=normal)
    return reference.margin_logits(cos, labels, 16.0, kind, reference.ldam_margins(COUNTS, **options), alpha)


def test_the_registry_has_every_layer_and_the_test_table_too():
    assert set(CLS_LAYERS) == set(REFERENCE)  # a new layer needs its reference here
    assert cloud_layers() == ["LeapArcSoftmax", "LeapCosSoftmax", "LeapLDAMSoftmax"]


@pytest.mark.parametrize("name", sorted(CLS_LAYERS))
def test_layer_is_found_by_fastreid_name_and_matches_the_reference(name):
    assert getattr(any_softmax, name) is CLS_LAYERS[name] and name in any_softmax.__all__
    layer = build(name)
    torch.manual_seed(0)
    got = layer(cosines(), TARGETS)
    torch.testing.assert_close(got.double(), want(name, cosines(), TARGETS), atol=2e-4, rtol=1e-5)


@pytest.mark.parametrize("name", cloud_layers())
@pytest.mark.parametrize("mode", ["logit", "sample"])
def test_cloud_layer_perturbs_exactly_the_clouded_rows(name, mode):
    layer = build(name)
    layer.alpha_mode = mode
    variance = torch.tensor([0.0, 0.04, 0.0, 0.09, 0.0, 0.01, 0.0])
    torch.manual_seed(3)
    got = layer(cosines(), TARGETS, variance=variance)
    torch.manual_seed(3)
    rows = variance > 0
    alpha = torch.zeros(7, len(COUNTS) if mode == "logit" else 1)
    alpha[rows] = sample_alpha(variance[rows], len(COUNTS), mode)
    torch.testing.assert_close(got.double(), want(name, cosines(), TARGETS, alpha.double()), atol=2e-4, rtol=1e-5)
    # no variance, or all zero: the layer without its cloud
    plain = want(name, cosines(), TARGETS)
    torch.testing.assert_close(layer(cosines(), TARGETS, variance=torch.zeros(7)).double(), plain, atol=2e-4, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(n for n, c in CLS_LAYERS.items() if issubclass(c, CountAwareSoftmax)))
def test_count_aware_layer_needs_counts_and_checkpoints_them(name):
    fresh = CLS_LAYERS[name](len(COUNTS), 16.0, 0.2)
    with pytest.raises(RuntimeError, match="set_class_counts"):
        fresh(cosines(), TARGETS)
    with pytest.raises(ValueError, match="shape"):
        fresh.set_class_counts([1, 2])
    with pytest.raises(ValueError, match="K_i >= 1"):
        fresh.set_class_counts([0] * len(COUNTS))
    fresh.load_state_dict(build(name).state_dict())
    torch.manual_seed(0)
    restored = fresh(cosines(), TARGETS)
    torch.manual_seed(0)
    torch.testing.assert_close(restored, build(name)(cosines(), TARGETS))


@pytest.mark.parametrize("cls,stock,margin", [("LDAMSoftmax", "CosSoftmax", 0.5),
                                              ("AdaptiveArcSoftmax", "ArcSoftmax", 0.5 * 16 ** -0.25 + 0.05)])
def test_equal_counts_give_fastreids_stock_layer(cls, stock, margin):
    lay = CLS_LAYERS[cls](len(COUNTS), 16.0, 0.2)
    lay.set_class_counts([16] * len(COUNTS))
    expected = getattr(any_softmax, stock)(len(COUNTS), 16.0, margin)(cosines(), TARGETS)
    torch.testing.assert_close(lay(cosines(), TARGETS), expected, atol=2e-4, rtol=1e-5)


@pytest.mark.parametrize("mode", ["logit", "sample"])
def test_alpha_mode_reaches_the_layer_from_the_config(mode):
    """ALPHA_MODE used to be settable without reaching the layer unnoticed."""
    from fastreid.modeling import build_model

    cfg = load_config("", ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", "18x",
                           "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.HEADS.NUM_CLASSES", "6",
                           "MODEL.HEADS.NAME", "LeapHead", "MODEL.HEADS.CLS_LAYER", "LeapCosSoftmax",
                           "MODEL.HEADS.LEAP.ENABLED", "True", "MODEL.HEADS.LEAP.ALPHA_MODE", mode])
    layer = build_model(cfg).heads.cls_layer
    assert layer.alpha_mode == mode
    # and acts: with one draw per sample every non-target column of a row moved by one angle
    cos = cosines()
    out = layer(cos, TARGETS, variance=torch.full((7,), 0.05))
    shifts = torch.acos((out / layer.s).clamp(-1, 1)) - torch.acos(cos)
    shifts[torch.arange(7)[TARGETS >= 0], TARGETS[TARGETS >= 0]] = float("nan")
    spread = torch.stack([row[~torch.isnan(row)].std() for row in shifts])
    assert (spread < 1e-3).all() if mode == "sample" else (spread > 1e-2).all(), spread


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
    head.hook_attached, head.update_memory = True, True  # driven by hand, as LeapHook would
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    out = head(x, targets)
    assert set(out) == {"cls_outputs", "pred_class_logits", "features"}
    assert head.memory.mem_fill.tolist() == [2, 2, 2, 0, 0]
    head.update_memory = False
    head(x, targets)
    assert head.memory.mem_fill.tolist() == [2, 2, 2, 0, 0]


def _leap_head(neck_feat="after"):
    from fastreid.config import get_cfg
    from fastreid.modeling.heads import build_heads

    cfg = get_cfg()
    cfg.MODEL.BACKBONE.FEAT_DIM = 16
    cfg.MODEL.HEADS.NUM_CLASSES = 4
    cfg.MODEL.HEADS.WITH_BNNECK = True
    cfg.MODEL.HEADS.NECK_FEAT = neck_feat
    cfg.MODEL.HEADS.NAME, cfg.MODEL.HEADS.CLS_LAYER = "LeapHead", "LeapCosSoftmax"
    cfg.MODEL.HEADS.SCALE, cfg.MODEL.HEADS.MARGIN = 24, 0.2
    cfg.MODEL.HEADS.LEAP.ENABLED = True
    head = build_heads(cfg).train()
    head.memory.set_class_counts([3, 3, 3, 3])
    head.hook_attached = True
    return head


@pytest.mark.parametrize("neck_feat", ["after", "before"])
def test_the_memory_is_fed_the_neck_feature_not_the_pooled_one(neck_feat):
    """Feeding the memory the pooled feature passed the whole suite."""
    head = _leap_head(neck_feat)
    head.update_memory = True
    x = torch.randn(8, 16, 1, 1) * 3 + 1
    targets = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    head(x, targets)
    with torch.no_grad():
        neck = head.bottleneck(head.pool_layer(x))[..., 0, 0]
    # a first sighting: each center is the mean of its class's normalised neck features (BN in
    # train mode: the same batch statistics as the forward above)
    want = torch.stack([torch.nn.functional.normalize(neck[targets == c], dim=1).mean(0) for c in range(4)])
    torch.testing.assert_close(head.memory.centers, want, atol=1e-5, rtol=1e-5)


def test_the_head_passes_the_cloud_to_its_layer_only_when_active():
    head = _leap_head()
    head.memory.cloud_var.fill_(0.05)  # every class clouded
    x = torch.randn(8, 16, 1, 1)
    targets = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    torch.manual_seed(0)
    plain = head(x, targets)["cls_outputs"]
    head.cloud_active = True
    torch.manual_seed(0)
    clouded = head(x, targets)["cls_outputs"]
    assert (clouded - plain).abs().amax() > 0.1
    head.cloud_active = False
    assert torch.equal(head(x, targets)["cls_outputs"], plain)
