"""Training samplers by name (``DATALOADER.SAMPLER_TRAIN``): fastreid's five and
``LongTailIdentitySampler``, in the registry :data:`TRAIN_SAMPLERS` that fastreid's trainer
uses after ``import leap_plugin`` (fastreid itself chooses with an if/elif).

``LongTailIdentitySampler``: P identities x K instances, identity i drawn with
probability proportional to ``K_i ** q`` (``DATALOADER.LONG_TAIL_Q``). q = 1 follows the
natural distribution of images, q = 0 is class-balanced and q = 0.5 the square-root
re-sampling in between. Distributed: every rank draws the same global batch from a
shared seed and takes its own slice, as fastreid's identity samplers do.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
from fastreid.data import samplers
from fastreid.utils import comm
from torch.utils.data import Sampler

from ..validation import ConfigError

__all__ = ["LongTailIdentitySampler", "identity_probabilities", "TRAIN_SAMPLERS", "register_sampler",
           "build_train_sampler"]

#: name -> ``factory(cfg, train_set, mini_batch_size) -> Sampler``.
TRAIN_SAMPLERS: dict[str, Callable] = {}


def register_sampler(name: str, identity: bool = True) -> Callable[[Callable], Callable]:
    """Register a sampler factory; ``identity``: it draws P identities x K images per batch,
    so the training set must have at least P identities (else fastreid's identity samplers
    loop forever looking for a batch)."""
    def wrap(factory: Callable) -> Callable:
        factory.identity = identity
        TRAIN_SAMPLERS[name] = factory
        return factory
    return wrap


def build_train_sampler(cfg, train_set) -> Sampler:
    """The training sampler ``DATALOADER.SAMPLER_TRAIN`` names, after checking that the
    training set can fill a batch."""
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name not in TRAIN_SAMPLERS:
        raise ConfigError(f"DATALOADER.SAMPLER_TRAIN = {name!r} is not allowed: use one of "
                          + ", ".join(repr(n) for n in sorted(TRAIN_SAMPLERS)))
    factory = TRAIN_SAMPLERS[name]
    mini_batch = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
    if factory.identity:
        needed = mini_batch // cfg.DATALOADER.NUM_INSTANCE * comm.get_world_size()
        identities = len({item[1] for item in train_set.img_items})
        if identities < max(needed, 1):
            raise ConfigError(
                f"DATALOADER.SAMPLER_TRAIN {name} draws {needed} identities per batch (SOLVER.IMS_PER_BATCH "
                f"{cfg.SOLVER.IMS_PER_BATCH} / DATALOADER.NUM_INSTANCE {cfg.DATALOADER.NUM_INSTANCE}) but the "
                f"training set has {identities}: lower SOLVER.IMS_PER_BATCH or raise DATALOADER.NUM_INSTANCE")
    return factory(cfg, train_set, mini_batch)


@register_sampler("TrainingSampler", identity=False)
def _training(cfg, train_set, mini_batch):
    return samplers.TrainingSampler(len(train_set))


@register_sampler("NaiveIdentitySampler")
def _naive(cfg, train_set, mini_batch):
    return samplers.NaiveIdentitySampler(train_set.img_items, mini_batch, cfg.DATALOADER.NUM_INSTANCE)


@register_sampler("BalancedIdentitySampler")
def _balanced(cfg, train_set, mini_batch):
    return samplers.BalancedIdentitySampler(train_set.img_items, mini_batch, cfg.DATALOADER.NUM_INSTANCE)


@register_sampler("SetReWeightSampler")
def _set_reweight(cfg, train_set, mini_batch):
    return samplers.SetReWeightSampler(train_set.img_items, mini_batch, cfg.DATALOADER.NUM_INSTANCE,
                                       cfg.DATALOADER.SET_WEIGHT)


@register_sampler("ImbalancedDatasetSampler", identity=False)
def _imbalanced(cfg, train_set, mini_batch):
    return samplers.ImbalancedDatasetSampler(train_set.img_items)


def identity_probabilities(counts: Sequence[int], q: float) -> np.ndarray:
    """Sampling probability of each identity: ``K_i^q / sum_j K_j^q``."""
    weights = np.asarray(counts, dtype=np.float64) ** q
    return weights / weights.sum()


class LongTailIdentitySampler(Sampler):
    """Infinite stream of dataset indices, ``mini_batch_size // num_instances`` identities
    per rank and batch, ``num_instances`` images each (with replacement only when an
    identity has fewer images than that).

    Args:
        data_source: fastreid items ``(img_path, pid, camid)``.
        mini_batch_size: images per rank and batch.
        num_instances: K, images per identity in a batch.
        q: exponent of the identity weights.
        seed: shared seed; by default fastreid's ``comm.shared_random_seed()``.
    """

    def __init__(self, data_source: Sequence, mini_batch_size: int, num_instances: int, q: float = 0.5,
                 seed: Optional[int] = None):
        if num_instances < 1 or mini_batch_size % num_instances:
            raise ValueError(f"the per-rank batch ({mini_batch_size}) must be a multiple of "
                             f"DATALOADER.NUM_INSTANCE ({num_instances})")
        index_of = defaultdict(list)
        for index, item in enumerate(data_source):
            index_of[item[1]].append(index)
        self.pids = sorted(index_of)
        self.indices = [np.asarray(index_of[p]) for p in self.pids]
        self.num_instances = num_instances
        self.world_size = comm.get_world_size()
        self.rank = comm.get_rank()
        self.mini_batch_size = mini_batch_size
        self.ids_per_batch = mini_batch_size // num_instances * self.world_size
        if self.ids_per_batch > len(self.pids):
            raise ValueError(f"a batch needs {self.ids_per_batch} identities but the training set "
                             f"has {len(self.pids)}: lower SOLVER.IMS_PER_BATCH or raise NUM_INSTANCE")
        self.probabilities = identity_probabilities([len(i) for i in self.indices], q)
        self.seed = int(comm.shared_random_seed() if seed is None else seed)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng(self.seed)
        lo = self.rank * self.mini_batch_size
        while True:
            ids = rng.choice(len(self.pids), size=self.ids_per_batch, replace=False, p=self.probabilities)
            batch = np.concatenate([
                rng.choice(self.indices[i], size=self.num_instances,
                           replace=len(self.indices[i]) < self.num_instances)
                for i in ids
            ])
            yield from batch[lo:lo + self.mini_batch_size].tolist()


@register_sampler("LongTailIdentitySampler")
def _long_tail(cfg, train_set, mini_batch):
    return LongTailIdentitySampler(train_set.img_items, mini_batch, cfg.DATALOADER.NUM_INSTANCE,
                                   q=cfg.DATALOADER.LONG_TAIL_Q)
