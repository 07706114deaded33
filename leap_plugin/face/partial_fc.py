"""``LeapPartialFC``: arcface_torch's ``PartialFC_V2`` contract with LEAP inside.

arcface_torch's margin callable never sees the features or the global class ids, so LEAP
plugs in one level up: this module all-gathers the embeddings and global labels (as
PartialFC_V2 does) and hands each sample's cloud to a :class:`~leap_plugin.face.LeapMarginLoss`.
The LEAP state follows PartialFC's class sharding: each rank's
:class:`~leap_plugin.core.LeapMemory` holds the centers, angle memory and statistics of its
own classes only, updated from the gathered batch; the pooled variances of Eq. 6 / Eq. 9
come from all-reduced per-shard sums, and each sample's cloud width is all-reduced to every
rank, so the state, gathered, equals the one-process state. The per-logit alpha of a
(sample, class) pair is drawn from a generator seeded by the step and the column block of
that class in the global (sampled) class list, so it does not depend on the number of ranks
either.

Differences from PartialFC_V2, all deliberate (the first two change the loss; see
:class:`LeapPartialFC`):

- rows whose label is -1 are left out of the loss and of the mean; PartialFC_V2 keeps them
  in the mean, each as a loss of about 69.08 (its probability 0 clamped to 1e-30,
  ``-log(1e-30)``);
- with 2+ ranks and ``sample_rate < 1``, negative classes are sampled over the *global*
  class list from a generator seeded identically on every rank, so the sampled set does
  not depend on the number of ranks (PartialFC_V2 draws ``int(sample_rate * num_local)``
  per shard from each rank's own RNG); so are the alphas;
- it also runs in a single process without torch.distributed, and on the CPU; uneven
  per-rank batch sizes are allowed;
- :meth:`~torch.nn.Module.load_state_dict` also takes PartialFC_V2's own state dict (the
  ``state_dict_softmax_fc`` of arcface_torch's ``checkpoint_gpu_{rank}.pt``): the class
  weights load, the LEAP state starts empty, with a warning.

Like PartialFC_V2, the gradient returned to each rank's embeddings is multiplied by the
world size, because DistributedDataParallel averages the backbone gradients over ranks
while the loss is already the mean over the global batch.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..core import DEFAULTS, LeapMemory, LeapSettings
from ..core.distributed import all_gather_rows, rank, world_size
from ..validation import require_int
from .recordio import read_counts
from .margin import LeapMarginLoss

__all__ = ["LeapPartialFC", "shard_range"]

logger = logging.getLogger(__name__)


def shard_range(num_classes: int, world: int, rank_: int) -> tuple[int, int]:
    """``(class_start, num_local)`` of a rank: contiguous shards, the first
    ``num_classes % world`` ranks one class larger (PartialFC_V2's layout)."""
    base, extra = divmod(num_classes, world)
    return base * rank_ + min(rank_, extra), base + int(rank_ < extra)


def _all_reduce(tensor: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(tensor, op)
    return tensor


def _sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    return _all_reduce(tensor.clone())


#: Columns per block of the per-logit draws (see :meth:`LeapPartialFC._normal`).
ALPHA_BLOCK = 4096
# Offset of a second stream of draws in the generator seeds (LEAP's alpha is stream 0).
_STREAM = 2 ** 40


class _GatherRows(torch.autograd.Function):
    """All-gather embeddings and labels; backward sums the embedding gradient over ranks and
    returns this rank's rows times the world size (see the module docstring)."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, labels: torch.Tensor):
        origin = torch.full_like(labels, rank())
        gathered, all_labels, all_origin = all_gather_rows(local, labels, origin)
        ctx.save_for_backward((all_origin == rank()).nonzero(as_tuple=True)[0])
        ctx.mark_non_differentiable(all_labels)
        return gathered, all_labels

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _):
        (mine,) = ctx.saved_tensors
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[mine] * world_size(), None


#: Softmax probabilities at or below this are taken as 0 in :class:`_ShardedCrossEntropy`.
_TINY_PROB = 1e-30


class _ShardedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross entropy over rows whose class columns are split across ranks.

    ``labels`` are this shard's column of each row's class (-1 where it is elsewhere);
    ``valid`` marks rows whose class exists at all. The loss of row n is
    ``log sum_j exp(z_nj) - z_ny`` with the max, the sum and ``z_ny`` reduced over ranks.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor):
        n = logits.shape[0]
        if logits.shape[1]:
            row_max = logits.max(dim=1, keepdim=True).values
        else:  # every sampled class of this batch lives on other ranks
            row_max = logits.new_full((n, 1), float("-inf"))
        _all_reduce(row_max, dist.ReduceOp.MAX)
        # Probabilities below 1e-30 are set to 0, and exp never sees an argument below
        # -87 (its result would be subnormal): with arcface_torch's s = 64 and the cloud
        # widening the cosines, logits spread over more than 87 and the softmax and its
        # gradient fill with subnormal floats, which x86 CPUs compute many times slower
        # (measured, 10,000 classes, one thread: each gradient matmul 0.2 s instead of
        # 0.02 s). The loss is unchanged (each dropped term is < 1e-30 of a row sum >= 1),
        # the gradient moves by less than 1e-30 per logit.
        prob = torch.threshold_((logits - row_max).clamp_(min=-87.0).exp_(), _TINY_PROB, 0.0)
        total = _all_reduce(prob.sum(dim=1, keepdim=True))
        prob.div_(total)
        here = (labels >= 0).nonzero(as_tuple=True)[0]
        target = logits.new_zeros(n)
        target[here] = logits[here, labels[here]]
        _all_reduce(target)
        per_row = row_max.squeeze(1) + total.squeeze(1).log() - target
        count = valid.sum().clamp_min(1)
        ctx.save_for_backward(prob, labels, valid, count)
        return torch.where(valid, per_row, torch.zeros_like(per_row)).sum() / count

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        prob, labels, valid, count = ctx.saved_tensors
        out = prob * valid.unsqueeze(1)
        here = (labels >= 0).nonzero(as_tuple=True)[0]
        out[here, labels[here]] -= 1
        return out * (grad / count), None, None


class LeapPartialFC(nn.Module):
    """PartialFC_V2(margin_loss, embedding_size, num_classes, sample_rate, fp16) + LEAP.

    ``forward(local_embeddings, local_labels) -> loss``: labels are global class ids
    (-1 = ignore), shaped (n,) or (n, 1). Under torch.distributed the class weights are
    sharded across ranks and each rank passes its local batch; construct the module after
    ``init_process_group`` (the shard is fixed then).

    Args:
        margin_loss: a :class:`LeapMarginLoss` (required when LEAP is enabled), or any
            arcface_torch-style margin callable when it is not.
        embedding_size, num_classes, sample_rate, fp16: as in PartialFC_V2. With
            ``sample_rate < 1`` each training step keeps every class present in the global
            batch and fills up to ``int(sample_rate * num_classes)`` classes with negatives.
        enabled: LEAP on (False: a plain PartialFC, no memory is allocated).
        class_counts: K_i of every class (Eq. 5), or the path of a ``leap-face-counts`` file;
            or call :meth:`set_class_counts`.
        settings: the LEAP settings (:class:`~leap_plugin.core.LeapSettings`; default: the
            shipped ones): those of :class:`~leap_plugin.core.LeapMemory` (Eq. 4-6, 9), and here
            ``center_update_period`` (training steps between center / angle-memory updates;
            the paper uses 5 for face data), ``stats_period`` (steps between refreshes of the
            cloud widths) and ``start_epoch`` (:meth:`set_epoch` turns the cloud on from it).
        seed: seed of the class sampler and alpha draws; identical on every rank.
        **overrides: settings by name, replacing those of ``settings``; an ``alpha_mode``
            given here also sets ``margin_loss.alpha_mode``.

    Attributes:
        cloud_active: whether training steps perturb the logits (set by :meth:`set_epoch`
            or directly). The memory fills from the first training step regardless.

    Two deliberate differences from PartialFC_V2 change the loss value:

    - **Rows labelled -1 are left out of the mean.** The loss is the mean over the rows whose
      label is a class; PartialFC_V2 averages over all rows and counts each -1 row as a
      capped loss of about 69.08 (``-log(1e-30)``: its target probability, 0, clamped to
      1e-30). Without -1 labels the two agree.
    - **With 2+ ranks and sample_rate < 1, negative classes are sampled over the global
      class list** (every class of the global batch, then random others up to
      ``int(sample_rate * num_classes)``, from a generator seeded identically on every
      rank), not per shard (PartialFC_V2: ``int(sample_rate * num_local)`` per rank, from
      each rank's own RNG). The kept set, the loss and the LEAP state then do not depend
      on the number of ranks. In one process both keep the same number of classes (the
      negatives drawn from different generators); with ``sample_rate = 1``, all of them.

    Loading arcface_torch's own state: ``load_state_dict`` also takes the state dict of a
    ``PartialFC_V2`` (``state_dict_softmax_fc`` in arcface_torch's
    ``checkpoint_gpu_{rank}.pt``: only ``weight``, this rank's ``(num_local,
    embedding_size)`` shard), so that ``train_v2.py``'s resume code runs unchanged after
    switching a job to LEAP. The class weights are loaded; the LEAP state, which that
    checkpoint does not have, is rebuilt empty: ``step`` 0, no centers, an empty angle
    memory (K_i kept from ``class_counts``), fresh sampler / alpha generators; a WARNING
    says so. The memory refills from the next training steps and the cloud comes back
    after the next statistics refresh (``stats_period`` steps) once classes have angles.
    The shard must match (same ``num_classes``, ``embedding_size`` and world size), else
    torch reports the size mismatch.
    """

    def __init__(
        self,
        margin_loss: Callable,
        embedding_size: int,
        num_classes: int,
        sample_rate: float = 1.0,
        fp16: bool = False,
        *,
        enabled: bool = True,
        class_counts: Optional[Union[Sequence[int], torch.Tensor]] = None,
        settings: LeapSettings = DEFAULTS,
        seed: int = 0,
        **overrides: Any,
    ):
        super().__init__()
        if not callable(margin_loss):
            raise TypeError(f"margin_loss must be callable, got {type(margin_loss).__name__}")
        require_int(embedding_size, "embedding_size", 1)
        require_int(num_classes, "num_classes", 1)
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        alpha_mode = overrides.get("alpha_mode")
        settings = settings.replace(**overrides) if overrides else settings
        require_int(seed, "seed", 0)
        if enabled and not isinstance(margin_loss, LeapMarginLoss):
            raise TypeError("LEAP perturbs the margin logits: with enabled=True pass a LeapMarginLoss, "
                            f"not {type(margin_loss).__name__}")
        if alpha_mode is not None and isinstance(margin_loss, LeapMarginLoss):
            margin_loss.alpha_mode = settings.alpha_mode

        self.margin_loss = margin_loss
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.sample_rate = float(sample_rate)
        self.fp16 = fp16
        self.world_size, self.rank = world_size(), rank()
        self.class_start, self.num_local = shard_range(num_classes, self.world_size, self.rank)
        self.num_sample = int(self.sample_rate * num_classes)
        self.weight = nn.Parameter(torch.normal(0, 0.01, (self.num_local, embedding_size)))

        self.enabled = bool(enabled)
        self.center_update_period = settings.center_update_period
        self.stats_period = settings.stats_period
        self.start_epoch = settings.start_epoch
        self.seed = seed
        self.cloud_active = False
        self.memory: Optional[LeapMemory] = None
        if isinstance(class_counts, (str, os.PathLike)):  # a leap-face-counts file
            class_counts = read_counts(os.fspath(class_counts))
        self._has_counts = class_counts is not None
        if self.enabled:
            # This rank's classes only; the pooled variances sum over all shards.
            self.memory = LeapMemory(self.num_local, embedding_size, self._shard(class_counts), settings=settings,
                                     reduce=_sum_over_ranks if self.world_size > 1 else None)
        # Training steps taken: decides the update / refresh periods, survives a resume.
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._rng: dict[str, torch.Generator] = {}
        self._rng_states: dict[str, torch.Tensor] = {}

    # ----------------------------------------------------------------- LEAP controls
    def _shard(self, class_counts):
        """This rank's part of the global K_i (None stays None)."""
        if class_counts is None:
            return None
        counts = torch.as_tensor(class_counts, dtype=torch.long).reshape(-1)
        if counts.numel() != self.num_classes:
            raise ValueError(f"class_counts must have {self.num_classes} entries, got {counts.numel()}")
        return counts[self.class_start:self.class_start + self.num_local]

    def set_class_counts(self, class_counts: Union[Sequence[int], torch.Tensor]) -> None:
        """Set K_i (the number of training samples of every class, by global class id) and
        empty the memory."""
        if self.memory is None:
            return
        self.memory.set_class_counts(self._shard(class_counts))
        self._has_counts = True

    def set_epoch(self, epoch: int) -> None:
        """Call at the start of every epoch: the cloud is on from ``start_epoch``."""
        self.cloud_active = self.enabled and epoch >= self.start_epoch

    def summary(self) -> dict[str, float]:
        """LEAP scalars for logging (empty when LEAP is disabled)."""
        if self.memory is None:
            return {}
        return {**self.memory.summary(), "leap/cloud_active": float(self.cloud_active)}

    # ----------------------------------------------------------------- randomness
    def _generator(self, name: str, device: torch.device) -> torch.Generator:
        """``"shared"``: the class sampler's generator, same seed on every rank."""
        gen = self._rng.get(name)
        if gen is None or gen.device != device:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed)
            if name in self._rng_states:
                gen.set_state(self._rng_states.pop(name))
            self._rng[name] = gen
        return gen

    def get_extra_state(self) -> dict[str, Any]:
        states = dict(self._rng_states)
        states.update({name: gen.get_state() for name, gen in self._rng.items()})
        return {"rng": states}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._rng = {}
        self._rng_states = dict(state.get("rng", {}))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self._is_partial_fc_v2_state(state_dict, prefix):
            self._fill_empty_leap_state(state_dict, prefix)
        elif prefix + "memory.class_counts" in state_dict:
            self._has_counts = True
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @staticmethod
    def _is_partial_fc_v2_state(state_dict, prefix: str) -> bool:
        """arcface_torch's PartialFC_V2 saves ``weight`` and nothing else: no ``step``, no
        ``_extra_state``, no ``memory.*``."""
        if prefix + "weight" not in state_dict or prefix + "step" in state_dict:
            return False
        return not any(key == prefix + "_extra_state" or key.startswith(prefix + "memory.") for key in state_dict)

    def _fill_empty_leap_state(self, state_dict, prefix: str) -> None:
        """Complete a PartialFC_V2 state dict (``weight`` only) with an empty LEAP state:
        step 0, zeroed centers / angle memory / statistics (this run's K_i kept), fresh
        generators; the margin callable's own buffers stay as constructed."""
        for key, value in self.state_dict().items():
            if key == "weight" or prefix + key in state_dict:
                continue
            if key == "_extra_state":
                value = {"rng": {}}
            elif key == "step" or (key.startswith("memory.") and key != "memory.class_counts"):
                value = torch.zeros_like(value)
            state_dict[prefix + key] = value
        logger.warning(
            "LeapPartialFC: %s is arcface_torch's PartialFC_V2 state (class weights only): its %s class "
            "weights are loaded; the LEAP state is rebuilt empty (step 0, no centers, empty angle memory, "
            "fresh sampler and alpha generators) and refills from the next training steps",
            f"state dict under {prefix!r}" if prefix else "the state dict",
            "x".join(str(n) for n in tuple(state_dict[prefix + "weight"].shape)))

    # ----------------------------------------------------------------- forward
    def _sample(self, labels: torch.Tensor, local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Keep every class of the batch and random negatives, ``num_sample`` in all,
        chosen over the global class list. Returns the kept rows of this shard, the labels
        as columns among them, and the position of this shard's first kept class in the
        sorted global list of kept classes."""
        device = self.weight.device
        score = torch.rand(self.num_classes, generator=self._generator("shared", device), device=device)
        positive = torch.unique(labels[labels >= 0])
        score[positive] = 2.0
        keep = positive if positive.numel() > self.num_sample else torch.topk(score, self.num_sample).indices
        first = int((keep < self.class_start).sum())
        keep = keep[(keep >= self.class_start) & (keep < self.class_start + self.num_local)]
        index = torch.sort(keep - self.class_start).values
        here = local >= 0
        local = torch.where(here, torch.searchsorted(index, local.clamp_min(0)), local)
        return index, local, first

    def _normal(self, rows: int, first: int, columns: int, device: torch.device, stream: int = 0) -> torch.Tensor:
        """(rows, columns) standard normal draws for the logit columns at positions
        ``first .. first + columns - 1`` of the global column list.

        The global list is cut into blocks of :data:`ALPHA_BLOCK` columns, each drawn from a
        generator seeded by (seed, step, block, ``stream``), so a (row, class) pair gets the
        same draw whatever the number of ranks. ``stream`` 0: LEAP's alpha; 1: a random margin's."""
        gen = torch.Generator(device=device)
        key = (self.seed * 1_000_003 + int(self.step)) * 1_000_033 + stream * _STREAM
        blocks = []
        for block in range(first // ALPHA_BLOCK, (first + columns - 1) // ALPHA_BLOCK + 1 if columns else 0):
            gen.manual_seed((key + 1 + block) % 2 ** 62)
            blocks.append(torch.randn((rows, ALPHA_BLOCK), generator=gen, device=device))
        if not blocks:
            return torch.zeros((rows, 0), device=device)
        start = first - (first // ALPHA_BLOCK) * ALPHA_BLOCK
        return torch.cat(blocks, dim=1)[:, start:start + columns]

    def _row_normal(self, rows: int, device: torch.device, stream: int = 0) -> torch.Tensor:
        """(rows, 1) standard normal draws, one per row, from a generator seeded by (seed,
        step, ``stream``): the same on every rank."""
        gen = torch.Generator(device=device)
        gen.manual_seed(((self.seed * 1_000_003 + int(self.step)) * 1_000_033 + stream * _STREAM) % 2 ** 62)
        return torch.randn((rows, 1), generator=gen, device=device)

    def _alpha(self, std: torch.Tensor, first: int, columns: int, device: torch.device) -> torch.Tensor:
        """Alpha of the clouded rows (std ``std``, (R,)) for this rank's ``columns`` logit
        columns, which are positions ``first .. first + columns - 1`` of the global column list:
        per logit from :meth:`_normal`, per sample from :meth:`_row_normal`; either way a
        (row, class) pair gets the same alpha whatever the number of ranks."""
        if self.margin_loss.alpha_mode == "sample":
            return self._row_normal(std.numel(), device) * std[:, None]
        return self._normal(std.numel(), first, columns, device) * std[:, None]

    def _margin_inputs(self, cos: torch.Tensor, local: torch.Tensor, labels: torch.Tensor, rows, first: int) -> dict:
        """What the margin callable asks for beyond ``(logits, labels)``: the global class id
        of each column (``uses_columns``, count-aware margins), its random draws (``draws``:
        ``"logit"`` or ``"row"``) and, for ElasticFace+, the whole batch's target cosines
        (``needs_target_cos``), each independent of the sharding."""
        margin, extra = self.margin_loss, {}
        if getattr(margin, "uses_columns", False):
            ids = torch.arange(self.num_local, device=cos.device) if rows is None else rows
            extra["columns"] = ids + self.class_start
        draws = getattr(margin, "draws", None)
        if draws == "logit":
            extra["normal"] = self._normal(cos.shape[0], first, cos.shape[1], cos.device, stream=1)
        elif draws == "row":
            extra["normal"] = self._row_normal(cos.shape[0], cos.device, stream=1)[:, 0]
        if getattr(margin, "needs_target_cos", False):
            here = (local >= 0).nonzero(as_tuple=True)[0]
            target = cos.new_zeros(cos.shape[0])
            target[here] = cos.detach()[here, local[here]]
            target = _all_reduce(target)
            extra["target_cos"] = target.masked_fill(labels < 0, float("nan"))
        return extra

    def forward(self, local_embeddings: torch.Tensor, local_labels: torch.Tensor) -> torch.Tensor:
        local_labels = local_labels.reshape(-1).long()
        if local_embeddings.shape != (local_labels.shape[0], self.embedding_size):
            raise ValueError(f"expected embeddings of shape ({local_labels.shape[0]}, {self.embedding_size}), "
                             f"got {tuple(local_embeddings.shape)}")
        if self.world_size > 1:
            embeddings, labels = _GatherRows.apply(local_embeddings, local_labels)
        else:
            embeddings, labels = local_embeddings, local_labels
        if bool(((labels < -1) | (labels >= self.num_classes)).any()):
            raise ValueError(f"labels must be global class ids in [0, {self.num_classes}) or -1, got "
                             f"values in [{int(labels.min())}, {int(labels.max())}]")

        here = (labels >= self.class_start) & (labels < self.class_start + self.num_local)
        local = torch.where(here, labels - self.class_start, torch.full_like(labels, -1))
        leap = self.training and self.memory is not None
        if leap and not self._has_counts:
            raise RuntimeError("LeapPartialFC needs the class sizes K_i for its angle memory (Eq. 5): "
                               "pass class_counts=... or call set_class_counts() before training")
        if leap and int(self.step) % self.center_update_period == 0:
            # The gathered batch, this shard's classes: every class is updated on its own rank.
            self.memory.update(embeddings.detach(), local, gathered=True)
        variance = None
        if leap and self.cloud_active:
            # Each sample's width lives on the rank of its class: summed, every rank has all.
            variance = _all_reduce(self.memory.cloud_variance_of(local))

        rows, first = None, self.class_start  # this shard's weight rows in the logits (None: all of them)
        if self.training and self.sample_rate < 1:
            rows, local, first = self._sample(labels, local)
        weight = self.weight if rows is None else self.weight[rows]

        with torch.autocast(embeddings.device.type, enabled=self.fp16):
            cos = F.linear(F.normalize(embeddings), F.normalize(weight))
        cos = cos.float().clamp(-1, 1)
        clouded = None if variance is None else (variance > 0).nonzero(as_tuple=True)[0]
        if clouded is not None and clouded.numel():
            alpha = self._alpha(variance[clouded].sqrt(), first, cos.shape[1], cos.device)
            logits = self.margin_loss(cos, local, alpha=alpha, rows=clouded)
        else:
            logits = self.margin_loss(cos, local, **self._margin_inputs(cos, local, labels, rows, first))
        loss = _ShardedCrossEntropy.apply(logits.float(), local.reshape(-1), labels >= 0)

        if self.training:
            self.step += 1
            if leap and int(self.step) % self.stats_period == 0:
                self.memory.refresh_statistics()
        return loss

    def extra_repr(self) -> str:
        return (f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, "
                f"num_local={self.num_local}, class_start={self.class_start}, sample_rate={self.sample_rate}, "
                f"leap={self.enabled}, center_update_period={self.center_update_period}, "
                f"stats_period={self.stats_period}, start_epoch={self.start_epoch}")
