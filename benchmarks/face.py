#!/usr/bin/env python
"""Face benchmark on real images: leap-face-train on Wesnoth's unit sprites as identity folders.

    python benchmarks/face.py                    # every method x seed (about 1.5 hours on 2 CPU cores, --jobs 2)
    python benchmarks/face.py --methods CosFace LEAP-CV --seeds 0 --jobs 2

No face-identity data set can be downloaded here, so the face path is measured on the real,
identity-labelled sprites of Debian's ``wesnoth-1.16-data``, treated as
arcface_torch treats faces: half the identities train, cut to the paper's long-tailed
``<H_a, T_b>`` (Table 6: the top ``a`` identities whole, the next ``b`` with a few images
each); the held-out identities give identity-disjoint verification pairs written as an
insightface ``.bin`` (10-fold accuracy, TPR at FPR 1e-3 / 1e-4) and a MegaFace-style rank-1
identification with distractors (probes of half the held-out identities against the
images of the other half). Methods: the paper's face rows, CosFace vs LEAP-CV and ArcFace vs
LEAP-AV, plus LDAM, ElasticFace (Cos and Arc) and GCL. Network: MobileFaceNet (arcface_torch's ``mbf``) at 48 x 48, 4 epochs,
sized for a 2-core CPU (24 runs in about 1.5 hours with --jobs 2). Each run records its machine
and commit; paired differences pair runs of one seed, machine and commit. Writes ``benchmarks/results/face.{json,md}``; finished runs are
reused.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from leap_plugin.data.folders import WESNOTH_UNITS, composite_rgba, scan_wesnoth, split_identities  # noqa: E402
from leap_plugin.io import atomic_write  # noqa: E402
from leap_plugin.runs import code_commit, machine_id, machine_info  # noqa: E402

INPUT_SIZE = 48
#: <H_a, T_b> of the training half: the 20 largest identities whole, the next 80 with 4 images.
LONG_TAIL = dict(head=20, tail_classes=80, tail_samples=4, seed=0)
PAIRS = 1500  # genuine and as many impostor pairs
COMMON = dict(network="mbf", input_size=INPUT_SIZE, embedding_size=128, scale=32.0, batch_size=64,
              optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, num_epoch=4, warmup_epoch=1,
              frequent=10, verbose=10 ** 9, num_workers=0, long_tail=LONG_TAIL)
#: The stock config every method is applied to: CosFace m = 0.35 (the paper's face setting),
#: LEAP's settings for when a method enables it (cloud from epoch 2 of 4, T = 10).
STOCK = dict(COMMON, margin_list=(1.0, 0.0, 0.35), leap=dict(tail_threshold=10, start_epoch=2))
LEAP = STOCK["leap"]
#: The paper's face rows (CosFace vs LEAP-CV, ArcFace vs LEAP-AV), LDAM, and LEAP's closest
#: relatives: ElasticFace (the same random margin for every class, mean = the baseline's
#: margin) and GCL (noise by class count; the paper's first stage, no margin). Each is the
#: package's method (leap_plugin.face.methods) on STOCK.
METHODS = ["CosFace", "LEAP-CV", "ArcFace", "LEAP-AV", "LDAM", "ElasticFace-Cos", "ElasticFace-Arc", "GCL"]


def method_keys(method: str) -> dict:
    """The config keys of ``method`` on :data:`STOCK`."""
    from leap_plugin.face.methods import face_method_config

    return face_method_config(method, STOCK)


def baseline_of(method: str):
    from leap_plugin.face.methods import FACE_METHODS

    return FACE_METHODS[method].baseline
METRICS = ("accuracy", "tpr@fpr=0.001", "tpr@fpr=0.0001", "rank1")


def prepare(data: str, units: str = WESNOTH_UNITS, seed: int = 0) -> dict:
    """Write (once) the training identity folders, the verification ``.bin`` and the rank-1
    probe / distractor lists under ``data``; returns the description in ``data/split.json``."""
    from leap_plugin.face.verification import write_bin
    from PIL import Image

    done = os.path.join(data, "split.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    samples = scan_wesnoth(units)
    train_ids, test_ids = split_identities([s[1] for s in samples], 0.5, seed)
    train_ids, rng = set(train_ids), np.random.default_rng(seed)
    images = {}
    for path, identity, _ in samples:
        out = os.path.join(data, "images", identity.replace("/", "__"), os.path.basename(path))
        if not os.path.isfile(out):
            composite_rgba(path, out)
        images.setdefault(identity, []).append(out)
    for identity in sorted(train_ids):
        folder = os.path.join(data, "train", identity.replace("/", "__"))
        os.makedirs(folder, exist_ok=True)
        for path in images[identity]:
            target = os.path.join(folder, os.path.basename(path))
            if not os.path.exists(target):
                os.symlink(path, target)
    test = sorted(test_ids)
    multi = [i for i in test if len(images[i]) >= 2]
    pairs, issame = [], []
    for _ in range(PAIRS):
        identity = multi[rng.integers(len(multi))]
        a, b = rng.choice(len(images[identity]), 2, replace=False)
        pairs += [images[identity][a], images[identity][b]]
        issame.append(True)
        i, j = rng.choice(len(test), 2, replace=False)
        pairs += [images[test[i]][rng.integers(len(images[test[i]]))],
                  images[test[j]][rng.integers(len(images[test[j]]))]]
        issame.append(False)
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in pairs]
    write_bin(os.path.join(data, "sprites_pairs.bin"), arrays, issame)
    probe_ids = [test[i] for i in rng.permutation(len(test))[: len(test) // 2]]
    split = {
        "train_ids": len(train_ids), "test_ids": len(test), "pairs": len(issame),
        "probes": [(images[i][k], i) for i in sorted(probe_ids) for k in range(len(images[i]))],
        "distractors": [p for i in test if i not in set(probe_ids) for p in images[i]],
    }
    atomic_write(done, lambda f: f.write(json.dumps(split).encode()))
    return split


def _embed(model, paths):
    from leap_plugin.face.data import load_rgb
    from leap_plugin.face.verification import embed_images

    return embed_images(model, np.stack([load_rgb(p, p, INPUT_SIZE) for p in paths]), batch_size=128)


def evaluate(run_dir: str, data: str, split: dict) -> dict:
    """Verification and rank-1 of the run's ``model.pt``."""
    from leap_plugin.face.backbones import build_backbone, load_backbone_weights
    from leap_plugin.face.verification import evaluate_bin, megaface_rank1

    model = build_backbone(COMMON["network"], COMMON["embedding_size"], input_size=INPUT_SIZE)
    load_backbone_weights(model, os.path.join(run_dir, "model.pt"), COMMON["network"])
    result = evaluate_bin(model, os.path.join(data, "sprites_pairs.bin"), 128, image_size=INPUT_SIZE)
    probes = _embed(model, [p for p, _ in split["probes"]])
    distractors = _embed(model, split["distractors"])
    result["rank1"] = megaface_rank1(probes, np.array([i for _, i in split["probes"]]), distractors)
    return {k: float(result[k]) for k in METRICS}


