"""``leap-face-train``: face recognition training in arcface_torch's style, with LEAP.

    leap-face-train CONFIG.py [--resume] [key=value ...]
    torchrun --nproc_per_node=N -m leap_plugin.cli.face_train CONFIG.py

The config is an arcface_torch-style Python file (:mod:`leap_plugin.face.config`). Training
runs an IResNet through :class:`~leap_plugin.face.LeapPartialFC` with a
:class:`~leap_plugin.face.LeapMarginLoss` (SGD or AdamW, polynomial decay after a linear
warm-up, gradient norm clipped at 5 as in arcface_torch), verifies on the ``.bin`` sets every
``verbose`` steps and at the end, and checkpoints every epoch (each rank its own file,
written atomically). ``--resume`` continues from the last checkpoint with the model,
optimizer, schedule, PartialFC weights and LEAP state restored. Under torchrun the backbone
is wrapped in DistributedDataParallel and the classes are sharded across ranks (NCCL on
GPUs, gloo on CPUs).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
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
from ..face import LeapMarginLoss, LeapPartialFC, LongTailMarginLoss
from ..face.backbones import build_backbone
from ..face.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from ..io import atomic_write
from ..face.config import ConfigError, load_config
from ..face.data import FaceFolder
from ..face.verification import embed_images, pair_scores, read_bin, verification_accuracy

__all__ = ["main", "train", "poly_schedule"]

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


def _val_targets(cfg: SimpleNamespace) -> list[str]:
    """``.bin`` paths of ``val_targets``; a bare name means ``<rec>/<name>.bin`` (arcface_torch)."""
    paths = [t if t.endswith(".bin") or os.path.isfile(t) else os.path.join(cfg.rec, t + ".bin")
             for t in cfg.val_targets]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ConfigError(f"config key val_targets: no verification set at {missing}")
    return paths


class _Verifier:
    """Verification on rank 0; the ``.bin`` files are decoded once."""

    def __init__(self, paths: Sequence[str], batch_size: int, device: torch.device):
        self.paths, self.batch_size, self.device = list(paths), batch_size, device
        self._sets: dict[str, tuple] = {}

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        results = {}
        for path in self.paths:
            if path not in self._sets:
                self._sets[path] = read_bin(path)
            images, issame = self._sets[path]
            scores = pair_scores(embed_images(model, images, self.batch_size, True, self.device))
            name = os.path.splitext(os.path.basename(path))[0]
            acc = verification_accuracy(scores, issame)
            results[f"{name}/accuracy"], results[f"{name}/std"] = acc["accuracy"], acc["std"]
        return results


def _log_metrics(cfg: SimpleNamespace, rank: int, record: dict) -> None:
    if rank != 0:
        return
    with open(os.path.join(cfg.output, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


def train(cfg: SimpleNamespace, world: int = 1, rank: int = 0,
          device: Optional[torch.device] = None) -> dict[str, float]:
    """Train as configured; returns the final verification results (rank 0, else {})."""
    device = device or torch.device("cpu")
    if cfg.fp16 and device.type != "cuda":
        raise ConfigError("config key fp16 = True is not allowed: mixed precision needs CUDA; set it to False")
    os.makedirs(cfg.output, exist_ok=True)
    _setup_logging(cfg.output, rank)
    torch.manual_seed(cfg.seed + rank)
    verify = _Verifier(_val_targets(cfg), cfg.batch_size, device)

    dataset = FaceFolder(cfg.rec, cfg.long_tail)
    num_classes = cfg.num_classes or dataset.num_classes
    if num_classes != dataset.num_classes:
        raise ConfigError(f"config key num_classes = {cfg.num_classes} is not allowed: the training "
                          f"data has {dataset.num_classes} identities; leave it None or set that")
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                        drop_last=True, pin_memory=device.type == "cuda")
    if len(loader) == 0:
        raise ConfigError(f"config key batch_size = {cfg.batch_size} is not allowed: {world} rank(s) x "
                          f"{cfg.batch_size} exceeds the {len(dataset)} training images")

    backbone = build_backbone(cfg.network, cfg.embedding_size, cfg.dropout).to(device)
    model = DistributedDataParallel(backbone) if world > 1 else backbone
    leap = dict(cfg.leap)
    alpha_mode, exact_grad = leap.pop("alpha_mode"), leap.pop("exact_grad")
    counts = dataset.class_counts()
    if cfg.long_tail_loss:  # a peer long-tail method instead of LEAP (validated: leap disabled)
        options = dict(cfg.long_tail_loss)
        margin = LongTailMarginLoss(cfg.scale, counts, options.pop("method"), cfg.margin_list, **options)
    else:
        margin = LeapMarginLoss(cfg.scale, *cfg.margin_list, cfg.interclass_filtering_threshold,
                                alpha_mode=alpha_mode, exact_grad=exact_grad)
    pfc = LeapPartialFC(margin, cfg.embedding_size, num_classes, cfg.sample_rate, cfg.fp16,
                        class_counts=counts, seed=cfg.seed, **leap).to(device)
    params = [{"params": backbone.parameters()}, {"params": pfc.parameters()}]
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, poly_schedule(steps * cfg.num_epoch, steps * cfg.warmup_epoch))
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.fp16)

    identity = {"world_size": world, "rank": rank, "network": cfg.network,
                "embedding_size": cfg.embedding_size, "num_classes": num_classes, "class_counts": counts}
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

    tic = time.time()
    results, verified_at = {}, -1
    for epoch in range(start_epoch, cfg.num_epoch):
        sampler.set_epoch(epoch)
        pfc.set_epoch(epoch)
        model.train()
        pfc.train()
        for images, labels in loader:
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
            if global_step % cfg.frequent == 0:
                record = {"step": global_step, "epoch": epoch, "loss": loss.item(),
                          "lr": scheduler.get_last_lr()[0], "seconds": time.time() - tic, **pfc.summary()}
                logger.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in record.items()))
                _log_metrics(cfg, rank, record)
            if global_step % cfg.verbose == 0 and rank == 0 and verify.paths:
                results, verified_at = verify(backbone), global_step
                _report(cfg, rank, global_step, results)
        state = {**identity, "epoch": epoch + 1, "global_step": global_step,
                 "backbone": backbone.state_dict(), "partial_fc": pfc.state_dict(),
                 "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(),
                 "rng": torch.get_rng_state()}
        save_checkpoint(checkpoint_path(cfg.output, rank), state)
        if rank == 0:
            atomic_write(os.path.join(cfg.output, "model.pt"), lambda f: torch.save(backbone.state_dict(), f))
        logger.info("epoch %d done, checkpoint written", epoch)

    if rank == 0 and verify.paths and verified_at != global_step:
        results = verify(backbone)
        _report(cfg, rank, global_step, results)
    return results


def _report(cfg: SimpleNamespace, rank: int, step: int, results: dict[str, float]) -> None:
    logger.info("verification at step %d: %s", step, " ".join(f"{k}={v:.4f}" for k, v in results.items()))
    _log_metrics(cfg, rank, {"step": step, **{f"val/{k}": v for k, v in results.items()}})


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="leap-face-train", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="arcface_torch-style Python config file")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. leap.start_epoch=2")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as e:
        parser.error(str(e))
    if args.resume:
        cfg.resume = True
    world, rank, device = _init_distributed()
    try:
        train(cfg, world, rank, device)
    except (ConfigError, FileNotFoundError) as e:
        parser.error(str(e))
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
