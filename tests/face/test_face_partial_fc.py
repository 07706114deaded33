"""LeapPartialFC: single process vs a 2-rank gloo group, sampling, labels of -1, state."""
import logging
import os

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import arcface_layout, pfc_worker
from tests.helpers.distributed_utils import run
from leap_plugin.face import LeapMarginLoss, LeapPartialFC
from leap_plugin.face.partial_fc import shard_range


def test_shard_range_covers_all_classes():
    shards = [shard_range(13, 3, r) for r in range(3)]
    assert shards == [(0, 5), (5, 4), (9, 4)]


def test_two_ranks_equal_one_process(tmp_path):
    run(pfc_worker.worker, 2, str(tmp_path))
    ranks = [torch.load(os.path.join(tmp_path, f"rank{r}.pt")) for r in range(2)]
    for i, case in enumerate(pfc_worker.CASES):
        single = pfc_worker.run_case(0, 1, *case)
        r0, r1 = ranks[0][i], ranks[1][i]
        if case[2]:
            assert max(single["clouded"]) > 0, "the scenario must actually build feature clouds"
        assert r0["loss"] == r1["loss"]
        assert r0["loss"] == pytest.approx(single["loss"], abs=1e-5)
        for step in range(pfc_worker.STEPS):
            emb = torch.cat([r0["emb_grad"][step], r1["emb_grad"][step]])
            torch.testing.assert_close(emb, single["emb_grad"][step], atol=1e-6, rtol=1e-4)
            torch.testing.assert_close(r0["weight_grad"][step] + r1["weight_grad"][step],
                                       single["weight_grad"][step], atol=1e-6, rtol=1e-4)
        # each rank holds its own classes' state; gathered in class order it is the one-process state
        for key, value in single["state"].items():
            if key == "step" or value.dim() == 0:
                torch.testing.assert_close(r0["state"][key], value)
                continue
            gathered = torch.cat([r0["state"][key], r1["state"][key]])
            torch.testing.assert_close(gathered, value, atol=1e-6, rtol=1e-5, msg=f"case {case}: {key}")
        if "memory.centers" in single["state"]:  # sharded, not replicated
            assert r0["state"]["memory.centers"].shape[0] == shard_range(pfc_worker.NUM_CLASSES, 2, 0)[1] < 13


def _plain_loss(emb, weight, labels, s, m):
    """CosFace cross entropy over all classes, rows of label -1 left out."""
    cos = F.linear(F.normalize(emb), F.normalize(weight))
    keep = labels >= 0
    logits = s * (cos[keep] - m * F.one_hot(labels[keep], weight.shape[0]))
    return F.cross_entropy(logits, labels[keep])


def test_single_process_loss_is_cross_entropy_and_ignores_minus_one():
    torch.manual_seed(0)
    pfc = LeapPartialFC(LeapMarginLoss(30.0, 1.0, 0.0, 0.4), 6, 9, enabled=False)
    emb = torch.randn(5, 6, requires_grad=True)
    labels = torch.tensor([[2], [8], [-1], [0], [2]])
    loss = pfc(emb, labels)
    ref_emb = emb.detach().clone().requires_grad_()
    ref = _plain_loss(ref_emb, pfc.weight.detach(), labels.reshape(-1), 30.0, 0.4)
    torch.testing.assert_close(loss, ref)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(emb.grad, ref_emb.grad)
    assert emb.grad[2].abs().sum() == 0


def test_sampling_keeps_positives_and_gives_gradient_to_sampled_rows_only():
    torch.manual_seed(0)
    pfc = LeapPartialFC(LeapMarginLoss(16.0, 1.0, 0.5, 0.0), 4, 40, sample_rate=0.25, enabled=False)
    labels = torch.tensor([3, 3, 17, 39])
    pfc(torch.randn(4, 4), labels).backward()
    touched = pfc.weight.grad.abs().sum(1) > 0
    assert touched[[3, 17, 39]].all()
    assert int(touched.sum()) == 10  # int(0.25 * 40) classes, positives included


