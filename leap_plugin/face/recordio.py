"""MXNet RecordIO (``train.rec`` / ``train.idx``) without mxnet: what arcface_torch trains from.

The format is dmlc-core's RecordIO: each record is a ``uint32`` magic ``0xced7230a``, a
``uint32`` whose low 29 bits are the payload length and whose top 3 bits say whether the
record is whole (0) or the first (1), a middle (2) or the last (3) part of a record the
writer split where the payload contained the magic itself (the reader puts the magic back
between the parts); the payload is padded with zeros to a multiple of 4 bytes. The
``.idx`` file lists ``key<TAB>byte offset`` per record.

``mxnet.recordio.pack`` puts an ``IRHeader`` in front of each image: ``struct`` format
``IfQQ`` (flag, label, id, id2); with ``flag > 0`` the label is the ``flag`` float32 values
that follow the header, else the float ``label``. insightface's face ``.rec`` files begin
with a header record (key 0) whose labels are ``(first identity record, end)``: images are
keys ``1 .. first - 1``, and each identity record in ``[first, end)`` carries the key range
``(start, stop)`` of that identity's images. The class of an image is its first label.
"""
from __future__ import annotations

import io
import json
import os
import struct
from typing import Iterator, NamedTuple, Optional, Sequence

import numpy as np

from ..io import atomic_write

__all__ = ["MAGIC", "IRHeader", "RecordReader", "pack_record", "unpack_record", "write_rec", "class_counts_of_rec",
           "write_counts", "read_counts"]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("IfQQ")
_LENGTH_MASK = (1 << 29) - 1


class IRHeader(NamedTuple):
    flag: int
    label: float
    id: int
    id2: int


def pack_record(labels: Sequence[float] | float, payload: bytes, record_id: int = 0, id2: int = 0) -> bytes:
    """An ``IRHeader`` + labels + payload, as ``mxnet.recordio.pack`` writes it."""
    if isinstance(labels, (int, float)):
        return _HEADER.pack(0, float(labels), record_id, id2) + payload
    values = np.asarray(labels, dtype=np.float32)
    return _HEADER.pack(values.size, 0.0, record_id, id2) + values.tobytes() + payload


def unpack_record(record: bytes) -> tuple[IRHeader, np.ndarray, bytes]:
    """``(header, labels, payload)`` of a packed record; ``labels`` holds the float label
    when the header carries no label array."""
    if len(record) < _HEADER.size:
        raise ValueError(f"record of {len(record)} bytes is shorter than an IRHeader ({_HEADER.size})")
    header = IRHeader(*_HEADER.unpack_from(record))
    rest = record[_HEADER.size:]
    if header.flag > 0:
        labels = np.frombuffer(rest, dtype=np.float32, count=header.flag)
        return header, labels, rest[4 * header.flag:]
    return header, np.array([header.label], dtype=np.float32), rest


def _encode(payload: bytes) -> bytes:
    """One record's bytes: split where the payload holds the magic at a 4-byte boundary."""
    parts, start = [], 0
    for pos in range(0, len(payload) - 3, 4):
        if payload[pos:pos + 4] == _MAGIC_BYTES:
            parts.append(payload[start:pos])
            start = pos + 4
    parts.append(payload[start:])
    out = bytearray()
    for i, part in enumerate(parts):
        flag = 0 if len(parts) == 1 else (1 if i == 0 else (3 if i == len(parts) - 1 else 2))
        out += _MAGIC_BYTES + struct.pack("<I", (flag << 29) | len(part)) + part + b"\0" * (-len(part) % 4)
    return bytes(out)


def write_rec(rec_path: str, records: Sequence[tuple[int, bytes]], idx_path: Optional[str] = None) -> None:
    """Write ``(key, packed record)`` pairs as a ``.rec`` and its ``.idx`` (atomically)."""
    idx_path = idx_path or os.path.splitext(rec_path)[0] + ".idx"
    data, index = bytearray(), []
    for key, record in records:
        index.append(f"{key}\t{len(data)}\n")
        data += _encode(record)
    atomic_write(rec_path, lambda f: f.write(bytes(data)))
    atomic_write(idx_path, lambda f: f.write("".join(index).encode()))


