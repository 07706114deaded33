"""Training runs for the demo and the benchmarks: ``leap-train`` in a subprocess, its
results, and the record of where and on what code each run ran.

A run's ``results.json`` holds its retrieval metrics plus ``machine`` (CPU model, cores,
torch version, threads), ``commit`` (of the code that trained it) and ``leap`` (the resolved
``MODEL.HEADS.LEAP`` keys, None for a run without LEAP), so that paired comparisons can
pair runs of one machine and one commit only.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from typing import Optional, Sequence

from .io import atomic_write
from .resources import CONFIGS

__all__ = ["ROOT", "SPRITE_CONFIGS", "SETTINGS", "METRICS", "machine_info", "machine_id", "code_commit",
           "eval_results", "train_run"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The sprite demo / benchmark configs (``configs/Wesnoth``).
SPRITE_CONFIGS = os.path.join(CONFIGS, "Wesnoth")

#: The sprite data settings: the natural distribution and the paper's <H20, S_k> splits.
SETTINGS = {
    "natural": [],
    **{f"H20_S{k}": ["DATASETS.LONG_TAIL.ENABLED", "True", "DATASETS.LONG_TAIL.HEAD", "20",
                     "DATASETS.LONG_TAIL.TAIL_SAMPLES", str(k)] for k in (5, 4, 3)},
}
METRICS = ("mAP", "Rank-1", "Rank-5", "Rank-10")
# Lines of the training log shown while it runs: progress, LEAP state, results, errors.
SHOWN = ("epoch/iter", "LEAP leap/", "Evaluation results", "| Dataset", "| Wesnoth", "Error", "Traceback")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: Optional[int] = None) -> dict:
    """What a run's numbers depend on besides the code: CPU model, cores, the GPU if any,
    Python and torch versions, and the threads the training used."""
    import torch

    return {
        "cpu": _cpu_model(), "arch": platform.machine(), "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(), "torch": torch.__version__,
        "threads": int(threads or os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1),
    }


def machine_id(info: dict) -> str:
    """One line naming a machine as :func:`machine_info` describes it."""
    device = info.get("gpu") or "no GPU"
    return (f"{info['cpu']} ({info['arch']}, {info['cores']} cores, {device}), Python {info['python']}, "
            f"torch {info['torch']}, {info['threads']} thread(s) per run")


def code_commit(root: str = ROOT) -> str:
    """The git commit of ``root`` (``+dirty`` when its package or configs differ from it),
    or ``"unknown"`` outside a git checkout."""
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "leap_plugin", "configs"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def eval_results(output_dir: str) -> dict:
    """The final evaluation ``leap-train`` wrote to ``eval_results.json``."""
    with open(os.path.join(output_dir, "eval_results.json")) as f:
        results = json.load(f)
    return {k: results[k] for k in METRICS}


def _leap_train(label: str, output_dir: str, args: Sequence[str], log_name: str,
                threads: Optional[int] = None) -> None:
    cmd = [sys.executable, "-m", "leap_plugin.cli.train", *args]
    print(f"[{label}] {' '.join(cmd[1:])}", flush=True)
    # The training process imports the leap_plugin of ROOT, whatever else is installed.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(os.path.join(output_dir, log_name), "w") as log, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env) as proc:
        for line in proc.stdout:
            log.write(line)
            if any(s in line for s in SHOWN):
                print(f"[{label}] {line.rstrip()[-160:]}", flush=True)
    if proc.returncode:
        raise RuntimeError(f"[{label}] leap-train failed (exit {proc.returncode}); see {output_dir}/{log_name}")


def _leap_keys(config: str, overrides: Sequence[str]) -> Optional[dict]:
    from .reid.config import load_config

    cfg = load_config(config, list(overrides))
    leap = cfg.MODEL.HEADS.LEAP
    return {key: leap[key] for key in sorted(leap)} if leap.ENABLED else None


def train_run(label: str, config: str, output_dir: str, overrides: Sequence[str],
              threads: Optional[int] = None, extra_args: Sequence[str] = ()) -> dict:
    """Train with ``leap-train`` unless ``output_dir`` holds a finished run; return its results.

    A run whose final checkpoint exists but whose evaluation is missing is evaluated
    (``--eval-only``), not trained again. ``threads`` sets the training process's
    ``OMP_NUM_THREADS`` (default: inherited); ``extra_args`` go to ``leap-train`` before the
    overrides (e.g. ``--num-gpus 2``). The results record the machine, the commit
    and the LEAP keys (see the module docstring).
    """
    done = os.path.join(output_dir, "results.json")
    if os.path.isfile(done):
        print(f"[{label}] finished before: {done}", flush=True)
        with open(done) as f:
            return json.load(f)
    os.makedirs(output_dir, exist_ok=True)
    base = [*extra_args, "--config-file", config, "OUTPUT_DIR", output_dir, *overrides]
    final = os.path.join(output_dir, "model_final.pth")
    start = time.time()
    seconds = None  # timed only when this call trains
    if not os.path.isfile(final):  # --resume: an interrupted run continues from its last checkpoint
        _leap_train(label, output_dir, ["--resume", *base], "train.log", threads)
        seconds = round(time.time() - start, 1)
    elif not os.path.isfile(os.path.join(output_dir, "eval_results.json")):
        _leap_train(label, output_dir, ["--eval-only", *base, "MODEL.WEIGHTS", final], "eval.log", threads)
    result = {"label": label, "config": os.path.relpath(config, CONFIGS), "overrides": list(overrides),
              "seconds": seconds, **eval_results(output_dir), "machine": machine_info(threads),
              "commit": code_commit(), "leap": _leap_keys(config, overrides)}
    atomic_write(done, lambda f: f.write(json.dumps(result, indent=1).encode()))
    return result
