"""Class counts from arcface_torch's train.rec / train.idx without mxnet. The
test files are written byte by byte in the MXNet RecordIO format (dmlc-core's record
framing, mxnet.recordio's IRHeader), independently of the writer under test."""
import io
import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import face_helpers as fh
from tests.helpers.cli_errors import one_error_line
from leap_plugin.cli import face_counts, face_train
from leap_plugin.face import LeapMarginLoss, LeapPartialFC
from leap_plugin.face.data import FaceDataset
from leap_plugin.face.recordio import MAGIC, RecordReader, class_counts_of_rec, pack_record, read_counts, write_rec

LABELS = [0, 0, 0, 1, 2, 2, 1, 2, 2, 0]  # 3 classes: K = 4, 2, 4


def jpeg(seed):
    image = np.random.default_rng(seed).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG")
    return buf.getvalue()


def frame(payload, cflag=0):
    """dmlc RecordIO: magic, (cflag << 29) | length, payload, zero padding to 4 bytes."""
    return struct.pack("<II", MAGIC, (cflag << 29) | len(payload)) + payload + b"\0" * (-len(payload) % 4)


def irheader(flag, label, rid, labels=()):
    return struct.pack("IfQQ", flag, label, rid, 0) + np.asarray(labels, dtype=np.float32).tobytes()


def write_insightface_rec(folder, scalar_labels=False):
    """insightface's layout: record 0 = header with (first identity record, end), images
    1..N (label = class, as a float or a 1-label array), identity records (start, stop)."""
    n, classes = len(LABELS), 3
    records = [(0, irheader(2, 0.0, 0, [n + 1, n + 1 + classes]))]
    for i, y in enumerate(LABELS, start=1):
        header = irheader(0, float(y), i) if scalar_labels else irheader(1, 0.0, i, [y])
        records.append((i, header + jpeg(i)))
    for c in range(classes):
        keys = [i for i, y in enumerate(LABELS, start=1) if y == c]
        records.append((n + 1 + c, irheader(2, 0.0, n + 1 + c, [keys[0], keys[-1] + 1])))
    data, index = b"", ""
    for key, payload in records:
        index += f"{key}\t{len(data)}\n"
        data += frame(payload)
    (folder / "train.rec").write_bytes(data)
    (folder / "train.idx").write_text(index)
    return folder / "train.rec"


@pytest.mark.parametrize("scalar_labels", [False, True])
def test_class_counts_from_a_real_format_rec(tmp_path, scalar_labels):
    rec = write_insightface_rec(tmp_path, scalar_labels)
    assert class_counts_of_rec(str(rec)) == [4, 2, 4]
    assert class_counts_of_rec(str(rec), num_classes=5) == [4, 2, 4, 0, 0]
    with RecordReader(str(rec)) as reader:
        assert reader.image_keys() == list(range(1, 11))
        header, labels = reader.header(3)
        assert header.id == 3 and int(labels[0]) == LABELS[2]


def test_split_record_is_reassembled(tmp_path):
    """A payload holding the magic at a 4-byte boundary is written in parts (cflag 1, 2, 3)."""
    payload = irheader(1, 0.0, 1, [7]) + b"abcd" + struct.pack("<I", MAGIC) + b"efgh" + struct.pack("<I", MAGIC) + b"xy"
    assert len(irheader(1, 0.0, 1, [7])) % 4 == 0
    first, rest = payload.split(struct.pack("<I", MAGIC), 1)
    middle, last = rest.split(struct.pack("<I", MAGIC), 1)
    data = frame(first, 1) + frame(middle, 2) + frame(last, 3)
    (tmp_path / "x.rec").write_bytes(data)
    (tmp_path / "x.idx").write_text("1\t0\n")
    with RecordReader(str(tmp_path / "x.rec")) as reader:
        assert reader.read(1) == payload
    # the writer splits the same way (byte for byte)
    write_rec(str(tmp_path / "y.rec"), [(1, payload)])
    assert (tmp_path / "y.rec").read_bytes() == data


