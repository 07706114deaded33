"""Class centers (Eq. 4), the angle memory (Eq. 5) and per-class statistics."""
import math

import pytest
import torch
import torch.nn.functional as F

from leap_plugin.core.memory import LeapMemory


def unit(*v):
    return F.normalize(torch.tensor(v, dtype=torch.float32), dim=-1)


def angle(a, b):
    return math.acos(max(-1.0, min(1.0, float(F.normalize(a, dim=0) @ F.normalize(b, dim=0)))))


@pytest.mark.parametrize("update,w_batch", [("printed", 0.75), ("ema", 0.25)])
def test_center_update_eq4_by_hand(update, w_batch):
    """printed: c <- (1 - gamma) m + gamma c; ema: c <- (1 - gamma) c + gamma m (gamma = 0.25)."""
    mem = LeapMemory(2, 2, class_counts=[4, 4], center_lr=0.25, center_update=update)
    e0, e1 = unit(1.0, 0.0), unit(0.0, 1.0)
    mem.update(torch.stack([e0, e1]), torch.tensor([0, 0]))
    # first sighting: c = m = mean of normalised features, in both updates
    torch.testing.assert_close(mem.centers[0], torch.tensor([0.5, 0.5]))
    assert not mem.center_seen[1] and torch.equal(mem.centers[1], torch.zeros(2))
    # features are L2-normalised before averaging: (3, 0) counts as (1, 0)
    mem.update(torch.tensor([[3.0, 0.0]]), torch.tensor([0]))
    want = w_batch * torch.tensor([1.0, 0.0]) + (1 - w_batch) * torch.tensor([0.5, 0.5])
    torch.testing.assert_close(mem.centers[0], want)
    # angles are measured after the update: beta = arccos(cos(f, c))
    assert mem.memory[2].item() == pytest.approx(angle(e0, mem.centers[0]), abs=1e-6)


def test_ema_center_is_a_moving_average():
    """With ema a center forgets its start as (1 - gamma)^t: after t batches at the same
    feature f, c = (1 - gamma)^t c_0 + (1 - (1 - gamma)^t) f. printed jumps to f at once."""
    gamma, steps = 0.1, 7
    f0, f1 = unit(0.0, 1.0), unit(1.0, 0.0)
    for update in ("ema", "printed"):
        mem = LeapMemory(1, 2, class_counts=[3], center_lr=gamma, center_update=update)
        mem.update(f0[None], torch.tensor([0]))
        for _ in range(steps):
            mem.update(f1[None], torch.tensor([0]))
        keep = (1 - gamma) ** steps if update == "ema" else gamma ** steps
        torch.testing.assert_close(mem.centers[0], keep * f0 + (1 - keep) * f1)
    assert keep < 1e-6  # printed: the last batch alone, to float precision


def test_ema_separates_head_and_tail_under_pk_batches_and_printed_does_not():
    """Classes of equal true spread, head K_i = 40, tail K_i = 4, every batch
    P classes x K = 4 images. A moving-average center approaches the mean of all of a
    class's images, so the angles of a 4-image tail class (whose center is the mean of the
    very samples measured) shrink and the head's do not; with Eq. 4 as printed every
    center is ~ the current 4-image batch mean and head and tail look alike."""
    g = torch.Generator().manual_seed(0)
    heads, tails, dim = 50, 300, 16
    counts = [40] * heads + [4] * tails
    means = F.normalize(torch.randn(len(counts), dim, generator=g), dim=1)
    data = [means[c] + 0.1 / dim ** 0.5 * torch.randn(k, dim, generator=g) for c, k in enumerate(counts)]
    ratio = {}
    for update in ("ema", "printed"):
        mem = LeapMemory(len(counts), dim, class_counts=counts, center_update=update)
        rng = torch.Generator().manual_seed(1)
        for _ in range(300):
            classes = torch.randperm(len(counts), generator=rng)[:16].tolist()
            feats = [data[c][torch.randperm(counts[c], generator=rng)[:4]] for c in classes]
            mem.update(torch.cat(feats), torch.tensor(classes).repeat_interleave(4))
        mem.refresh_statistics()
        ratio[update] = (mem.angle_var[heads:].mean() / mem.angle_var[:heads].mean()).item()
    assert ratio["ema"] < 0.75, ratio
    assert ratio["printed"] > 0.85, ratio


