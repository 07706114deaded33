"""``leap-face-counts``: the per-class image counts K_i of an arcface_torch ``.rec``, without mxnet.

    leap-face-counts /data/ms1m-retinaface/train.rec -o /data/ms1m-retinaface/class_counts.json

``LeapPartialFC(..., class_counts="class_counts.json")`` and ``leap-face-train``'s
``class_counts=`` key read the file it writes (JSON ``{"class_counts": [K_0, K_1, ...]}``).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..face.recordio import class_counts_of_rec, write_counts

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="leap-face-counts", description=__doc__.split("\n\n")[0])
    parser.add_argument("rec", help="train.rec (its .idx beside it, or --idx)")
    parser.add_argument("--idx", help="the .idx file (default: the .rec's name with .idx)")
    parser.add_argument("--num-classes", type=int, help="pad the counts to this many classes")
    parser.add_argument("-o", "--output", required=True, help="counts file to write (JSON)")
    args = parser.parse_args(argv)
    try:
        counts = class_counts_of_rec(args.rec, args.idx, args.num_classes)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    write_counts(args.output, counts)
    empty = sum(1 for k in counts if k == 0)
    print(f"{args.output}: {len(counts)} classes, {sum(counts)} images, K_i from {min(counts)} to {max(counts)}"
          + (f" ({empty} classes without images)" if empty else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
