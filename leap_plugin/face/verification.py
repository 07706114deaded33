"""Face evaluation without mxnet: insightface's ``.bin`` verification sets, 10-fold
verification accuracy (LFW protocol), TPR at fixed FPR (IJB-C style) and rank-1
identification against distractors (MegaFace challenge 1 in miniature).

A ``.bin`` file is a pickle of ``(list of encoded images, issame list)``: images ``2i`` and
``2i + 1`` form pair ``i``, and ``issame[i]`` says whether they show the same person.
Embeddings are L2-normalised and compared by cosine similarity; a pair is called "same"
when its score is at least the threshold.
"""
from __future__ import annotations

import io
import os
import pickle
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..io import atomic_write
from .data import images_to_tensor, load_rgb

__all__ = [
    "read_bin", "write_bin", "embed_images", "pair_scores", "verification_accuracy", "tpr_at_fpr",
    "megaface_rank1", "evaluate_pairs", "evaluate_bin",
]

# What a .bin may reference besides plain lists, tuples, bytes and bools: Python 2 strings
# re-encoded by Python 3 pickles, and numpy arrays of the issame flags.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy", "bool_"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _BinUnpickler(pickle.Unpickler):
    """A .bin is data: refuse to build any other object (unpickling can run code)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a verification .bin")
        return super().find_class(module, name)


def read_bin(path: str, image_size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """Read an insightface verification ``.bin``.

    Returns:
        ``images``: (2P, image_size, image_size, 3) uint8 RGB; ``issame``: (P,) bool.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"verification set {path!r} does not exist")
    try:
        with open(path, "rb") as f:
            bins, issame = _BinUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise ValueError(f"{path!r} is not an insightface verification .bin "
                         f"(a pickle of (image bytes list, issame list)): {e}") from e
    issame = np.asarray(issame, dtype=bool).reshape(-1)
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{path!r} holds {len(bins)} images for {len(issame)} pairs; expected {2 * len(issame)}")
    images = np.stack([load_rgb(io.BytesIO(bytes(b)), f"{i} of {path!r}", image_size)
                       for i, b in enumerate(bins)])
    return images, issame


def write_bin(path: str, images: Iterable[np.ndarray], issame: Sequence[bool], quality: int = 95) -> None:
    """Write pairs in insightface's ``.bin`` format (JPEG bytes, pickle protocol 4).

    ``images``: uint8 RGB arrays (H, W, 3), two per pair, in pair order. The file is
    written to a temporary name and renamed, so a reader never sees half of it.
    """
    bins = []
    for image in images:
        buf = io.BytesIO()
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
        bins.append(buf.getvalue())
    issame = [bool(x) for x in issame]
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{len(bins)} images for {len(issame)} pairs; expected {2 * len(issame)}")
    atomic_write(path, lambda f: pickle.dump((bins, issame), f, protocol=4))