def test_ring_buffer_capacity_and_overwrite():
    mem = LeapMemory(2, 2, class_counts=[3, 1], memory_factor=2, center_lr=0.0)
    assert mem.capacity.tolist() == [6, 2] and mem.memory.numel() == 8
    rng = torch.Generator().manual_seed(0)
    written = []
    for step in range(4):  # 4 batches of 2 samples of class 0 -> 8 angles into 6 slots
        f = torch.randn(2, 2, generator=rng)
        written.extend(mem.update(f, torch.tensor([0, 0])).tolist())
    assert mem.mem_fill.tolist() == [6, 0] and mem.mem_ptr.tolist() == [2, 0]
    kept = mem.memory[:6].tolist()
    # slots 0, 1 were overwritten by angles 6, 7; slots 2..5 hold angles 2..5
    assert kept == pytest.approx(written[6:8] + written[2:6])
    # more new angles of a class in one batch than its capacity: the last ones survive
    f = torch.randn(5, 2, generator=rng)
    angles = mem.update(f, torch.tensor([1, 1, 1, 1, 1]))
    assert mem.mem_fill[1] == 2 and mem.mem_ptr[1] == 1
    assert sorted(mem.memory[6:].tolist()) == pytest.approx(sorted(angles[3:].tolist()))


def test_statistics_match_numpy_and_need_two_angles():
    mem = LeapMemory(3, 4, class_counts=[5, 5, 5], center_lr=0.1)
    rng = torch.Generator().manual_seed(3)
    labels = torch.tensor([0, 0, 0, 1, 0, 0, 1])
    for _ in range(2):
        mem.update(torch.randn(7, 4, generator=rng), labels)
    mem.refresh_statistics()
    filled = mem.memory[:5].numpy()
    assert mem.angle_mean[0].item() == pytest.approx(filled.mean(), rel=1e-5)
    assert mem.angle_var[0].item() == pytest.approx(filled.var(ddof=1), rel=1e-4)
    c1 = mem.memory[5:9].numpy()  # class 1: 4 angles
    assert mem.angle_var[1].item() == pytest.approx(c1.var(ddof=1), rel=1e-4)
    assert mem.stats_valid.tolist() == [True, True, False]
    assert mem.cloud_var[2] == 0


def test_class_with_one_angle_has_no_statistics_and_no_cloud():
    mem = LeapMemory(2, 3, class_counts=[50, 1])
    rng = torch.Generator().manual_seed(0)
    for _ in range(3):
        mem.update(torch.randn(4, 3, generator=rng), torch.tensor([0, 0, 0, 1]))
    mem.refresh_statistics()
    assert mem.mem_fill.tolist() == [9, 1]
    assert mem.stats_valid.tolist() == [True, False] and mem.cloud_var[1] == 0


def test_full_cloud_goes_to_the_narrow_class():
    mem = LeapMemory(2, 8, class_counts=[40, 4], center_lr=0.0, cloud_scale=1.0)
    g = torch.Generator().manual_seed(0)
    base = torch.randn(2, 8, generator=g)
    wide = base[0] + 1.0 * torch.randn(40, 8, generator=g)
    narrow = base[1] + 0.1 * torch.randn(4, 8, generator=g)
    mem.update(torch.cat([wide, narrow]), torch.tensor([0] * 40 + [1] * 4))
    mem.refresh_statistics()
    assert mem.cloud_var[0] == 0 and mem.cloud_var[1] > 0
    assert mem.cloud_variance_of(torch.tensor([1, 0, -1])).tolist() == pytest.approx(
        [mem.cloud_var[1].item(), 0.0, 0.0])
    s = mem.summary()
    assert s["leap/clouded_classes"] == 1.0 and s["leap/cloud_width"] == pytest.approx(
        math.sqrt(mem.cloud_var[1].item()), rel=1e-5)