def run_one(method: str, seed: int, out: str, data: str, split: dict, threads: int | None) -> dict:
    commit = code_commit()
    run_dir = os.path.join(out, "face_runs", commit[:12], method, f"seed{seed}")
    done = os.path.join(run_dir, "results.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    keys = method_keys(method)
    config = {**STOCK, **keys, "seed": seed, "rec": os.path.join(data, "train"), "output": run_dir,
              "val_targets": []}
    os.makedirs(run_dir, exist_ok=True)
    config_path = os.path.join(run_dir, "config.py")
    with open(config_path, "w") as f:
        f.write(f"config = {config!r}\n")
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS=str(threads or os.cpu_count()))
    start = time.time()
    if not os.path.isfile(os.path.join(run_dir, "model.pt")) or not os.path.isfile(
            os.path.join(run_dir, "checkpoint_rank0.pt")):
        print(f"[{method} s{seed}] training", flush=True)
        with open(os.path.join(run_dir, "train.log"), "w") as log:
            proc = subprocess.run([sys.executable, "-m", "leap_plugin.cli.face_train", config_path, "--overwrite"],
                                  stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        if proc.returncode:
            raise RuntimeError(f"[{method} s{seed}] leap-face-train failed; see {run_dir}/train.log")
    row = {"method": method, "seed": seed, "seconds": round(time.time() - start, 1),
           **evaluate(run_dir, data, split), "machine": machine_info(threads), "commit": commit,
           "leap": keys["leap"] if keys["leap"].get("enabled") else None, "config": {k: v for k, v in config.items() if k not in ("rec", "output")}}
    atomic_write(done, lambda f: f.write(json.dumps(row, indent=1).encode()))
    print(f"[{method} s{seed}] " + " ".join(f"{k} {row[k]:.4f}" for k in METRICS), flush=True)
    return row


def campaign_of(row: dict) -> str:
    return f"{machine_id(row['machine'])} @ {row['commit'][:12]}"


def _mean_std(values: list[float], scale: float = 100.0, signed: bool = False) -> str:
    sign = "+" if signed else ""
    if len(values) == 1:
        return f"{values[0] * scale:{sign}.2f}"
    return f"{statistics.mean(values) * scale:{sign}.2f} ± {statistics.stdev(values) * scale:.2f}"


def write_table(rows: list[dict], out: str, split: dict) -> str:
    campaign = campaign_of(rows[-1])
    rows_here = [r for r in rows if campaign_of(r) == campaign]
    by = {}
    for r in rows_here:
        by.setdefault(r["method"], {})[r["seed"]] = r
    lines = [f"Machine and commit of every run below: {campaign}  ",
             f"Data: Wesnoth unit sprites as face identities; {split['train_ids']} training identities cut to "
             f"<H{LONG_TAIL['head']}, T{LONG_TAIL['tail_classes']}> ({LONG_TAIL['tail_samples']} images per tail "
             f"identity), {split['test_ids']} held-out identities: {split['pairs']} verification pairs (half "
             f"genuine), rank-1 of {len(split['probes'])} probe images against {len(split['distractors'])} "
             "distractors.  ",
             f"Network: MobileFaceNet (mbf) at {INPUT_SIZE}x{INPUT_SIZE}, 128-d, s = {COMMON['scale']:g}, SGD "
             f"lr {COMMON['lr']}, {COMMON['num_epoch']} epochs, batch {COMMON['batch_size']}; LEAP from epoch "
             f"{LEAP['start_epoch']}, T = {LEAP['tail_threshold']}.", "",
             "Percent, mean ± std over seeds; paired Δ = the run minus its baseline's run of the same seed "
             "(same machine and commit), mean ± std, with how many seeds are positive.", "",
             "| method | seeds | verification accuracy | TPR@FPR=1e-3 | TPR@FPR=1e-4 | rank-1 (distractors) "
             "| paired Δ accuracy | paired Δ TPR@1e-3 | paired Δ rank-1 |", "|---|---|---|---|---|---|---|---|---|"]
    for method in METHODS:
        base = baseline_of(method)
        runs = by.get(method, {})
        if not runs:
            continue
        cells = [_mean_std([r[m] for r in runs.values()]) for m in METRICS]
        deltas = []
        for metric in ("accuracy", "tpr@fpr=0.001", "rank1"):
            pairs = [runs[s][metric] - by[base][s][metric] for s in sorted(runs) if base and s in by.get(base, {})]
            deltas.append(f"{_mean_std(pairs, signed=True)} ({sum(d > 0 for d in pairs)}/{len(pairs)})"
                          if pairs else "—")
        lines.append(f"| {method} | {len(runs)} | " + " | ".join(cells + deltas) + " |")
    lines += ["", "Reproduce: `python benchmarks/face.py --seeds " + " ".join(
        str(s) for s in sorted({r['seed'] for r in rows_here})) + "`"]
    text = "\n".join(lines) + "\n"
    atomic_write(os.path.join(out, "face.md"), lambda f: f.write(text.encode()))
    atomic_write(os.path.join(out, "face.json"), lambda f: f.write(json.dumps(rows, indent=1).encode()))
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (each with one thread when > 1)")
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    parser.add_argument("--data", default=os.path.expanduser("~/.cache/leap_plugin/face_sprites"))
    parser.add_argument("--units", default=WESNOTH_UNITS, help="Wesnoth's units folder")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.units):
        parser.error(f"--units {args.units!r} does not exist: install Debian's wesnoth-1.16-data")
    split = prepare(args.data, args.units)
    threads = 1 if args.jobs > 1 else None
    path = os.path.join(args.output, "face.json")
    rows = json.load(open(path)) if os.path.isfile(path) else []
    lock = threading.Lock()

    def job(item):
        method, seed = item
        row = run_one(method, seed, args.output, args.data, split, threads)
        with lock:
            key = (method, seed, campaign_of(row))
            rows[:] = [r for r in rows if (r["method"], r["seed"], campaign_of(r)) != key] + [row]
            write_table(rows, args.output, split)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(job, [(m, s) for s in args.seeds for m in args.methods]))
    print(write_table(rows, args.output, split))
    return 0


if __name__ == "__main__":
    sys.exit(main())
