"""LongTailIdentitySampler and LeapHook."""
import itertools
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import leap_plugin  # noqa: F401
from leap_plugin.reid.sampler import LongTailIdentitySampler, identity_probabilities

COUNTS = {"a": 64, "b": 16, "c": 4, "d": 4, "e": 1, "f": 9}
ITEMS = [(f"{p}_{k}.jpg", p, k % 3) for p, n in COUNTS.items() for k in range(n)]


def batches(sampler, n):
    it = iter(sampler)
    return [list(itertools.islice(it, sampler.mini_batch_size)) for _ in range(n)]


def test_batches_are_p_identities_times_k_instances():
    sampler = LongTailIdentitySampler(ITEMS, 8, 2, q=0.5, seed=0)
    for batch in batches(sampler, 50):
        pids = [ITEMS[i][1] for i in batch]
        per_id = Counter(pids)
        assert len(per_id) == 4 and set(per_id.values()) == {2}
        assert all(pids[j] == pids[j + 1] for j in range(0, 8, 2))
        for pid, n in per_id.items():  # without replacement when the identity has enough images
            if COUNTS[pid] >= 2:
                assert len({i for i in batch if ITEMS[i][1] == pid}) == 2


@pytest.mark.parametrize("q", [0.0, 0.5, 1.0])
def test_identity_frequency_follows_k_to_the_q(q):
    # one identity per batch: the draw frequency is exactly the probability K_i^q / sum K_j^q
    sampler = LongTailIdentitySampler(ITEMS, 2, 2, q=q, seed=1)
    first = Counter(ITEMS[b[0]][1] for b in batches(sampler, 6000))
    want = identity_probabilities(list(COUNTS.values()), q)
    got = np.array([first[p] / 6000 for p in COUNTS])
    np.testing.assert_allclose(got, want, atol=0.02)


def test_ranks_take_disjoint_slices_of_one_global_batch(monkeypatch):
    from fastreid.utils import comm

    slices = []
    for rank in range(2):
        monkeypatch.setattr(comm, "get_world_size", lambda: 2)
        monkeypatch.setattr(comm, "get_rank", lambda r=rank: r)
        slices.append(batches(LongTailIdentitySampler(ITEMS, 4, 2, q=1.0, seed=3), 5))
    for b0, b1 in zip(*slices):
        ids0, ids1 = {ITEMS[i][1] for i in b0}, {ITEMS[i][1] for i in b1}
        assert len(ids0) == 2 and len(ids1) == 2 and not ids0 & ids1


def test_sampler_errors_name_the_setting():
    with pytest.raises(ValueError, match="NUM_INSTANCE"):
        LongTailIdentitySampler(ITEMS, 7, 2)
    with pytest.raises(ValueError, match="identities"):
        LongTailIdentitySampler(ITEMS, 16, 2)


def test_hook_no_cloud_before_start_epoch_and_periodic_updates():
    from fastreid.utils.events import EventStorage

    from leap_plugin.reid.hooks import LeapHook

    head = SimpleNamespace(cloud_active=None, update_memory=None, memory=None, hook_attached=False)
    from leap_plugin.core import LeapMemory

    head.memory = LeapMemory(3, 4, class_counts=[10, 2, 2])
    g = torch.Generator().manual_seed(0)
    head.memory.update(torch.randn(12, 4, generator=g), torch.tensor([0] * 8 + [1] * 2 + [2] * 2))
    hook = LeapHook([head], start_epoch=2, center_update_period=3, stats_period=2)
    with EventStorage(0) as storage:
        hook.trainer = SimpleNamespace(epoch=0, iter=0, storage=storage)
        hook.before_train()
        assert head.hook_attached
        seen = []
        for epoch, it in [(0, 0), (0, 1), (1, 2), (2, 3), (3, 6)]:
            hook.trainer.epoch, hook.trainer.iter = epoch, it
            hook.before_step()
            seen.append((head.cloud_active, head.update_memory))
            hook.after_step()
            # between steps (PreciseBN, evaluation) nothing updates or clouds
            assert (head.cloud_active, head.update_memory) == (False, False)
        assert seen == [(False, True), (False, False), (False, False), (True, True), (True, True)]
        latest = storage.latest()
        assert "leap/clouded_classes" in latest and "leap/cloud_width" in latest
        assert latest["leap/cloud_active"][0] == 1.0
