"""Long-tailed training sets built from any identity-labelled list: the paper's ``<H_n, S_k>``
(and, for faces, ``<H_a, T_b>``) splits.

Items are fastreid's tuples ``(img_path, pid, camid)``; nothing here imports a toolbox.
"""
from __future__ import annotations

import statistics
from collections import Counter
from typing import Hashable, Iterable, Sequence

import numpy as np

from ..validation import require_int

__all__ = ["long_tail_split", "label_counts", "split_summary", "item_key"]

Item = tuple  # (img_path, pid, camid), as fastreid's datasets list them


def label_counts(labels: Iterable[Hashable]) -> dict[Hashable, int]:
    """Number of samples K_i of each label."""
    return dict(Counter(labels))


def item_key(item: Item) -> tuple[str, ...]:
    """Sort key of an item that works for int and str fields alike."""
    # str() of every field: pids and camids may be ints or strings, and the order of
    # the result must not depend on the order the items came in.
    return tuple(str(field) for field in item)


def _rank_identities(counts: dict[Hashable, int]) -> list[Hashable]:
    """Identities by sample count, largest first; ties broken by the pid's string."""
    return sorted(counts, key=lambda pid: (-counts[pid], str(pid)))


def long_tail_split(items: Sequence[Item], head: int, tail_samples: int, seed: int = 0,
                    tail_classes: int = -1) -> list[Item]:
    """The paper's long-tailed training set from a full one.

    Identities are ranked by sample count (ties by the pid's string). The first ``head``
    keep all their samples. Of the others, those with at least ``tail_samples`` samples
    are tail candidates; the first ``tail_classes`` of them in rank order (``-1``: all)
    keep exactly ``tail_samples`` samples each, drawn without replacement by
    ``numpy.random.default_rng(seed)``; every other identity is dropped.

    - re-ID ``<H_n, S_k>``: ``head=n, tail_samples=k`` (``tail_classes=-1``);
    - face ``<H_a, T_b>``: ``head=a, tail_classes=b`` and ``tail_samples`` per tail class.

    The result is sorted, so it depends on the set of items and the seed only, never on
    their order.
    """
    require_int(head, "head", 0)
    require_int(tail_samples, "tail_samples", 1)
    require_int(tail_classes, "tail_classes", -1)
    by_pid: dict[Hashable, list[Item]] = {}
    for item in sorted(items, key=item_key):
        by_pid.setdefault(item[1], []).append(item)
    ranked = _rank_identities({pid: len(group) for pid, group in by_pid.items()})
    tail = [pid for pid in ranked[head:] if len(by_pid[pid]) >= tail_samples]
    if tail_classes >= 0:
        tail = tail[:tail_classes]

    rng = np.random.default_rng(seed)
    kept = [item for pid in ranked[:head] for item in by_pid[pid]]
    for pid in tail:  # rank order, so each identity's draw is fixed by the seed
        group = by_pid[pid]
        chosen = rng.choice(len(group), size=tail_samples, replace=False)
        kept.extend(group[i] for i in sorted(chosen))
    return sorted(kept, key=item_key)


def split_summary(items: Sequence[Item]) -> dict[str, float]:
    """Identities, images and the per-identity image counts (max, median, min) of a list."""
    counts = list(label_counts(item[1] for item in items).values())
    if not counts:
        return {"ids": 0, "images": 0, "max": 0, "median": 0, "min": 0}
    return {"ids": len(counts), "images": len(items), "max": max(counts),
            "median": statistics.median(counts), "min": min(counts)}
