"""``leap-face-train``: face recognition training in arcface_torch's style, with LEAP.

    leap-face-train CONFIG.py [--resume] [--overwrite] [key=value ...]
    torchrun --nproc_per_node=N -m leap_plugin.cli.face_train CONFIG.py

The config is an arcface_torch-style Python file (:mod:`leap_plugin.face.config`); ``rec`` is
an image folder (one sub-folder per identity), a ``.rec`` or a folder holding arcface_torch's
``train.rec`` / ``train.idx``. Training runs a backbone with arcface_torch's module names
(``r18``..``r100``, ``mbf``; ``pretrained=`` starts from its weights) through
:class:`~leap_plugin.face.LeapPartialFC` with a :class:`~leap_plugin.face.LeapMarginLoss`
(SGD or AdamW, polynomial decay after a linear warm-up, gradient norm clipped at 5 as in
arcface_torch), verifies on the ``.bin`` sets (read and checked at start) every ``verbose``
steps and at the end, logs to the console (step / total steps, ETA), ``metrics.jsonl``
(strict JSON: null for a non-finite value) and TensorBoard (``<output>/tensorboard``) every
``frequent`` steps and at the last step of every epoch, and checkpoints every epoch (each
rank its own file, written atomically; it records ``network``, ``embedding_size`` and
``input_size`` for ``leap-export``). A LEAP run in which no class can get a feature cloud
(version ``vanilla`` without a head class, ...) says so at start as a WARNING. The flags
(``--resume``, ``--overwrite``) go before the overrides (``--resume`` is also found among
them); an unknown flag is refused with one line. ``--resume`` continues from the last checkpoint with the model,
optimizer, schedule, PartialFC weights and LEAP state restored; without it a finished or
interrupted run in ``output`` is not overwritten unless ``--overwrite``. Under torchrun the
backbone is wrapped in DistributedDataParallel and the classes are sharded across ranks
(NCCL on GPUs, gloo on CPUs).
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import numbers
import os
import sys
import time
from types import SimpleNamespace
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ..core.distributed import init_process_group
from ..face import LeapMarginLoss, LeapPartialFC, peer_margin_loss
from ..face.backbones import build_backbone, load_backbone_weights
from ..face.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from ..face.config import ConfigError, load_config
from ..face.data import FaceDataset
from ..face.recordio import read_counts
from ..face.verification import evaluate_pairs, read_bin
from ..io import FolderInUse, atomic_write, lock_folder

__all__ = ["main", "train", "poly_schedule", "build_data", "build_backbone_for", "build_partial_fc",
           "build_optimizer", "no_cloud_reason", "Verifier", "Monitor"]

logger = logging.getLogger("leap_plugin.face.train")


def poly_schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor at a step: linear warm-up to 1, then ``(1 - progress)^2`` down to 0
    (arcface_torch's PolyScheduler)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 1.0 - progress) ** 2
    return factor


def _setup_logging(output: str, rank: int) -> None:
    for handler in logger.handlers:
        handler.close()
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    fmt = logging.Formatter(f"%(asctime)s rank{rank} %(levelname)s %(message)s")
    handlers = [logging.StreamHandler(sys.stdout)]
    if rank == 0:
        handlers.append(logging.FileHandler(os.path.join(output, "training.log")))
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)


# ----------------------------------------------------------------------------- parts
def _val_paths(cfg: SimpleNamespace) -> list[str]:
    """``.bin`` paths of ``val_targets``; a bare name means ``<rec>/<name>.bin`` (arcface_torch)."""
    rec_dir = cfg.rec if os.path.isdir(cfg.rec) else os.path.dirname(cfg.rec)
    return [t if t.endswith(".bin") or os.path.isfile(t) else os.path.join(rec_dir, t + ".bin")
            for t in cfg.val_targets]


class Verifier:
    """The ``val_targets``, read and checked when constructed (a missing or damaged ``.bin``
    fails before training, not after the first epoch), verified on rank 0."""

    def __init__(self, paths: Sequence[str], batch_size: int, device: torch.device, input_size: int):
        self.batch_size, self.device = batch_size, device
        self.sets = {}
        for path in paths:
            try:
                images, issame = read_bin(path, input_size)
            except (FileNotFoundError, ValueError) as e:
                raise ConfigError(f"config key val_targets: {e}") from e
            if len(issame) < 10 or issame.all() or not issame.any():
                raise ConfigError(f"config key val_targets: {path!r} holds {len(issame)} pairs "
                                  f"({int(issame.sum())} genuine); 10-fold verification needs at least 10 pairs "
                                  "of both kinds")
            self.sets[os.path.splitext(os.path.basename(path))[0]] = (images, issame)

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        results = {}
        for name, (images, issame) in self.sets.items():
            metrics = evaluate_pairs(model, images, issame, self.batch_size, self.device)
            results.update({f"{name}/{key}": value for key, value in metrics.items() if key != "thresholds"})
        return results


def _json_value(value):
    """``value``, or None where it is a non-finite number (JSON has no NaN / Infinity)."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and not math.isfinite(value):
        return None
    return value


