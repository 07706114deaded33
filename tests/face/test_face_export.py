"""ONNX export: a face backbone through PyPI insightface, a fastreid model through onnxruntime."""
import os

import numpy as np
import pytest
import torch

from face import face_helpers as fh
from leap_plugin.cli import export
from leap_plugin.face.data import images_to_tensor

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs")


def test_face_model_loads_in_insightface_with_the_same_embedding(tmp_path):
    get_model = pytest.importorskip("insightface.model_zoo").get_model

    model = fh.BACKBONES["tiny"](embedding_size=32)
    with torch.no_grad():  # non-trivial BN statistics, so that eval mode matters
        model(images_to_tensor(np.stack(fh.identity_images(0, 4))))
    weights = tmp_path / "model.pt"
    torch.save(model.state_dict(), weights)
    path = str(tmp_path / "face.onnx")
    assert export.main(["face", "--weights", str(weights), "--network", "tiny",
                        "--embedding-size", "32", "-o", path]) == 0

    loaded = get_model(path, providers=["CPUExecutionProvider"])
    assert type(loaded).__name__ == "ArcFaceONNX" and loaded.taskname == "recognition"
    assert loaded.input_size == (112, 112) and (loaded.input_mean, loaded.input_std) == (127.5, 127.5)
    rgb = np.stack(fh.identity_images(3, 2))
    feat = loaded.get_feat([image[:, :, ::-1].copy() for image in rgb])  # insightface takes BGR
    model.eval()
    with torch.no_grad():
        expected = model(images_to_tensor(rgb)).numpy()
    cosine = np.sum(feat * expected, 1) / (np.linalg.norm(feat, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() > 0.999


def test_face_weights_that_do_not_fit_fail_clearly(tmp_path, capsys):
    weights = tmp_path / "model.pt"
    torch.save(fh.BACKBONES["tiny"](embedding_size=32).state_dict(), weights)
    with pytest.raises(SystemExit):
        export.main(["face", "--weights", str(weights), "--network", "tiny", "--embedding-size", "16",
                     "-o", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert "do not fit network 'tiny'" in err and "of another shape" in err and "embedding size 16" in err


def test_fastreid_leap_model_exports_and_matches_onnxruntime(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")

    path = str(tmp_path / "reid.onnx")
    opts = ["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.BACKBONE.FEAT_DIM", "512",
            "MODEL.HEADS.NUM_CLASSES", "10", "INPUT.SIZE_TEST", "[64, 32]"]
    model = export.export_reid(os.path.join(CONFIGS, "Market1501", "leap_cf_R50.yml"), None, path, opts)
    images = torch.rand(3, 3, 64, 32) * 255
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": images.numpy()})[0]
    with torch.no_grad():
        expected = model(images).numpy()
    assert got.shape == (3, 512)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