@pytest.mark.parametrize("update", ["printed", "ema"])
def test_loo_angle_equals_brute_force(update):
    gamma = 0.3
    mem = LeapMemory(2, 5, class_counts=[10, 10], center_lr=gamma, statistic="loo", center_update=update)
    w_new, w_old = (1 - gamma, gamma) if update == "printed" else (gamma, 1 - gamma)
    g = torch.Generator().manual_seed(0)
    first = torch.randn(3, 5, generator=g)
    mem.update(first, torch.tensor([0, 0, 1]))
    old = mem.centers.clone()
    batch = torch.randn(4, 5, generator=g)
    labels = torch.tensor([0, 1, 0, 0])
    got = mem.update(batch, labels)
    f = F.normalize(batch, dim=1)
    old_weights = {0: [0.5, 0.5], 1: [1.0]}  # per-feature weights inside the first centers
    for n in range(4):
        y = int(labels[n])
        others = [k for k in range(4) if labels[k] == y and k != n]
        n_y = len(others) + 1
        # the center as Eq. 4 would give it had the sample not contributed its share
        c = w_new * (f[others].sum(0) / n_y if others else torch.zeros(5)) + w_old * old[y]
        weights = [w_new / n_y] * len(others) + [w_old * w for w in old_weights[y]]
        s_rest = sum(w * w for w in weights) / sum(weights) ** 2
        assert got[n].item() == pytest.approx(angle(f[n], c) / math.sqrt(1 + s_rest), abs=1e-5)
    # a class seen for the first time with one sample has no center to measure against
    fresh = LeapMemory(1, 5, class_counts=[3], statistic="loo")
    assert torch.isnan(fresh.update(torch.randn(1, 5), torch.tensor([0]))).all()
    assert fresh.mem_fill[0] == 0


def test_paper_statistic_shrinks_with_k_and_loo_does_not():
    """Equal true spread, K = 4 vs K = 40 samples per class, each class's center
    estimated from its own samples. The paper's angle shrinks by about sqrt((K-1)/K);
    the bias-aware one stays within 3 % of the K = 40 value."""
    g = torch.Generator().manual_seed(0)
    classes, dim = 40, 64
    sizes = [4] * (classes // 2) + [40] * (classes // 2)
    means = F.normalize(torch.randn(classes, dim, generator=g), dim=1)
    labels = torch.repeat_interleave(torch.arange(classes), torch.tensor(sizes))
    feats = means[labels] + 0.08 * torch.randn(len(labels), dim, generator=g)
    ratio = {}
    for statistic in ("paper", "loo"):
        mem = LeapMemory(classes, dim, class_counts=sizes, statistic=statistic)
        mem.update(feats, labels)
        mem.refresh_statistics()
        small, large = mem.angle_mean[: classes // 2].mean(), mem.angle_mean[classes // 2:].mean()
        ratio[statistic] = (small / large).item()
    assert ratio["paper"] == pytest.approx(math.sqrt(3 / 4) / math.sqrt(39 / 40), abs=0.03)
    assert ratio["loo"] == pytest.approx(1.0, abs=0.03)


def test_state_dict_round_trip_resizes_memory():
    mem = LeapMemory(3, 4, class_counts=[5, 2, 7], memory_factor=2)
    mem.update(torch.randn(6, 4), torch.tensor([0, 1, 2, 2, 1, 0]))
    mem.refresh_statistics()
    fresh = LeapMemory(3, 4, memory_factor=2)  # unknown counts: memory of default size
    fresh.load_state_dict(mem.state_dict())
    for name, value in mem.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    assert torch.equal(fresh.mem_offset, mem.mem_offset)
    with pytest.raises(ValueError, match="MEMORY_FACTOR"):
        LeapMemory(3, 4, memory_factor=1).load_state_dict(mem.state_dict())


def test_non_finite_rows_never_enter_centers_or_memory():
    """One NaN row used to freeze its class's statistics for good."""
    mem = LeapMemory(2, 3, class_counts=[4, 4])
    feats = torch.tensor([[1.0, 0.0, 0.0], [float("nan"), 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, float("inf"), 1.0]])
    mem.update(feats, torch.tensor([0, 0, 1, 1]))
    assert mem.mem_fill.tolist() == [1, 1] and mem.dropped_rows == 2
    assert torch.isfinite(mem.centers).all() and torch.isfinite(mem.angle_sum).all()
    torch.testing.assert_close(mem.centers, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))


def test_labels_below_minus_one_or_beyond_the_classes_are_refused():
    mem = LeapMemory(3, 2, class_counts=[2, 2, 2])
    for bad in (-2, 3):
        with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 3\) or -1"):
            mem.update(torch.randn(2, 2), torch.tensor([0, bad]))
    assert mem.mem_fill.sum() == 0


@pytest.mark.parametrize("kwargs,match", [
    ({"center_lr": 1.5}, "center_lr"), ({"memory_factor": 0}, "memory_factor"),
    ({"version": "x"}, "version"), ({"statistic": "x"}, "statistic"),
    ({"class_counts": [1, 0]}, "K_i"), ({"center_update": "sgd"}, "center_update"),
    ({"cloud_scale": -1.0}, "cloud_scale"), ({"cloud": "flat"}, "cloud"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LeapMemory(2, 3, **kwargs)
