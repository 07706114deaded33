"""The face backbones carry arcface_torch's names and shapes, so its weights load
strictly, fine-tune through leap-face-train and export to ONNX that insightface loads.
Parametrized over every registered backbone with a known arcface_torch layout."""
import json

import numpy as np
import pytest
import torch

from tests.helpers import arcface_layout
from tests.helpers import face_helpers as fh
from leap_plugin.cli import export, face_train
from leap_plugin.face.backbones import BACKBONES, build_backbone, load_backbone_weights
from leap_plugin.face.data import images_to_tensor


def test_every_arcface_torch_network_is_registered():
    assert set(arcface_layout.LAYOUTS) <= set(BACKBONES)


@pytest.mark.parametrize("network", sorted(arcface_layout.LAYOUTS))
def test_state_dict_names_and_shapes_equal_arcface_torch(network):
    model = build_backbone(network, 256)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == arcface_layout.LAYOUTS[network](256)


@pytest.mark.parametrize("network", ["r18", "mbf"])
def test_arcface_torch_weights_load_strictly_in_every_saved_form(network, tmp_path):
    state = arcface_layout.random_state_dict(network)
    forms = {"model.pt": state,  # arcface_torch's final model.pt
             "checkpoint_gpu_0.pt": {"epoch": 3, "state_dict_backbone": state, "state_dict_softmax_fc": {}},
             "ddp.pt": {f"module.{k}": v for k, v in state.items()}}
    for name, obj in forms.items():
        torch.save(obj, tmp_path / name)
        model = build_backbone(network)
        load_backbone_weights(model, str(tmp_path / name), network)
        for key, value in model.state_dict().items():
            assert torch.equal(value, state[key]), (name, key)


def test_weights_of_another_network_are_refused_naming_the_mismatch(tmp_path):
    torch.save(arcface_layout.random_state_dict("r18"), tmp_path / "r18.pt")
    with pytest.raises(ValueError, match=r"do not fit network 'r34'.*missing.*layer1\.2"):
        load_backbone_weights(build_backbone("r34"), str(tmp_path / "r18.pt"), "r34")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read face weights"):
        load_backbone_weights(build_backbone("r18"), str(tmp_path / "junk.pt"))


def test_arcface_torch_layout_weights_export_to_onnx_that_insightface_loads(tmp_path):
    get_model = pytest.importorskip("insightface.model_zoo").get_model

    state = arcface_layout.random_state_dict("mbf", 128, seed=3)
    torch.save(state, tmp_path / "model.pt")
    path = str(tmp_path / "mbf.onnx")
    assert export.main(["face", "--weights", str(tmp_path / "model.pt"), "--network", "mbf",
                        "--embedding-size", "128", "-o", path]) == 0
    loaded = get_model(path, providers=["CPUExecutionProvider"])
    assert type(loaded).__name__ == "ArcFaceONNX" and loaded.input_size == (112, 112)
    rgb = np.stack(fh.identity_images(5, 2))
    feat = loaded.get_feat([image[:, :, ::-1].copy() for image in rgb])
    model = build_backbone("mbf", 128)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        expected = model(images_to_tensor(rgb)).numpy()
    cosine = np.sum(feat * expected, 1) / (np.linalg.norm(feat, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() > 0.999


def test_fine_tune_from_arcface_torch_weights_with_leap_writes_tensorboard(tmp_path):
    """pretrained=<arcface_torch model.pt>, LEAP on, TensorBoard with leap/* tags."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fh.make_face_folder(str(tmp_path / "train"), [6] * 4 + [2] * 4)
    fh.make_pairs_bin(str(tmp_path / "pairs.bin"))
    weights = tmp_path / "model.pt"
    torch.save(arcface_layout.random_state_dict("mbf", 64, seed=1), weights)
    config = tmp_path / "ft.py"
    fh.write_config(config, margin_list=(1.0, 0.0, 0.35), scale=16.0, network="mbf", embedding_size=64,
                    batch_size=8, lr=0.01, num_epoch=2, verbose=100, frequent=1, num_workers=0, seed=1,
                    rec=str(tmp_path / "train"), output=str(tmp_path / "out"), val_targets=[str(tmp_path / "pairs.bin")],
                    pretrained=str(weights), leap=dict(enabled=True, start_epoch=1, exact_grad=True))
    assert face_train.main([str(config)]) == 0
    log = (tmp_path / "out" / "training.log").read_text()
    assert f"backbone weights loaded from {weights}" in log
    assert "step 8/8 epoch 1/2" in log and " eta " in log
    (events,) = list((tmp_path / "out" / "tensorboard").glob("events.out.tfevents*"))
    tags = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert {"loss", "lr", "leap/cloud_active", "leap/clouded_classes", "val/pairs/accuracy",
            "val/pairs/tpr@fpr=0.001"} <= set(tags)
    records = [json.loads(line) for line in open(tmp_path / "out" / "metrics.jsonl")]
    assert max(r.get("leap/clouded_classes", 0) for r in records) > 0
    # the run started from the given weights: its first-layer weights moved away from them only by training
    start = arcface_layout.random_state_dict("mbf", 64, seed=1)["layers.0.layers.0.weight"]
    trained = torch.load(tmp_path / "out" / "model.pt", weights_only=True)["layers.0.layers.0.weight"]
    assert (trained - start).abs().max() < 0.5 * start.abs().max()


def test_exact_grad_reaches_the_margin_loss(tmp_path):
    from leap_plugin.face.config import load_config

    fh.make_face_folder(str(tmp_path / "train"), [3, 3])
    for flag in (False, True):
        cfg = load_config(_minimal_config(tmp_path), [f"leap.exact_grad={flag}", "leap.enabled=True"])
        pfc = face_train.build_partial_fc(cfg, [3, 3], 2, torch.device("cpu"))
        assert pfc.margin_loss.exact_grad is flag


def _minimal_config(tmp_path):
    path = tmp_path / "m.py"
    fh.write_config(path, margin_list=(1.0, 0.0, 0.35), network="tiny", embedding_size=8, batch_size=2,
                    rec=str(tmp_path / "train"), output=str(tmp_path / "o"))
    return str(path)


@pytest.mark.parametrize("network", ["mbf", "r18"])
def test_small_input_size_for_cpu_crops(network):
    model = build_backbone(network, 32, input_size=64).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 32)
    with pytest.raises(ValueError, match="multiple of 16"):
        build_backbone(network, 32, input_size=60)