def test_bad_inputs_and_missing_counts_fail_clearly():
    margin = LeapMarginLoss(16.0, 1.0, 0.5, 0.0)
    with pytest.raises(TypeError, match="LeapMarginLoss"):
        LeapPartialFC(lambda logits, labels: logits, 4, 10)
    with pytest.raises(ValueError, match="sample_rate"):
        LeapPartialFC(margin, 4, 10, sample_rate=0.0)
    with pytest.raises(ValueError, match="center_update_period"):
        LeapPartialFC(margin, 4, 10, center_update_period=0)
    pfc = LeapPartialFC(margin, 4, 10)
    with pytest.raises(RuntimeError, match="set_class_counts"):
        pfc(torch.randn(2, 4), torch.tensor([1, 2]))
    pfc.set_class_counts([3] * 10)
    with pytest.raises(ValueError, match=r"class ids in \[0, 10\)"):
        pfc(torch.randn(2, 4), torch.tensor([1, 10]))


def test_state_dict_round_trip_restores_memory_step_and_rng():
    torch.manual_seed(0)
    kwargs = dict(class_counts=[2, 3, 4, 2], sample_rate=0.5, alpha_mode="sample", seed=5)
    pfc = LeapPartialFC(LeapMarginLoss(16.0, 1.0, 0.0, 0.3), 4, 4, **kwargs)
    pfc.cloud_active = True
    for _ in range(3):
        pfc(torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1]))
    state = pfc.state_dict()
    clone = LeapPartialFC(LeapMarginLoss(16.0, 1.0, 0.0, 0.3), 4, 4, **{**kwargs, "class_counts": None})
    clone.load_state_dict(state)
    clone.cloud_active = True
    emb, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    assert clone.step == 3
    torch.testing.assert_close(clone(emb, labels), pfc(emb, labels))
    torch.testing.assert_close(clone.memory.memory, pfc.memory.memory)


def test_each_sample_gets_its_own_class_width():
    """A LeapPartialFC that never applied the cloud, or one constant width, passed
    the suite. The alpha a row receives has the std of its class's cloud."""
    torch.manual_seed(0)
    margin = LeapMarginLoss(16.0, 1.0, 0.0, 0.35)
    pfc = LeapPartialFC(margin, 8, 3, class_counts=[4, 4, 4], start_epoch=0)
    pfc.memory.cloud_var.copy_(torch.tensor([0.0, 0.01, 0.09]))
    pfc.set_epoch(0)
    pfc.center_update_period = 10 ** 9  # keep the widths above: no update changes them
    seen = {}
    original = margin.forward

    def spy(cos, labels, variance=None, alpha=None, generator=None, rows=None):
        seen.update(alpha=alpha, rows=rows)
        return original(cos, labels, variance, alpha, generator, rows)

    margin.forward = spy
    labels = torch.tensor([0] * 50 + [1] * 50 + [2] * 50)
    pfc.step += 1  # not a refresh step
    loss_on = pfc(torch.randn(150, 8), labels)
    assert seen["rows"].tolist() == list(range(50, 150))  # class 0 has no cloud
    alpha = seen["alpha"]
    assert alpha.shape == (100, 3)
    assert abs(alpha[:50].std().item() - 0.1) < 0.02 and abs(alpha[50:].std().item() - 0.3) < 0.05
    pfc.cloud_active = False
    torch.manual_seed(0)
    assert pfc(torch.randn(150, 8), labels).item() != loss_on.item()