class Monitor:
    """Console lines (step / total steps, samples per second, ETA), ``metrics.jsonl`` and
    TensorBoard scalars, on rank 0 (arcface_torch's CallBackLogging and SummaryWriter).
    The training loop reports every ``frequent`` steps and at the last step of every epoch,
    so a run shorter than ``frequent`` steps is logged too."""

    def __init__(self, cfg: SimpleNamespace, rank: int, total_steps: int, start_step: int):
        self.rank, self.total, self.start_step = rank, total_steps, start_step
        self.path = os.path.join(cfg.output, "metrics.jsonl")
        self.tic = time.time()
        self.writer = None
        if rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=os.path.join(cfg.output, "tensorboard"))

    def _record(self, step: int, record: dict) -> None:
        # Strict JSON: a non-finite value (a NaN head statistic before any head class has
        # two angles) is written as null, not as Python's bare NaN that JSON readers refuse.
        line = json.dumps({"step": step, **{key: _json_value(value) for key, value in record.items()}},
                          allow_nan=False)
        with open(self.path, "a") as f:
            f.write(line + "\n")
        for key, value in record.items():
            if isinstance(value, float) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def step(self, step: int, epoch: int, num_epoch: int, loss: float, lr: float, samples: int,
             leap: dict[str, float]) -> None:
        if self.rank != 0:
            return
        elapsed = time.time() - self.tic
        done = step - self.start_step
        eta = datetime.timedelta(seconds=int(elapsed / max(done, 1) * (self.total - step)))
        record = {"epoch": epoch, "loss": loss, "lr": lr, "seconds": elapsed, **leap}
        logger.info("step %d/%d epoch %d/%d loss %.4f lr %.6f %.1f samples/s eta %s %s", step, self.total, epoch,
                    num_epoch, loss, lr, samples * done / max(elapsed, 1e-9), eta,
                    " ".join(f"{k}={v:.4g}" for k, v in leap.items()))
        self._record(step, record)

    def verification(self, step: int, results: dict[str, float]) -> None:
        if self.rank != 0:
            return
        logger.info("verification at step %d: %s", step, " ".join(f"{k}={v:.4f}" for k, v in results.items()))
        self._record(step, {f"val/{k}": v for k, v in results.items()})

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def build_data(cfg: SimpleNamespace, world: int, rank: int, device: torch.device):
    """``(dataset, sampler, loader)``; ConfigError when a rank would get no batch."""
    dataset = FaceDataset(cfg.rec, cfg.long_tail, input_size=cfg.input_size)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                        drop_last=True, pin_memory=device.type == "cuda")
    if len(loader) == 0:
        raise ConfigError(f"config key batch_size = {cfg.batch_size} is not allowed: {world} rank(s) x "
                          f"{cfg.batch_size} exceeds the {len(dataset)} training images")
    return dataset, sampler, loader


def class_counts_for(cfg: SimpleNamespace, dataset: FaceDataset) -> list[int]:
    """K_i of the training classes; a ``class_counts`` file must agree with the data."""
    counts = dataset.class_counts()
    if cfg.class_counts is not None:
        given = read_counts(cfg.class_counts)
        if given != counts:
            raise ConfigError(f"config key class_counts = {cfg.class_counts!r} is not allowed: its {len(given)} "
                              f"counts are not those of the training data ({len(counts)} classes"
                              + (", after the long_tail split" if cfg.long_tail else "") + ")")
    return counts


def no_cloud_reason(counts: Sequence[int], leap: dict) -> Optional[str]:
    """Why no class can ever get a feature cloud with these K_i and LEAP settings, or None.

    A class has angle statistics once its memory holds two angles (``K_i * memory_factor >= 2``).
    ``vanilla`` (Eq. 6) gives tail classes (K_i <= T) the head variance: it needs a head class
    with statistics and a tail class; ``full`` (Eq. 9) pools ``(K_i - 1) sigma_i^2``: it
    needs a class with K_i >= 2. ``cloud = "uniform"`` spreads these widths, so the same holds."""
    factor = leap["memory_factor"]
    if leap["version"] == "vanilla":
        threshold = leap["tail_threshold"]
        if not any(k > threshold for k in counts):
            return (f"no class has more than leap.tail_threshold = {threshold} training images (the largest has "
                    f"{max(counts)}), so there is no head class whose angular variance (Eq. 6, version 'vanilla') "
                    "a tail class could take")
        if not any(k > threshold and k * factor >= 2 for k in counts):
            return (f"no head class (more than leap.tail_threshold = {threshold} images) can hold the two angles a "
                    "variance needs (K_i * leap.memory_factor >= 2)")
        if not any(k <= threshold for k in counts):
            return (f"every class has more than leap.tail_threshold = {threshold} training images, so there is no "
                    "tail class for version 'vanilla' (Eq. 6) to give a cloud")
        return None
    if not any(k >= 2 for k in counts):
        return "no class has more than one training image, so the pooled variance of Eq. 9 (version 'full') is 0"
    return None