class RecordReader:
    """Random access to the records of a ``.rec`` through its ``.idx``.

    Raises ``ValueError`` naming the file and offset for anything that is not RecordIO.
    """

    def __init__(self, rec_path: str, idx_path: Optional[str] = None):
        self.rec_path = rec_path
        self.idx_path = idx_path or os.path.splitext(rec_path)[0] + ".idx"
        for path in (self.rec_path, self.idx_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"RecordIO file {path!r} does not exist")
        self.offsets: dict[int, int] = {}
        with open(self.idx_path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    key, offset = line.split("\t")
                    self.offsets[int(key)] = int(offset)
                except ValueError:
                    raise ValueError(f"{self.idx_path!r} line {number} is not 'key<TAB>offset': {line!r}") from None
        self._file = open(self.rec_path, "rb")
        self._size = os.path.getsize(self.rec_path)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RecordReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def keys(self) -> list[int]:
        return sorted(self.offsets)

    def _part(self, offset: int) -> tuple[int, bytes, int]:
        self._file.seek(offset)
        head = self._file.read(8)
        if len(head) < 8:
            raise ValueError(f"{self.rec_path!r}: truncated record header at byte {offset}")
        magic, word = struct.unpack("<II", head)
        if magic != MAGIC:
            raise ValueError(f"{self.rec_path!r}: no RecordIO magic at byte {offset} (not a .rec, or the .idx "
                             "does not belong to it)")
        length = word & _LENGTH_MASK
        payload = self._file.read(length)
        if len(payload) < length:
            raise ValueError(f"{self.rec_path!r}: record at byte {offset} is truncated")
        return word >> 29, payload, offset + 8 + length + (-length % 4)

    def read(self, key: int) -> bytes:
        """The payload of record ``key`` (multi-part records reassembled)."""
        if key not in self.offsets:
            raise KeyError(f"{self.idx_path!r} has no record {key}")
        flag, payload, nxt = self._part(self.offsets[key])
        if flag == 0:
            return payload
        if flag != 1:
            raise ValueError(f"{self.rec_path!r}: record {key} starts in the middle of a split record")
        parts = [payload]
        while flag != 3:
            flag, payload, nxt = self._part(nxt)
            parts.append(payload)
        return _MAGIC_BYTES.join(parts)

    def header(self, key: int) -> tuple[IRHeader, np.ndarray]:
        header, labels, _ = unpack_record(self.read(key))
        return header, labels

    def image_keys(self) -> list[int]:
        """Keys of the image records: ``1 .. first - 1`` after insightface's header record,
        else every key."""
        header, labels = self.header(0) if 0 in self.offsets else (None, None)
        if header is not None and header.flag > 0:
            return list(range(1, int(labels[0])))
        return self.keys

    def iter_images(self) -> Iterator[tuple[int, int, bytes]]:
        """``(key, class, encoded image)`` of every image record."""
        for key in self.image_keys():
            _, labels, payload = unpack_record(self.read(key))
            yield key, int(labels[0]), payload


def class_counts_of_rec(rec_path: str, idx_path: Optional[str] = None, num_classes: Optional[int] = None) -> list[int]:
    """K_i of every class of a face ``.rec``, from the image records' labels (the class is
    the first label; counts indexed by class id, ``num_classes`` long when given)."""
    with RecordReader(rec_path, idx_path) as reader:
        labels = [int(reader.header(key)[1][0]) for key in reader.image_keys()]
    if not labels:
        raise ValueError(f"{rec_path!r} holds no image records")
    if min(labels) < 0:
        raise ValueError(f"{rec_path!r} holds negative class labels (min {min(labels)})")
    counts = np.bincount(labels, minlength=num_classes or 0)
    if num_classes is not None and len(counts) > num_classes:
        raise ValueError(f"{rec_path!r} has class ids up to {len(counts) - 1} but num_classes = {num_classes}")
    return counts.tolist()


def write_counts(path: str, counts: Sequence[int]) -> None:
    """A class-counts file: JSON ``{"class_counts": [K_0, K_1, ...]}``."""
    atomic_write(path, lambda f: f.write(json.dumps({"class_counts": [int(k) for k in counts]}).encode()))


def read_counts(path: str) -> list[int]:
    """K_i from a file written by :func:`write_counts` (or ``leap-face-counts``)."""
    try:
        with open(path) as f:
            counts = json.load(f)["class_counts"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"class counts file {path!r} cannot be read ({type(e).__name__}: {e}); write it with "
                         "leap-face-counts") from e
    if not isinstance(counts, list) or not counts or not all(isinstance(k, int) and k >= 0 for k in counts):
        raise ValueError(f"class counts file {path!r} must hold a non-empty list of integers >= 0")
    return counts


def decode(payload: bytes, what: str):
    """An encoded image payload as a PIL image (raises ValueError naming ``what``)."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(payload))
        image.load()
        return image
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {what}: {e}") from e
