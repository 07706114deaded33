"""Cost of LEAP inside PartialFC: LeapPartialFC with the feature cloud on vs the same module
with LEAP off, forward + backward per step at 100,000 classes, 512-d, batch 256, CosFace
(the cheapest margin without a cloud, so the largest relative overhead); and the bytes of
LEAP state each rank holds, now that it is sharded with the classes.

    python benchmarks/partial_fc.py [--steps 5] [--warmup 1]

The LEAP state is first filled from synthetic long-tailed data (20% of the classes with 60
samples, the rest with 5, the tail classes narrower) so that the tail classes have feature
clouds, in two geometries (``GEOMETRIES``: clouds of about 0.33 rad, as training on the
sprites measures, and of about 1.6 rad, where many logits are clipped); every timed batch is
drawn from clouded classes (every row pays for the perturbation and the alpha draws). Two
LEAP settings: centers, memory and cloud widths updated every step (``period 1``, the
default), and every 5 steps (``period 5``, the paper's face setting, Sec. 4.3), each with the
eager perturbation and with the fused one (``use_fused``, torch.compile). The modules run
alternately so that machine load hits all alike; the time of a setting is its median over the
timed steps (a period-5 module pays its update on one step in 5). LEAP's closest relatives
run in the same loop, LEAP off, with their margin callables: GCL (noise on every cosine,
drawn per element by global class) and ElasticFace-Cos (a margin drawn per row).
Writes benchmarks/results/partial_fc.json and .md with the machine and commit.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from leap_plugin.core import LeapMemory, cloud  # noqa: E402
from leap_plugin.face import ElasticMarginLoss, LeapMarginLoss, LeapPartialFC, LongTailMarginLoss  # noqa: E402
from leap_plugin.runs import code_commit, machine_id, machine_info  # noqa: E402

NUM_CLASSES, DIM, BATCH = 100_000, 512, 256
HEAD_FRACTION, HEAD_K, TAIL_K = 0.2, 60, 5
TARGET_RATIO = 1.10
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def class_counts() -> torch.Tensor:
    counts = torch.full((NUM_CLASSES,), TAIL_K, dtype=torch.long)
    counts[: int(HEAD_FRACTION * NUM_CLASSES)] = HEAD_K
    return counts


#: Synthetic class spreads (feature noise std of head, tail classes) -> the clouds they give
#: at the shipped CLOUD_SCALE (5): "demo-like" about 0.57 rad (std of alpha), as LEAP-CF
#: measures while training on the sprites (0.4-0.75 rad); "wide" about 2.7 rad, where |alpha|
#: often exceeds pi and many logits are clipped. The std grows with CLOUD_SCALE.
GEOMETRIES = {"demo-like": (0.008, 0.005), "wide": (0.05, 0.02)}


@torch.no_grad()
def fill_memory(pfc: LeapPartialFC, spreads: tuple, rounds: int = 2, chunk: int = 50_000) -> None:
    """Feed every class ``rounds`` synthetic samples: class directions plus noise of std
    ``spreads`` (head, tail); then refresh the statistics so the tail classes get clouds."""
    g = torch.Generator().manual_seed(0)
    directions = F.normalize(torch.randn(NUM_CLASSES, DIM, generator=g), dim=1)
    spread = torch.where(class_counts() == HEAD_K, *spreads)
    for _ in range(rounds):
        for start in range(0, NUM_CLASSES, chunk):
            labels = torch.arange(start, min(start + chunk, NUM_CLASSES))
            noise = torch.randn(len(labels), DIM, generator=g) * spread[labels, None]
            pfc.memory.update(directions[labels] + noise, labels)
    pfc.memory.refresh_statistics()


def time_steps(pfcs: dict[str, LeapPartialFC], steps: int, warmup: int) -> dict[str, float]:
    """Median seconds of forward + backward per module, the modules interleaved (their order
    reversed every step); a name ending in "fused" runs with the fused perturbation."""
    g = torch.Generator().manual_seed(1)
    clouded = (pfcs["period 1"].memory.cloud_var > 0).nonzero(as_tuple=True)[0]
    times: dict[str, list[float]] = {name: [] for name in pfcs}
    for step in range(warmup + steps):
        labels = clouded[torch.randint(len(clouded), (BATCH,), generator=g)]
        embeddings = torch.randn(BATCH, DIM, generator=g)
        for name, pfc in (list(pfcs.items()) if step % 2 == 0 else list(pfcs.items())[::-1]):
            x = embeddings.clone().requires_grad_()
            cloud.use_fused(name.endswith("fused"))
            tic = time.perf_counter()
            pfc(x, labels).backward()
            elapsed = time.perf_counter() - tic
            pfc.weight.grad = None
            if step >= warmup:
                times[name].append(elapsed)
    return {name: statistics.median(t) for name, t in times.items()}


def build(sample_rate: float, period: int = 0, spreads: tuple = GEOMETRIES["demo-like"]) -> LeapPartialFC:
    """LEAP off (``period`` 0) or on with that update / refresh period, cloud active."""
    margin = LeapMarginLoss(64.0, 1.0, 0.0, 0.35)
    if not period:
        return LeapPartialFC(margin, DIM, NUM_CLASSES, sample_rate, enabled=False)
    pfc = LeapPartialFC(margin, DIM, NUM_CLASSES, sample_rate, class_counts=class_counts(),
                        center_update_period=period, stats_period=period)
    fill_memory(pfc, spreads)
    pfc.cloud_active = True
    return pfc


#: LEAP's relatives, LEAP off: name -> their margin callable (CosFace m = 0.35 where they keep one).
RELATIVES = {"GCL": lambda: LongTailMarginLoss(64.0, class_counts(), "gcl", (1.0, 0.0, 0.35)),
             "ElasticFace-Cos": lambda: ElasticMarginLoss(64.0, 1.0, 0.0, 0.35)}
LEAP_SETTINGS = ("period 1", "period 5", "period 1 fused", "period 5 fused")


MEAN_K = HEAD_FRACTION * HEAD_K + (1 - HEAD_FRACTION) * TAIL_K


def state_bytes(dim: int = DIM) -> list[dict]:
    """Bytes of LEAP state per rank, from the buffers of a small LeapMemory: a per-class
    part (centers: dim floats, plus the statistics), and the angle memory (one float per
    training image x MEMORY_FACTOR). Computed, not allocated, for the large cases."""
    small = LeapMemory(4, dim, class_counts=[2, 2, 2, 2])
    slot = small.memory.element_size()
    per_class = sum(b.numel() * b.element_size() for name, b in small.named_buffers() if name != "memory") / 4
    rows = []
    for classes in (100_000, 2_000_000):
        for ranks in (1, 2, 8):
            local = classes / ranks
            sharded = local * per_class + local * MEAN_K * slot
            replicated = classes * per_class + classes * MEAN_K * slot
            rows.append({"classes": classes, "ranks": ranks, "sharded_mb": sharded / 2 ** 20,
                         "replicated_mb": replicated / 2 ** 20, "weights_mb": local * dim * 4 / 2 ** 20})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=9, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for (clouds, spreads), sample_rate in itertools.product(GEOMETRIES.items(), (1.0, 0.1)):
        pfcs = {"off": build(sample_rate), **{name: build(sample_rate, period, spreads) for name, period in (
            ("period 1", 1), ("period 5", 5), ("period 1 fused", 1), ("period 5 fused", 5))},
                **{name: LeapPartialFC(make(), DIM, NUM_CLASSES, sample_rate, enabled=False)
                   for name, make in RELATIVES.items()}}
        for pfc in pfcs.values():
            pfc.weight.data.copy_(pfcs["off"].weight.data)
        t = time_steps(pfcs, args.steps, args.warmup)
        cloud_var = pfcs["period 1"].memory.cloud_var
        for setting in LEAP_SETTINGS + tuple(RELATIVES):
            row = {"clouds": clouds, "cloud_std_rad": float(cloud_var[cloud_var > 0].sqrt().mean()),
                   "sample_rate": sample_rate, "leap": setting if setting in RELATIVES else f"LEAP {setting}",
                   "off_ms": 1e3 * t["off"], "leap_ms": 1e3 * t[setting], "ratio": t[setting] / t["off"],
                   "clouded_classes": int((cloud_var > 0).sum()) if setting in LEAP_SETTINGS else None}
            print(json.dumps(row), flush=True)
            rows.append(row)
        del pfcs
    cloud.use_fused(False)
    memory_rows = state_bytes()
    info = machine_info(torch.get_num_threads())
    report = {
        "setting": {"num_classes": NUM_CLASSES, "embedding_size": DIM, "batch_size": BATCH, "margin": "CosFace",
                    "steps": args.steps, "warmup": args.warmup, "target_ratio": TARGET_RATIO, "device": "cpu"},
        "machine": info, "commit": code_commit(), "results": rows, "state_bytes_per_rank": memory_rows,
    }
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "partial_fc.json"), "w") as f:
        json.dump(report, f, indent=2)
    lines = [
        "# LeapPartialFC overhead (forward + backward per step)",
        "",
        f"Machine: {machine_id(info)}; commit {report['commit'][:12]}. Command: "
        f"`python benchmarks/partial_fc.py --steps {args.steps} --warmup {args.warmup}`.",
        "",
        f"{NUM_CLASSES:,} classes, {DIM}-d, batch {BATCH}, CosFace, CPU, "
        f"median of {args.steps} steps after {args.warmup} warm-up, every sample from a clouded class. "
        f"LEAP state updated every step (period 1) or every 5 steps (period 5, the paper's face "
        f"setting); the perturbation eager or fused (torch.compile). GCL and ElasticFace-Cos: their margin "
        f"callables, LEAP off, in the same loop. LEAP's target: ratio <= {TARGET_RATIO}.",
        "",
        "| clouds (mean std of alpha) | sample_rate | method | plain CosFace (ms) | method (ms) | ratio "
        "| within LEAP's target |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {r['clouds']} ({r['cloud_std_rad']:.2f} rad) | {r['sample_rate']} | {r['leap']} | {r['off_ms']:.0f} | {r['leap_ms']:.0f} | "
              f"{r['ratio']:.2f} | "
              + ("—" if r["clouded_classes"] is None else "yes" if r["ratio"] <= TARGET_RATIO else "no") + " |"
              for r in rows]
    lines += ["", "LEAP state per rank (centers, angle memory, per-class statistics), computed from the "
              f"buffers of LeapMemory, {DIM}-d, K_i as above (mean {MEAN_K:g} images per class), MEMORY_FACTOR 1; "
              "the class weights of PartialFC for comparison:", "",
              "| classes | ranks | LEAP state per rank (MB) | before: replicated (MB) | class weights per rank (MB) |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['classes']:,} | {r['ranks']} | {r['sharded_mb']:.1f} | {r['replicated_mb']:.1f} | "
              f"{r['weights_mb']:.1f} |" for r in memory_rows]
    with open(os.path.join(RESULTS, "partial_fc.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
