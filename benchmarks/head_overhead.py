#!/usr/bin/env python
"""What LEAP costs in a fastreid training step, and in the classification head alone, beside
its closest relatives GCL and ElasticFace.

    python benchmarks/head_overhead.py [--steps 15] [--warmup 3] [--settings R50 MNV2 head]

Full step: fastreid's ``Baseline`` built from the shipped configs (stock ``CosSoftmax`` vs
``LeapHead`` + ``LeapCosSoftmax``, same backbone, same batch), forward + backward +
optimizer step, the two models interleaved step by step in one process (the order swapped
every step), median over the timed steps. The LEAP model's memory is filled first and runs
with the cloud on for every class (``CLOUD uniform``, which gives every class with
statistics a cloud: the most work LEAP can do per step) and the centers, memory and
statistics updated every step, as LeapHook does. Settings: ResNet-50 at 256 x 128 with batch
64 (the paper's re-ID setting, 751 classes as Market-1501) and the sprites' MobileNetV2 at
64 x 64 with batch 64 (114 classes as ``<H20, S4>``).

Head only: ``LeapCosSoftmax`` with every sample clouded vs ``CosSoftmax``, forward + backward
of the cosine logits and the cross-entropy, 512-d, batch 256, 20,000 and 100,000 classes.

Relatives: GCL (``GCLSoftmax``, noise on every cosine) and ElasticFace-Cos
(``ElasticCosSoftmax``, a margin drawn per sample), timed in the same loops, interleaved
with the stock layer and LEAP, so each row's ratio is against the same stock steps.

Writes ``benchmarks/results/head_overhead.{json,md}`` with the machine and commit.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import leap_plugin  # noqa: E402,F401
from leap_plugin.io import atomic_write  # noqa: E402
from leap_plugin.runs import code_commit, machine_id, machine_info  # noqa: E402

STEP_TARGET, HEAD_TARGET = 1.02, 1.15
#: name -> (stock config, LEAP config, input size, classes)
STEP_SETTINGS = {
    "R50": ("Market1501/cosface_R50.yml", "Market1501/leap_cf_R50.yml", (256, 128), 751,
            "fastreid ResNet-50, 256x128, batch 64, 751 classes"),
    "MNV2": ("Wesnoth/cosface_mnv2.yml", "Wesnoth/leap_cf_mnv2.yml", (64, 64), 114,
             "fastreid MobileNetV2 (sprites), 64x64, batch 64, 114 classes"),
}
BATCH, IDS = 64, 16


def _model(config: str, size, classes: int, device: str, leap: bool, method: str | None = None):
    from fastreid.modeling import build_model
    from fastreid.solver import build_optimizer

    from leap_plugin.reid.config import load_config
    from leap_plugin.reid.engine import hand_class_counts
    from leap_plugin.reid.methods import method_overrides
    from leap_plugin.resources import CONFIGS

    opts = ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", device, "MODEL.HEADS.NUM_CLASSES", str(classes),
            "INPUT.SIZE_TRAIN", str(list(size)), "SOLVER.AMP.ENABLED", "False"]
    if leap:
        opts += ["MODEL.HEADS.LEAP.CLOUD", "uniform"]
    if method is not None:
        opts = method_overrides(method) + opts
    cfg = load_config(os.path.join(CONFIGS, config), opts)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer, _ = build_optimizer(cfg, model)
    if method is not None:  # GCL's noise depends on K_i: a long tail, 8 to 1 images
        hand_class_counts(model, torch.arange(classes) % 8 + 1)
    if leap:
        head = model.heads
        head.memory.set_class_counts(torch.full((classes,), 8, dtype=torch.long))
        head.hook_attached = True
        with torch.no_grad():  # every class gets statistics, so the uniform cloud covers all
            for _ in range(3):
                head.memory.update(torch.randn(classes, head.weight.shape[1], device=device),
                                   torch.arange(classes, device=device))
        head.memory.refresh_statistics()
        assert bool((head.memory.cloud_var > 0).all()), "every class must be clouded"
    return model, optimizer


def _step(model, optimizer, batch, leap: bool) -> float:
    from fastreid.utils.events import EventStorage

    if leap:
        model.heads.update_memory, model.heads.cloud_active = True, True
    if batch["images"].is_cuda:
        torch.cuda.synchronize()
    tic = time.perf_counter()
    with EventStorage():
        loss = sum(model({k: v.clone() for k, v in batch.items()}).values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if leap:
        model.heads.memory.refresh_statistics()  # as LeapHook does after every step
    if batch["images"].is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - tic


#: What is timed: the stock layer, LEAP (eager and fused perturbation) and its relatives.
KINDS = ("stock", "leap", "leap fused", "GCL", "ElasticFace-Cos")
RELATIVES = ("GCL", "ElasticFace-Cos")


def _rows(times: dict, what: str, kind: str, target: float, steps: int) -> list[dict]:
    """One row per kind against the stock layer; LEAP's rows carry its target, the
    relatives' none."""
    stock = statistics.median(times["stock"])
    return [{"setting": f"{what}{' (fused perturbation)' if key.endswith('fused') else ''}", "kind": kind,
             "method": "LEAP-CF" if key.startswith("leap") else key,
             "stock_ms": 1e3 * stock, "leap_ms": 1e3 * statistics.median(times[key]),
             "ratio": statistics.median(times[key]) / stock, "target": None if key in RELATIVES else target,
             "steps": steps}
            for key in KINDS[1:]]