def test_writer_round_trip_and_bad_files(tmp_path):
    # no header record (key 0): every record is an image, as arcface_torch reads such a file
    write_rec(str(tmp_path / "z.rec"), [(k, pack_record([float(y)], jpeg(k), k)) for k, y in enumerate(LABELS, 1)])
    assert class_counts_of_rec(str(tmp_path / "z.rec")) == [4, 2, 4]
    (tmp_path / "bad.rec").write_bytes(b"\0" * 64)
    (tmp_path / "bad.idx").write_text("0\t0\n")
    with pytest.raises(ValueError, match="no RecordIO magic at byte 0"):
        class_counts_of_rec(str(tmp_path / "bad.rec"))
    with pytest.raises(FileNotFoundError, match="nothere.idx"):
        RecordReader(str(tmp_path / "z.rec"), str(tmp_path / "nothere.idx"))


def test_leap_face_counts_writes_what_leap_partial_fc_reads(tmp_path, capsys):
    rec = write_insightface_rec(tmp_path)
    out = tmp_path / "counts.json"
    assert face_counts.main([str(rec), "-o", str(out)]) == 0
    assert "3 classes, 10 images" in capsys.readouterr().out
    assert json.loads(out.read_text()) == {"class_counts": [4, 2, 4]} and read_counts(str(out)) == [4, 2, 4]
    pfc = LeapPartialFC(LeapMarginLoss(16.0, 1.0, 0.0, 0.35), 8, 3, class_counts=str(out))
    assert pfc.memory.class_counts.tolist() == [4, 2, 4]
    with pytest.raises(SystemExit):
        face_counts.main([str(tmp_path / "none.rec"), "-o", str(out)])


def test_leap_face_train_trains_from_a_rec(tmp_path, capsys):
    rec = write_insightface_rec(tmp_path)
    dataset = FaceDataset(str(tmp_path))  # a folder holding train.rec, arcface_torch's `rec`
    assert dataset.num_classes == 3 and dataset.class_counts() == [4, 2, 4] and len(dataset) == 10
    image, label = dataset[0]
    assert image.shape == (3, 112, 112) and label == LABELS[0]
    counts = tmp_path / "counts.json"
    face_counts.main([str(rec), "-o", str(counts)])
    config = tmp_path / "rec.py"
    fh.write_config(config, margin_list=(1.0, 0.0, 0.35), scale=16.0, network="tiny", embedding_size=8, batch_size=4,
                    lr=0.01, num_epoch=1, frequent=1, num_workers=1, seed=0, rec=str(tmp_path),
                    class_counts=str(counts), output=str(tmp_path / "out"), leap=dict(enabled=True, start_epoch=0))
    assert face_train.main([str(config)]) == 0  # one loader worker: its own file handle
    state = torch.load(tmp_path / "out" / "checkpoint_rank0.pt", weights_only=True)
    assert state["partial_fc"]["memory.class_counts"].tolist() == [4, 2, 4]
    # a counts file that does not match the data is refused
    (tmp_path / "wrong.json").write_text(json.dumps({"class_counts": [5, 2, 3]}))
    with pytest.raises(SystemExit) as exit_info:
        face_train.main([str(config), "--overwrite", f"class_counts={tmp_path / 'wrong.json'}"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "class_counts" in err and "not those of the training data" in err


def _counts_error(argv, capsys):
    return one_error_line(face_counts.main, argv, capsys)


def test_leap_face_counts_takes_a_folder_holding_train_rec_as_leap_face_train_does(tmp_path, capsys):
    write_insightface_rec(tmp_path)  # tmp_path/train.rec + train.idx: arcface_torch's `rec` folder
    out = tmp_path / "counts.json"
    assert face_counts.main([str(tmp_path), "-o", str(out)]) == 0
    assert read_counts(str(out)) == [4, 2, 4] == FaceDataset(str(tmp_path)).class_counts()
    line = _counts_error([str(tmp_path / "nowhere"), "-o", str(out)], capsys)
    assert line == f"leap-face-counts: error: {str(tmp_path / 'nowhere')!r} does not exist"
    (tmp_path / "images").mkdir()
    line = _counts_error([str(tmp_path / "images"), "-o", str(out)], capsys)
    assert "is neither a .rec file nor a folder holding train.rec (and train.idx)" in line
    (tmp_path / "train.idx").unlink()
    line = _counts_error([str(tmp_path), "-o", str(out)], capsys)
    assert "train.idx' does not exist" in line
