"""Long-tailed splits and identity / query-gallery splits (toolbox-free)."""
import random
from collections import Counter

import pytest

from leap_plugin.data.folders import split_identities, split_query_gallery
from leap_plugin.data.longtail import label_counts, long_tail_split, split_summary

# identity -> number of images; "c" and "d" tie, so their rank comes from the pid string
COUNTS = {"a": 10, "b": 8, "d": 6, "c": 6, "e": 4, "f": 2}


def make_items(counts=COUNTS):
    return [(f"{pid}/{i:02d}.jpg", pid, f"cam{i % 3}") for pid, n in counts.items() for i in range(n)]


def per_id(items):
    return Counter(item[1] for item in items)


def test_head_tail_split_counts():
    items = make_items()
    split = long_tail_split(items, head=2, tail_samples=3, seed=0)
    # <H2, S3>: a, b whole; c, d, e reduced to 3; f (2 < 3 images) dropped
    assert per_id(split) == {"a": 10, "b": 8, "c": 3, "d": 3, "e": 3}
    assert set(split) <= set(items)


def test_head_ties_broken_by_pid_string():
    split = long_tail_split(make_items(), head=3, tail_samples=4, seed=0)
    assert per_id(split) == {"a": 10, "b": 8, "c": 6, "d": 4, "e": 4}


def test_face_split_keeps_first_tail_classes():
    # <H_1, T_2> with 3 samples per tail class: b, c come next in rank order
    split = long_tail_split(make_items(), head=1, tail_samples=3, seed=0, tail_classes=2)
    assert per_id(split) == {"a": 10, "b": 3, "c": 3}
    assert per_id(long_tail_split(make_items(), head=2, tail_samples=3, tail_classes=0)) == {"a": 10, "b": 8}


def test_split_is_seeded_and_independent_of_item_order():
    items = make_items()
    shuffled = items[:]
    random.Random(1).shuffle(shuffled)
    split = long_tail_split(items, head=1, tail_samples=3, seed=7)
    assert long_tail_split(shuffled, head=1, tail_samples=3, seed=7) == split
    assert len({tuple(long_tail_split(items, head=1, tail_samples=3, seed=s)) for s in range(4)}) > 1


def test_int_pids():
    items = [(f"{i}.jpg", i % 3, 0) for i in range(12)]
    assert per_id(long_tail_split(items, head=1, tail_samples=2)) == {0: 4, 1: 2, 2: 2}


@pytest.mark.parametrize("kwargs, name", [
    ({"head": -1, "tail_samples": 3}, "head"),
    ({"head": 1, "tail_samples": 0}, "tail_samples"),
    ({"head": 1, "tail_samples": 3, "tail_classes": -2}, "tail_classes"),
])
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        long_tail_split(make_items(), **kwargs)


def test_summary_and_counts():
    items = make_items()
    assert label_counts(item[1] for item in items) == COUNTS
    assert split_summary(items) == {"ids": 6, "images": 36, "max": 10, "median": 6, "min": 2}


def test_identity_split_is_disjoint_and_seeded():
    ids = [f"id{i}" for i in range(10)]
    train, test = split_identities(ids + ids[:3], test_fraction=0.3, seed=2)
    assert len(test) == 3 and not set(train) & set(test) and set(train) | set(test) == set(ids)
    assert split_identities(list(reversed(ids)), 0.3, 2) == (train, test)
    with pytest.raises(ValueError, match="test_fraction"):
        split_identities(ids, 1.5, 0)


def test_query_gallery_split_keeps_a_cross_camera_match():
    items = make_items({"a": 5, "b": 2, "c": 4})
    items.append(("solo/0.jpg", "solo", "cam0"))  # one camera: cannot be a valid query
    items += [("two/0.jpg", "two", "x"), ("two/1.jpg", "two", "y")]
    query, gallery = split_query_gallery(items, query_per_id=2, seed=0)
    assert sorted(query + gallery) == sorted(items) and not set(query) & set(gallery)
    for path, pid, cam in query:
        assert any(g[1] == pid and g[2] != cam for g in gallery), path
    # two images of two cameras ("b", "two") give one query: the other must stay in the gallery
    assert per_id(query) == {"a": 2, "b": 1, "c": 2, "two": 1}
    assert split_query_gallery(list(reversed(items)), 2, 0) == (query, gallery)