def build_backbone_for(cfg: SimpleNamespace, device: torch.device) -> torch.nn.Module:
    """The configured network, with ``pretrained`` weights loaded strictly when given."""
    backbone = build_backbone(cfg.network, cfg.embedding_size, cfg.dropout, cfg.input_size)
    if cfg.pretrained:
        try:
            load_backbone_weights(backbone, cfg.pretrained, cfg.network)
        except ValueError as e:
            raise ConfigError(f"config key pretrained: {e}") from e
        logger.info("backbone weights loaded from %s", cfg.pretrained)
    return backbone.to(device)


def build_partial_fc(cfg: SimpleNamespace, counts: list[int], num_classes: int, device: torch.device) -> LeapPartialFC:
    """LeapPartialFC with a LeapMarginLoss (or the configured peer method's margin)."""
    leap = dict(cfg.leap)
    alpha_mode, exact_grad = leap.pop("alpha_mode"), leap.pop("exact_grad")
    if cfg.long_tail_loss:  # a peer long-tail method instead of LEAP (validated: leap disabled)
        options = dict(cfg.long_tail_loss)
        margin = peer_margin_loss(cfg.scale, counts, options.pop("method"), cfg.margin_list, **options)
    else:
        margin = LeapMarginLoss(cfg.scale, *cfg.margin_list, cfg.interclass_filtering_threshold,
                                alpha_mode=alpha_mode, exact_grad=exact_grad)
    return LeapPartialFC(margin, cfg.embedding_size, num_classes, cfg.sample_rate, cfg.fp16,
                         class_counts=counts, seed=cfg.seed, **leap).to(device)


def build_optimizer(cfg: SimpleNamespace, backbone: torch.nn.Module, pfc: torch.nn.Module, steps_per_epoch: int):
    params = [{"params": backbone.parameters()}, {"params": pfc.parameters()}]
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, poly_schedule(steps_per_epoch * cfg.num_epoch, steps_per_epoch * cfg.warmup_epoch))
    return optimizer, scheduler


def _claim_output(cfg: SimpleNamespace, rank: int, overwrite: bool) -> None:
    os.makedirs(cfg.output, exist_ok=True)
    if rank == 0:
        lock_folder(cfg.output, "leap-face-train run")
    if not cfg.resume and not overwrite and os.path.exists(checkpoint_path(cfg.output, rank)):
        raise ConfigError(f"config key output = {cfg.output!r} holds a run already ({checkpoint_path(cfg.output, rank)}): "
                          "pass --resume to continue it, --overwrite to replace it, or choose another output")


