"""Config keys, validation messages, and every shipped config builds its model."""
import glob
import os

import pytest
import torch

import leap_plugin  # noqa: F401
from leap_plugin.reid.config import load_config
from leap_plugin.reid.config import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.yml"), recursive=True)
                 if not os.path.basename(p).startswith("Base-"))
# What this CPU-only machine cannot do: download ImageNet weights, fastreid's CUDA AMP.
BUILD_OPTS = ["MODEL.BACKBONE.PRETRAIN", "False", "SOLVER.AMP.ENABLED", "False",
              "MODEL.HEADS.NUM_CLASSES", "10", "MODEL.DEVICE", "cpu"]


@pytest.mark.parametrize("key,value,match", [
    ("MODEL.HEADS.LEAP.VERSION", "half", "MODEL.HEADS.LEAP.VERSION = 'half'.*'full', 'vanilla'"),
    ("MODEL.HEADS.LEAP.ALPHA_MODE", "batch", "ALPHA_MODE.*'logit', 'sample'"),
    ("MODEL.HEADS.LEAP.CENTER_LR", "1.5", "CENTER_LR = 1.5.*\\[0, 1\\]"),
    ("MODEL.HEADS.LEAP.MEMORY_FACTOR", "0", "MEMORY_FACTOR = 0.*>= 1"),
    ("DATASETS.LONG_TAIL.HEAD", "-3", "DATASETS.LONG_TAIL.HEAD = -3"),
    ("DATALOADER.SAMPLER_TRAIN", "Foo", "SAMPLER_TRAIN = 'Foo'.*LongTailIdentitySampler"),
    ("SOLVER.AMP.ENABLED", "True", "AMP.*CUDA"),
])
def test_bad_value_names_key_and_allowed_values(key, value, match):
    if key == "SOLVER.AMP.ENABLED" and torch.cuda.is_available():
        pytest.skip("AMP is allowed with CUDA")
    with pytest.raises(ConfigError, match=match):
        load_config("", [key, value])


def test_leap_on_a_non_cosine_layer_is_refused():
    with pytest.raises(ConfigError, match="CLS_LAYER = 'Linear'.*LeapCosSoftmax"):
        load_config("", ["MODEL.HEADS.LEAP.ENABLED", "True", "MODEL.HEADS.NAME", "LeapHead"])


def test_unknown_key_and_missing_file():
    with pytest.raises(ConfigError, match="MODEL.HEADS.LEAP.GAMMA"):
        load_config("", ["MODEL.HEADS.LEAP.GAMMA", "0.1"])
    with pytest.raises(ConfigError, match="nope.yml"):
        load_config("nope.yml")


def test_configs_exist_for_every_dataset_and_method():
    names = {os.path.relpath(p, os.path.join(ROOT, "configs")) for p in CONFIGS}
    for ds in ("Market1501", "DukeMTMC", "MSMT17"):
        for m in ("cosface_R50", "arcface_R50", "leap_cf_R50", "leap_af_R50", "leap_cv_R50", "leap_av_R50",
                  "bagtricks_R50", "bagtricks_leap_R50", "sbs_R50", "sbs_leap_R50"):
            assert f"{ds}/{m}.yml" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_shipped_config_builds_its_model(path):
    from fastreid.modeling import build_model

    cfg = load_config(path, BUILD_OPTS)
    model = build_model(cfg)
    if cfg.MODEL.HEADS.LEAP.ENABLED:
        assert model.heads.memory is not None and model.heads.memory.num_classes == 10
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 32))
    assert out.shape[0] == 1