@torch.no_grad()
def embed_images(model: nn.Module, images: np.ndarray, batch_size: int = 64, flip: bool = True,
                 device: torch.device | str = "cpu") -> np.ndarray:
    """L2-normalised embeddings of uint8 RGB images (N, H, W, 3), in eval mode.

    With ``flip`` the embedding is that of the image plus that of its mirror image
    (insightface's verification protocol). The model's training mode is restored.
    """
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(images), batch_size):
            x = images_to_tensor(images[i:i + batch_size]).to(device)
            emb = model(x)
            if flip:
                emb = emb + model(torch.flip(x, dims=[3]))
            out.append(torch.nn.functional.normalize(emb.float(), dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


def pair_scores(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of pairs (2i, 2i + 1) of L2-normalised embeddings."""
    return np.sum(embeddings[0::2] * embeddings[1::2], axis=1)


def _best_threshold(scores: np.ndarray, issame: np.ndarray) -> float:
    """The threshold with the highest accuracy on these pairs (the largest one on ties),
    among the scores themselves (every distinct decision is one of them) and +inf."""
    candidates = np.append(np.unique(scores), np.inf)
    genuine = np.sort(scores[issame])
    impostor = np.sort(scores[~issame])
    accepted_genuine = len(genuine) - np.searchsorted(genuine, candidates, side="left")
    rejected_impostor = np.searchsorted(impostor, candidates, side="left")
    correct = accepted_genuine + rejected_impostor
    return float(candidates[np.flatnonzero(correct == correct.max())[-1]])


def verification_accuracy(scores: np.ndarray, issame: np.ndarray, n_folds: int = 10) -> dict:
    """k-fold verification accuracy (LFW protocol): the pairs are cut into ``n_folds``
    contiguous folds; each fold is scored with the best threshold of the other folds.

    Returns ``{"accuracy": mean, "std": std over folds, "thresholds": per fold}``.
    """
    scores, issame = np.asarray(scores, dtype=np.float64), np.asarray(issame, dtype=bool)
    if len(scores) != len(issame) or len(scores) < n_folds:
        raise ValueError(f"need as many scores as issame flags and at least {n_folds} pairs, "
                         f"got {len(scores)} and {len(issame)}")
    folds = np.array_split(np.arange(len(scores)), n_folds)
    accuracies, thresholds = [], []
    for test in folds:
        train = np.setdiff1d(np.arange(len(scores)), test)
        t = _best_threshold(scores[train], issame[train])
        accuracies.append(np.mean((scores[test] >= t) == issame[test]))
        thresholds.append(t)
    return {"accuracy": float(np.mean(accuracies)), "std": float(np.std(accuracies)),
            "thresholds": thresholds}


def tpr_at_fpr(genuine: np.ndarray, impostor: np.ndarray,
               fprs: Sequence[float] = (1e-3, 1e-4, 1e-5)) -> dict[float, float]:
    """True accept rate at each false accept rate, from genuine and impostor scores.

    For FPR ``f`` the threshold is the ``(floor(f * n_impostor) + 1)``-th highest impostor
    score and a pair is accepted when its score is strictly above it, so at most
    ``f * n_impostor`` impostors pass. With fewer than ``1 / f`` impostor pairs this is the
    TPR at FPR 0 (above every impostor).
    """
    genuine = np.asarray(genuine, dtype=np.float64)
    impostor = np.sort(np.asarray(impostor, dtype=np.float64))[::-1]
    if not len(genuine) or not len(impostor):
        raise ValueError("need at least one genuine and one impostor score")
    out = {}
    for f in fprs:
        k = min(int(np.floor(f * len(impostor))), len(impostor) - 1)
        out[f] = float(np.mean(genuine > impostor[k]))
    return out


def megaface_rank1(features: np.ndarray, ids: np.ndarray, distractors: np.ndarray) -> float:
    """Rank-1 identification rate of MegaFace challenge 1's protocol.

    For every ordered pair (probe a, gallery b) of distinct images of one identity, b is
    hidden among the distractors; the probe is identified when it is more similar to b
    than to every distractor. Features are L2-normalised rows.
    """
    ids = np.asarray(ids)
    sim = features @ features.T
    best_distractor = (features @ distractors.T).max(axis=1)
    same = (ids[:, None] == ids[None, :]) & ~np.eye(len(ids), dtype=bool)
    if not same.any():
        raise ValueError("MegaFace rank-1 needs at least two images of one identity")
    hits = sim > best_distractor[:, None]
    return float(hits[same].mean())


def evaluate_pairs(model: nn.Module, images: np.ndarray, issame: np.ndarray, batch_size: int = 64,
                   device: torch.device | str = "cpu", fprs: Sequence[float] = (1e-3, 1e-4)) -> dict:
    """Verification of ``model`` on decoded pairs: 10-fold accuracy (with flip) and the TPR
    at each FPR of ``fprs`` over all pairs. Returns ``{"accuracy", "std", "thresholds",
    "tpr@fpr=<f>": ...}``."""
    scores = pair_scores(embed_images(model, images, batch_size, True, device))
    result = verification_accuracy(scores, issame)
    for fpr, tpr in tpr_at_fpr(scores[issame], scores[~issame], fprs).items():
        result[f"tpr@fpr={fpr:g}"] = tpr
    return result


def evaluate_bin(model: nn.Module, path: str, batch_size: int = 64, device: torch.device | str = "cpu",
                 image_size: int = 112) -> dict:
    """:func:`evaluate_pairs` on the ``.bin`` at ``path``."""
    images, issame = read_bin(path, image_size)
    return evaluate_pairs(model, images, issame, batch_size, device)