def test_softmax_of_widely_spread_logits_has_no_subnormal_gradient():
    """With s = 64 and cosines over [-1, 1] the logits spread over 128: a plain softmax's
    probabilities and gradient then hold subnormal floats, which x86 CPUs compute tens of
    times slower. The sharded cross entropy takes probabilities <= 1e-30 as 0: the same
    loss, a gradient within 1e-30 of the exact one, and no subnormal anywhere in it."""
    from leap_plugin.face.partial_fc import _ShardedCrossEntropy

    g = torch.Generator().manual_seed(0)
    logits = (torch.rand(16, 400, generator=g) * 2 - 1) * 64.0
    labels = torch.randint(0, 400, (16,), generator=g)
    x = logits.clone().requires_grad_()
    loss = _ShardedCrossEntropy.apply(x, labels, torch.ones(16, dtype=torch.bool))
    loss.backward()
    ref_x = logits.clone().requires_grad_()
    ref = F.cross_entropy(ref_x, labels)
    ref.backward()
    tiny = torch.finfo(torch.float32).tiny
    assert ((ref_x.grad != 0) & (ref_x.grad.abs() < tiny)).sum() > 100  # the plain softmax has them
    assert not ((x.grad != 0) & (x.grad.abs() < tiny)).any()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(x.grad, ref_x.grad)
    dropped = (x.grad == 0) & (ref_x.grad != 0)
    assert dropped.sum() > 100 and ref_x.grad[dropped].abs().max() <= 1e-30


@pytest.mark.parametrize("enabled", [True, False])
def test_arcface_torch_partial_fc_v2_state_loads_with_an_empty_leap_state(tmp_path, caplog, enabled):
    """train_v2.py's resume, unchanged after switching to LeapPartialFC:
    ``module_partial_fc.load_state_dict(torch.load(checkpoint_gpu_0.pt)["state_dict_softmax_fc"])``."""
    torch.manual_seed(0)
    counts = [3, 2, 4, 2, 5]
    pfc = LeapPartialFC(LeapMarginLoss(16.0, 1.0, 0.0, 0.3), 8, 5, enabled=enabled, class_counts=counts,
                        sample_rate=0.6, stats_period=1)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    for _ in range(3):  # a running job: step, memory and generators all advanced
        pfc(torch.randn(6, 8), labels)
    upstream = arcface_layout.partial_fc_v2_state_dict(5, 8)
    assert set(upstream) == {"weight"}  # PartialFC_V2's only persistent entry
    path = tmp_path / "checkpoint_gpu_0.pt"
    torch.save(arcface_layout.checkpoint_gpu({}, upstream), path)
    with caplog.at_level(logging.WARNING, logger="leap_plugin.face.partial_fc"):
        result = pfc.load_state_dict(torch.load(path, weights_only=True)["state_dict_softmax_fc"])
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(pfc.weight.detach(), upstream["weight"])
    assert int(pfc.step) == 0 and pfc._rng == {} and pfc._rng_states == {}
    warnings = {r.getMessage() for r in caplog.records if r.levelno == logging.WARNING}
    assert len(warnings) == 1
    assert "arcface_torch's PartialFC_V2 state" in warnings.pop()
    if enabled:
        memory = pfc.memory
        assert memory.class_counts.tolist() == counts  # K_i of this run kept
        for name in ("centers", "memory", "mem_fill", "mem_ptr", "angle_var", "cloud_var", "stats_valid"):
            assert not getattr(memory, name).any(), name
    # and it trains on from there, as a fresh LeapPartialFC with these weights would
    fresh = LeapPartialFC(LeapMarginLoss(16.0, 1.0, 0.0, 0.3), 8, 5, enabled=enabled, class_counts=counts,
                          sample_rate=0.6, stats_period=1)
    fresh.load_state_dict({k: v for k, v in pfc.state_dict().items()})
    emb = torch.randn(6, 8)
    torch.testing.assert_close(pfc(emb, labels), fresh(emb, labels))
    if enabled:
        assert int(pfc.memory.mem_fill.sum()) == 6


def test_arcface_torch_state_of_another_shard_is_refused():
    pfc = LeapPartialFC(LeapMarginLoss(16.0, 1.0, 0.0, 0.3), 8, 5, class_counts=[2] * 5)
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        pfc.load_state_dict(arcface_layout.partial_fc_v2_state_dict(7, 8))
