"""Two gloo processes updating from different local batches hold identical LEAP state,
equal to one process fed the concatenated batch."""
import torch

from tests.helpers import distributed_utils
from leap_plugin.core.memory import LeapMemory


def test_two_ranks_equal_one_process_on_concatenated_batch(tmp_path):
    g = torch.Generator().manual_seed(0)
    batches = []
    for n, cut in ((10, 4), (7, 5), (9, 2)):  # unequal local batch sizes
        batches.append((torch.randn(n, 4, generator=g), torch.randint(0, 6, (n,), generator=g), [0, cut, n]))
    distributed_utils.run(distributed_utils.memory_worker, 2, batches, str(tmp_path))

    single = LeapMemory(6, 4, class_counts=[8, 3, 2, 5, 1, 4], center_lr=0.2)
    for feats, labels, _ in batches:
        single.update(feats, labels)
        single.refresh_statistics()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert single.mem_fill.sum() > 0 and single.stats_valid.any()
    for name, value in single.state_dict().items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        torch.testing.assert_close(ranks[0][name], value, rtol=0, atol=1e-6, msg=name)
