"""``leap-face-counts``: the per-class image counts K_i of an arcface_torch ``.rec``, without mxnet.

    leap-face-counts /data/ms1m-retinaface/train.rec -o /data/ms1m-retinaface/class_counts.json
    leap-face-counts /data/ms1m-retinaface -o /data/ms1m-retinaface/class_counts.json

The argument is read as ``leap-face-train`` reads its ``rec`` key
(:func:`leap_plugin.face.data.rec_files`): a ``.rec`` file (its ``.idx`` beside it, or
``--idx``) or a folder holding arcface_torch's ``train.rec`` / ``train.idx``.

``LeapPartialFC(..., class_counts="class_counts.json")`` and ``leap-face-train``'s
``class_counts=`` key read the file it writes (JSON ``{"class_counts": [K_0, K_1, ...]}``).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from ..face.data import rec_files
from ..face.recordio import class_counts_of_rec, write_counts

__all__ = ["main"]


def resolve_rec(path: str) -> tuple[str, str]:
    """``(rec, idx)`` of a ``.rec`` file or a folder holding ``train.rec``, resolved as
    ``leap-face-train`` resolves its ``rec`` key; ``FileNotFoundError`` naming what is missing."""
    found = rec_files(path)
    if found is not None:
        return found
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path!r} does not exist")
    raise FileNotFoundError(f"{path!r} is neither a .rec file nor a folder holding train.rec (and train.idx), "
                            "arcface_torch's layout")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="leap-face-counts", description=__doc__.split("\n\n")[0])
    parser.add_argument("rec", help="train.rec (its .idx beside it, or --idx), or a folder holding train.rec / train.idx")
    parser.add_argument("--idx", help="the .idx file (default: the .rec's name with .idx)")
    parser.add_argument("--num-classes", type=int, help="pad the counts to this many classes")
    parser.add_argument("-o", "--output", required=True, help="counts file to write (JSON)")
    args = parser.parse_args(argv)
    try:
        rec, idx = resolve_rec(args.rec)
        counts = class_counts_of_rec(rec, args.idx or idx, args.num_classes)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    write_counts(args.output, counts)
    empty = sum(1 for k in counts if k == 0)
    print(f"{args.output}: {len(counts)} classes, {sum(counts)} images, K_i from {min(counts)} to {max(counts)}"
          + (f" ({empty} classes without images)" if empty else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