# ----------------------------------------------------------------------------- loop
def train(cfg: SimpleNamespace, world: int = 1, rank: int = 0, device: Optional[torch.device] = None,
          overwrite: bool = False) -> dict[str, float]:
    """Train as configured; returns the final verification results (rank 0, else {})."""
    device = device or torch.device("cpu")
    if cfg.fp16 and device.type != "cuda":
        raise ConfigError("config key fp16 = True is not allowed: mixed precision needs CUDA; set it to False")
    _claim_output(cfg, rank, overwrite)
    _setup_logging(cfg.output, rank)
    torch.manual_seed(cfg.seed + rank)
    verify = Verifier(_val_paths(cfg), cfg.batch_size, device, cfg.input_size)

    dataset, sampler, loader = build_data(cfg, world, rank, device)
    num_classes = cfg.num_classes or dataset.num_classes
    if num_classes != dataset.num_classes:
        raise ConfigError(f"config key num_classes = {cfg.num_classes} is not allowed: the training "
                          f"data has {dataset.num_classes} identities; leave it None or set that")
    counts = class_counts_for(cfg, dataset)
    reason = no_cloud_reason(counts, cfg.leap) if cfg.leap["enabled"] else None
    if reason and rank == 0:
        logger.warning("LEAP: %s: no class can get a feature cloud, so this run trains a plain baseline "
                       "(see leap.version and leap.tail_threshold)", reason)
    backbone = build_backbone_for(cfg, device)
    model = DistributedDataParallel(backbone) if world > 1 else backbone
    pfc = build_partial_fc(cfg, counts, num_classes, device)
    steps = len(loader)
    optimizer, scheduler = build_optimizer(cfg, backbone, pfc, steps)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.fp16)

    # Written into every checkpoint; a resume must match (class_counts aside, checked by the
    # LEAP state itself). input_size also tells leap-export the run's crop size.
    identity = {"world_size": world, "rank": rank, "network": cfg.network, "embedding_size": cfg.embedding_size,
                "input_size": cfg.input_size, "num_classes": num_classes, "class_counts": counts}
    start_epoch, global_step = 0, 0
    if cfg.resume:
        state = load_checkpoint(checkpoint_path(cfg.output, rank), identity, device)
        backbone.load_state_dict(state["backbone"])
        pfc.load_state_dict(state["partial_fc"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["lr_scheduler"])
        # Flips and loader order draw from torch's RNG: restoring it makes a resumed run
        # continue exactly as an uninterrupted one.
        torch.set_rng_state(state["rng"].cpu())
        start_epoch, global_step = state["epoch"], state["global_step"]
        logger.info("resumed from epoch %d, step %d", start_epoch, global_step)
    logger.info("config: %s", vars(cfg))
    logger.info("%d images, %d classes, %d rank(s), %d steps per epoch", len(dataset), num_classes, world, steps)

    monitor = Monitor(cfg, rank, steps * cfg.num_epoch, global_step)
    results, verified_at = {}, -1
    try:
        for epoch in range(start_epoch, cfg.num_epoch):
            sampler.set_epoch(epoch)
            pfc.set_epoch(epoch)
            model.train()
            pfc.train()
            for batch, (images, labels) in enumerate(loader, start=1):
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                with torch.autocast(device.type, enabled=cfg.fp16):
                    embeddings = model(images)
                loss = pfc(embeddings, labels)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(backbone.parameters(), 5)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                global_step += 1
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"loss is {loss.item()} at step {global_step}; lower lr")
                # Every `frequent` steps and at the end of every epoch: a short run (fewer
                # steps than `frequent`) is logged too, and TensorBoard is never empty.
                if global_step % cfg.frequent == 0 or batch == steps:
                    monitor.step(global_step, epoch, cfg.num_epoch, loss.item(), scheduler.get_last_lr()[0],
                                 cfg.batch_size * world, pfc.summary())
                if global_step % cfg.verbose == 0 and rank == 0 and verify.sets:
                    results, verified_at = verify(backbone), global_step
                    monitor.verification(global_step, results)
            state = {**identity, "epoch": epoch + 1, "global_step": global_step,
                     "backbone": backbone.state_dict(), "partial_fc": pfc.state_dict(),
                     "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(),
                     "rng": torch.get_rng_state()}
            save_checkpoint(checkpoint_path(cfg.output, rank), state)
            if rank == 0:
                atomic_write(os.path.join(cfg.output, "model.pt"), lambda f: torch.save(backbone.state_dict(), f))
            logger.info("epoch %d done, checkpoint written", epoch)

        if rank == 0 and verify.sets and verified_at != global_step:
            results = verify(backbone)
            monitor.verification(global_step, results)
    finally:
        monitor.close()
    return results


def _init_distributed() -> tuple[int, int, torch.device]:
    """World size, rank and device from torchrun's environment (one process otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        init_process_group(world, rank)
    return world, rank, device


_FLAGS = ("--resume", "--overwrite")


def _check_flags(parser: argparse.ArgumentParser, overrides: Sequence[str], extra: Sequence[str]) -> None:
    """One clear line (exit 2) for a flag among or after the key=value overrides that is
    not one of :data:`_FLAGS` (``--output x``), or that ``--`` turned into an override."""
    for token in list(overrides) + list(extra):
        if not token.startswith("-"):
            continue
        name = token.split("=")[0]
        if name in _FLAGS:  # after `--`, argparse hands it over as an override
            parser.error(f"{token!r} was read as an override: flags come before the key=value overrides "
                         f"(leap-face-train CONFIG {name} key=value ...)")
        key = name.lstrip("-").replace("-", "_") or "key"
        parser.error(f"{token!r} is not a flag of leap-face-train: its flags are {' and '.join(_FLAGS)}, and flags "
                     f"come before the key=value overrides; set config keys as overrides ({key}=VALUE)")
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="leap-face-train", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="arcface_torch-style Python config file")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output")
    parser.add_argument("--overwrite", action="store_true", help="replace a run found in output")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. leap.start_epoch=2")
    args, extra = parser.parse_known_intermixed_args(argv)  # --resume anywhere on the line
    _check_flags(parser, args.overrides, extra)
    try:
        cfg = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as e:
        parser.error(str(e))
    if args.resume:
        cfg.resume = True
    world, rank, device = _init_distributed()
    try:
        train(cfg, world, rank, device, overwrite=args.overwrite)
    except (ConfigError, FileNotFoundError, FolderInUse) as e:
        parser.error(str(e))
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
