"""ONNX export: a face backbone through PyPI insightface, a fastreid model through onnxruntime."""
import os
import shutil

import numpy as np
import pytest
import torch

from tests.helpers import face_helpers as fh
from tests.helpers.cli_errors import one_error_line
from leap_plugin.cli import export, face_train
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


def _export_error(argv, capsys):
    """Run leap-export; assert exit status 2 and one error line, no traceback; return it."""
    return one_error_line(export.main, argv, capsys)


def _input_shape(path):
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    size = shape[2]
    out = session.run(None, {"input": np.random.default_rng(0).random((2, 3, size, size), dtype=np.float32)})[0]
    return shape[1:], out.shape


def test_face_model_trained_at_input_size_48_exports_at_48(tmp_path, capsys):
    faces = tmp_path / "faces"
    fh.make_face_folder(str(faces), [4] * 4)
    config = tmp_path / "c48.py"
    fh.write_config(config, margin_list=(1.0, 0.0, 0.35), scale=16.0, network="tiny", embedding_size=32,
                    batch_size=8, num_epoch=1, num_workers=0, val_targets=[], rec=str(faces),
                    output=str(tmp_path / "run"), input_size=48, leap=dict(enabled=False))
    assert face_train.main([str(config)]) == 0
    weights = tmp_path / "run" / "model.pt"

    # network, embedding size and input size as the run recorded them (checkpoint beside model.pt)
    assert export.main(["face", "--weights", str(weights), "-o", str(tmp_path / "run.onnx")]) == 0
    assert _input_shape(tmp_path / "run.onnx") == ([3, 48, 48], (2, 32))
    # the run's record wins over a config that says otherwise (a command-line override in training)
    config112 = tmp_path / "c112.py"
    fh.write_config(config112, network="tiny", embedding_size=32, rec=str(faces), output=str(tmp_path / "x"))
    assert export.main(["face", "--weights", str(weights), "--config", str(config112),
                        "-o", str(tmp_path / "cfg.onnx")]) == 0
    assert _input_shape(tmp_path / "cfg.onnx")[0] == [3, 48, 48]

    # a bare model.pt (no run beside it): --input-size, or the config's input_size
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(weights, bare / "model.pt")
    assert export.main(["face", "--weights", str(bare / "model.pt"), "--network", "tiny", "--embedding-size", "32",
                        "--input-size", "48", "-o", str(tmp_path / "flag.onnx")]) == 0
    assert _input_shape(tmp_path / "flag.onnx")[0] == [3, 48, 48]
    assert export.main(["face", "--weights", str(bare / "model.pt"), "--config", str(config),
                        "-o", str(tmp_path / "config.onnx")]) == 0
    assert _input_shape(tmp_path / "config.onnx")[0] == [3, 48, 48]
    # without either, 112 is assumed and the weights do not fit: exit 2, one line saying so
    line = _export_error(["face", "--weights", str(bare / "model.pt"), "--network", "tiny", "--embedding-size", "32",
                          "-o", str(tmp_path / "no.onnx")], capsys)
    assert "do not fit network 'tiny'" in line and "(embedding size 32, input size 112)" in line
    assert not (tmp_path / "no.onnx").exists()


def test_reid_flag_after_the_overrides_says_flags_come_first(tmp_path, capsys):
    config = os.path.join(CONFIGS, "Market1501", "leap_cf_R50.yml")
    line = _export_error(["reid", "--config-file", config, "MODEL.DEVICE", "cpu", "-o", str(tmp_path / "r.onnx")],
                         capsys)
    assert line == ("leap-export reid: error: '-o' comes after the KEY VALUE overrides: flags come before the "
                    "overrides (leap-export reid --config-file ... -o ... KEY VALUE ...)")
    line = _export_error(["reid", "-o", str(tmp_path / "r.onnx"), "MODEL.DEVICE", "cpu", "--config-file", config],
                         capsys)
    assert "'--config-file' comes after the KEY VALUE overrides: flags come before the overrides" in line
    line = _export_error(["reid", "--config-file", config], capsys)
    assert line.endswith("the following arguments are required: -o/--output")
