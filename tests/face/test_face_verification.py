"""Verification sets (.bin), 10-fold accuracy, TPR@FPR and MegaFace-style rank-1 on
hand-checked inputs."""
import io
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from tests.helpers import face_helpers as fh
from leap_plugin.face.verification import (
    embed_images, evaluate_bin, megaface_rank1, pair_scores, read_bin, tpr_at_fpr,
    verification_accuracy, write_bin,
)


class _Evil:
    def __reduce__(self):  # unpickling this would call a function of the os module
        return (os.getcwd, ())


def test_bin_round_trip_in_insightface_format(tmp_path):
    images = fh.identity_images(0, 3) + fh.identity_images(1, 1)
    path = str(tmp_path / "lfw.bin")
    write_bin(path, images, [True, False])
    with open(path, "rb") as f:  # what insightface's own loader does
        bins, issame = pickle.load(f, encoding="bytes")
    assert len(bins) == 4 and issame == [True, False]
    assert all(isinstance(b, bytes) and b[:2] == b"\xff\xd8" for b in bins)  # JPEG
    decoded, flags = read_bin(path)
    assert decoded.shape == (4, 112, 112, 3) and decoded.dtype == np.uint8
    assert flags.tolist() == [True, False]
    for got, data in zip(decoded, bins):
        np.testing.assert_array_equal(got, np.array(Image.open(io.BytesIO(data)).convert("RGB")))


def test_bin_reader_refuses_objects_and_bad_files(tmp_path):
    evil = tmp_path / "evil.bin"
    evil.write_bytes(pickle.dumps(([b"x", b"y"], [_Evil()])))
    with pytest.raises(ValueError, match="not an insightface verification .bin"):
        read_bin(str(evil))
    odd = tmp_path / "odd.bin"
    odd.write_bytes(pickle.dumps(([b"x"], [True])))
    with pytest.raises(ValueError, match="1 images for 1 pairs"):
        read_bin(str(odd))
    with pytest.raises(FileNotFoundError):
        read_bin(str(tmp_path / "missing.bin"))


def test_ten_fold_accuracy_hand_checked():
    # 20 pairs, folds of 2: genuine 0.8, impostor 0.2, except one genuine pair at 0.1.
    issame = np.array([True, False] * 10)
    scores = np.where(issame, 0.8, 0.2)
    assert verification_accuracy(scores, issame)["accuracy"] == 1.0
    scores[4] = 0.1  # fold 2 now gets one pair wrong whatever threshold the others chose
    result = verification_accuracy(scores, issame)
    assert result["accuracy"] == pytest.approx(0.95)
    assert result["std"] == pytest.approx(0.15)
    assert all(0.2 < t <= 0.8 for t in result["thresholds"])


def test_tpr_at_fpr_hand_checked():
    impostor = np.arange(1000) / 1000.0  # 0.000 ... 0.999
    genuine = np.array([0.9985, 0.999, 0.5, 1.0])
    result = tpr_at_fpr(genuine, impostor, (1e-3, 1e-4, 1e-2))
    # FPR 1e-3 -> threshold 0.998 (one impostor, 0.999, above it): 3 of 4 genuine pass.
    assert result[1e-3] == 0.75
    # FPR 1e-4 < 1 / 1000: above every impostor, only 1.0 passes.
    assert result[1e-4] == 0.25
    # FPR 1e-2 -> threshold 0.989: 3 of 4.
    assert result[1e-2] == 0.75


def test_megaface_rank1_hand_checked():
    angle = np.deg2rad([0, 10, 90, 100, 180])
    features = np.stack([np.cos(angle), np.sin(angle)], 1)
    ids = np.array([0, 0, 1, 1, 2])
    distractor = np.array([[np.cos(np.deg2rad(95)), np.sin(np.deg2rad(95))]])
    # Pairs: (0,1), (1,0) beat the distractor (10 deg vs >= 85 deg); (2,3), (3,2) do not
    # (10 deg vs 5 deg). Identity 2 has one image: no pair.
    assert megaface_rank1(features, ids, distractor) == 0.5


def test_embedding_uses_flip_and_eval_mode(tmp_path):
    images = np.stack(fh.identity_images(0, 2) + fh.identity_images(1, 2))
    model = fh.BACKBONES["tiny"](embedding_size=16)
    model.train()
    emb = embed_images(model, images, batch_size=3)
    assert model.training and emb.shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    mirrored = embed_images(model, images[:, :, ::-1].copy(), batch_size=3)
    np.testing.assert_allclose(mirrored, emb, atol=1e-5)  # image + mirror is symmetric
    path = str(tmp_path / "pairs.bin")
    fh.make_pairs_bin(path)
    result = evaluate_bin(model, path)
    assert 0.0 <= result["accuracy"] <= 1.0 and len(result["thresholds"]) == 10
    assert pair_scores(emb).shape == (2,)
