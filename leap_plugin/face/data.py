"""Face training data from an image folder (one sub-folder per identity) or an
arcface_torch ``.rec``, optionally cut to the paper's long-tailed ``<H_a, T_b>`` split, and
the image normalisation shared by training, verification and export."""
from __future__ import annotations

import io
import logging
import os
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..data.folders import scan_folder
from ..data.images import to_rgb
from ..data.longtail import long_tail_split, split_summary
from .backbones import INPUT_SIZE
from .recordio import RecordReader, unpack_record

__all__ = ["FaceDataset", "rec_files", "images_to_tensor", "load_rgb"]

logger = logging.getLogger(__name__)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB images (N, H, W, 3) -> float (N, 3, H, W) scaled as ``(x / 255 - 0.5) / 0.5``,
    arcface_torch's training normalisation and insightface's ``ArcFaceONNX`` input."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x.div_(127.5).sub_(1.0)


def load_rgb(source, what: str, size: int = INPUT_SIZE) -> np.ndarray:
    """Decode an image file or file-like object to a (size, size, 3) uint8 RGB array.

    Aligned face crops are already ``size`` x ``size``; other sizes are resized.
    Raises ``ValueError`` naming ``what`` when the image cannot be decoded.
    """
    try:
        with Image.open(source) as image:
            image = to_rgb(image)
            if image.size != (size, size):
                image = image.resize((size, size), Image.BILINEAR)
            return np.array(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {what}: {e}") from e


class FaceDataset(Dataset):
    """Face images as ``(image tensor, label)`` pairs, labels 0..C-1 in the sorted order of
    the identities kept, from an image folder (one sub-folder per identity) or an
    arcface_torch ``.rec`` (:mod:`leap_plugin.face.recordio`), optionally cut to the
    paper's long-tailed ``<H_a, T_b>`` split.

    Args:
        root: an image folder; a ``.rec`` file (its ``.idx`` beside it); or a folder holding
            ``train.rec`` and ``train.idx`` (arcface_torch's ``rec`` key).
        long_tail: None, or a dict with ``head``, ``tail_classes``, ``tail_samples`` and
            ``seed`` for :func:`leap_plugin.data.longtail.long_tail_split` (the top ``head``
            identities whole, the next ``tail_classes`` with ``tail_samples`` images each).
        flip: random horizontal flips (training augmentation of arcface_torch).
        input_size: side of the square crops fed to the network.
    """

    def __init__(self, root: str, long_tail: Optional[dict] = None, flip: bool = True,
                 input_size: int = INPUT_SIZE):
        self.rec = rec_files(root)
        if self.rec is None:
            items = scan_folder(root)
        else:
            with RecordReader(*self.rec) as reader:
                items = [(key, int(reader.header(key)[1][0]), key) for key in reader.image_keys()]
            if not items:
                raise ValueError(f"{self.rec[0]!r} holds no image records")
        if long_tail is not None:
            items = long_tail_split(items, long_tail["head"], long_tail["tail_samples"],
                                    long_tail.get("seed", 0), long_tail.get("tail_classes", -1))
            if not items:
                raise ValueError(f"the long-tail split {long_tail} of {root!r} keeps no image")
        identities = sorted({item[1] for item in items})
        index = {identity: i for i, identity in enumerate(identities)}
        self.root = root
        self.identities = identities
        self.sources = [item[0] for item in items]  # paths, or record keys of the .rec
        self.labels = np.array([index[item[1]] for item in items], dtype=np.int64)
        self.flip = flip
        self.input_size = input_size
        self._reader: Optional[RecordReader] = None
        self._reader_pid: Optional[int] = None
        logger.info("face data %s: %s", root, split_summary(items))

    @property
    def num_classes(self) -> int:
        return len(self.identities)

    def class_counts(self) -> list[int]:
        """K_i of every class (Eq. 5), in label order."""
        return np.bincount(self.labels, minlength=self.num_classes).tolist()

    def __len__(self) -> int:
        return len(self.sources)

    def _load(self, i: int) -> np.ndarray:
        if self.rec is None:
            return load_rgb(self.sources[i], repr(self.sources[i]), self.input_size)
        if self._reader is None or self._reader_pid != os.getpid():  # one file handle per loader worker
            self._reader = RecordReader(*self.rec)
            self._reader_pid = os.getpid()
        _, _, payload = unpack_record(self._reader.read(self.sources[i]))
        return load_rgb(io.BytesIO(payload), f"record {self.sources[i]} of {self.rec[0]!r}", self.input_size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self._load(i)
        if self.flip and torch.rand(()) < 0.5:
            image = image[:, ::-1]
        return images_to_tensor(image[None])[0], int(self.labels[i])


def rec_files(root: str) -> Optional[tuple[str, str]]:
    """``(train.rec, train.idx)`` when ``root`` is a ``.rec`` or a folder holding
    ``train.rec``; None for an image folder."""
    rec = root if root.endswith(".rec") else os.path.join(root, "train.rec")
    if not os.path.isfile(rec):
        if root.endswith(".rec"):
            raise FileNotFoundError(f"RecordIO file {root!r} does not exist")
        return None
    return rec, os.path.splitext(rec)[0] + ".idx"