def _order(step: int) -> tuple:
    return KINDS if step % 2 == 0 else KINDS[::-1]


def full_step(name: str, steps: int, warmup: int, device: str) -> list[dict]:
    from leap_plugin.core import cloud

    stock_cfg, leap_cfg, size, classes, what = STEP_SETTINGS[name]
    models = {key: _model(leap_cfg if key.startswith("leap") else stock_cfg, size, classes, device,
                          key.startswith("leap"), key if key in RELATIVES else None)
              for key in KINDS}
    g = torch.Generator().manual_seed(0)
    times = {key: [] for key in KINDS}
    for step in range(warmup + steps):
        ids = torch.randperm(classes, generator=g)[:IDS].repeat_interleave(BATCH // IDS)
        batch = {"images": (torch.rand(BATCH, 3, *size, generator=g) * 255).to(device), "targets": ids.to(device)}
        for key in _order(step):
            cloud.use_fused(key.endswith("fused"))
            elapsed = _step(*models[key], batch, key.startswith("leap"))
            if step >= warmup:
                times[key].append(elapsed)
    cloud.use_fused(False)
    return _rows(times, what, "full step", STEP_TARGET, steps)


def head_only(classes: int, steps: int, warmup: int, device: str, batch: int = 256, dim: int = 512) -> list[dict]:
    from fastreid.layers import any_softmax

    from leap_plugin.core import cloud
    from leap_plugin.reid.layers import ElasticCosSoftmax, GCLSoftmax, LeapCosSoftmax

    layers = {"stock": any_softmax.CosSoftmax(classes, 24.0, 0.2), "leap": LeapCosSoftmax(classes, 24.0, 0.2),
              "leap fused": LeapCosSoftmax(classes, 24.0, 0.2), "GCL": GCLSoftmax(classes, 24.0, 0.0),
              "ElasticFace-Cos": ElasticCosSoftmax(classes, 24.0, 0.2)}
    layers["GCL"].set_class_counts(torch.arange(classes) % 8 + 1)
    g = torch.Generator().manual_seed(0)
    weight = F.normalize(torch.randn(classes, dim, generator=g)).to(device)
    times = {key: [] for key in KINDS}
    for step in range(warmup + steps):
        feats = torch.randn(batch, dim, generator=g).to(device)
        labels = torch.randint(0, classes, (batch,), generator=g).to(device)
        variance = torch.full((batch,), 0.01, device=device)
        for key in _order(step):
            cloud.use_fused(key.endswith("fused"))
            f = feats.clone().requires_grad_()
            if device == "cuda":
                torch.cuda.synchronize()
            tic = time.perf_counter()
            cos = F.linear(F.normalize(f), weight)
            logits = layers[key](cos, labels, variance=variance) if key.startswith("leap") else layers[key](cos, labels)
            F.cross_entropy(logits, labels).backward()
            if device == "cuda":
                torch.cuda.synchronize()
            if step >= warmup:
                times[key].append(time.perf_counter() - tic)
    cloud.use_fused(False)
    return _rows(times, f"head only: {classes:,} classes, {dim}-d, batch {batch}, every sample clouded", "head",
                 HEAD_TARGET, steps)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--settings", nargs="+", default=["MNV2", "R50", "head"], choices=["MNV2", "R50", "head"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    rows = []
    for name in args.settings:
        results = ([row for c in (20_000, 100_000) for row in head_only(c, args.steps, args.warmup, args.device)]
                   if name == "head" else full_step(name, args.steps, args.warmup, args.device))
        for row in results:
            print(json.dumps(row), flush=True)
            rows.append(row)
    info, commit = machine_info(torch.get_num_threads()), code_commit()
    report = {"machine": info, "commit": commit, "device": args.device, "results": rows}
    suffix = "" if args.device == "cpu" else f"_{args.device}"
    atomic_write(os.path.join(args.output, f"head_overhead{suffix}.json"),
                 lambda f: f.write(json.dumps(report, indent=1).encode()))
    lines = ["# LEAP's cost in a training step and in the head, beside GCL and ElasticFace", "",
             f"Machine: {machine_id(info)}, device {args.device}; commit {commit[:12]}. Median of {args.steps} "
             f"timed steps after {args.warmup} warm-up, the stock layer, LEAP, GCL and ElasticFace-Cos "
             "interleaved step by step (ratio = the method's step time over the stock layer's). Command: "
             f"`python benchmarks/head_overhead.py --steps {args.steps} --warmup {args.warmup} --settings "
             f"{' '.join(args.settings)}`.", "",
             "| setting | method | stock_ms | method_ms | ratio | LEAP's target |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['method']} | {r['stock_ms']:.1f} | {r['leap_ms']:.1f} | {r['ratio']:.3f} | "
              + (f"<= {r['target']} ({'met' if r['ratio'] <= r['target'] else 'not met'})" if r["target"] else "—")
              + " |" for r in rows]
    atomic_write(os.path.join(args.output, f"head_overhead{suffix}.md"),
                 lambda f: f.write(("\n".join(lines) + "\n").encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
