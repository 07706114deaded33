"""Comparisons of methods on one stock config: the machinery of ``leap-compare``, the demo
and the benchmarks.

A comparison is every (method, seed) run of a stock config (:mod:`leap_plugin.reid.methods`
or, for ``leap-face-train`` configs, :mod:`leap_plugin.face.methods`). :func:`execute` trains
them, ``jobs`` at a time: a finished run (its ``results.json``) is reused, an interrupted one
resumes from its last checkpoint, a failed one is reported with its log and the others go
on. :func:`write_outputs` writes ``compare.json`` (every run with its machine, commit and
resolved overrides), ``compare.md`` (mean ± std per method, paired differences seed by seed)
and ``report.html`` (the same with plots, one file readable offline). Each run's folder holds
its TensorBoard events, so the output folder is a TensorBoard logdir of all runs.
"""
from __future__ import annotations

import base64
import json
import os
import runpy
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from .io import atomic_write
from .runs import METRICS, ROOT, code_commit, machine_id, machine_info, train_run

__all__ = ["Job", "ReidTask", "FaceTask", "execute", "write_outputs", "paired", "mean_std", "slug"]


def slug(method: str) -> str:
    """A folder name for a method."""
    return method.replace(" ", "_").replace("/", "_").replace("+", "plus")


@dataclass
class Job:
    """One run: ``method`` with ``seed`` in ``run_dir``; after :func:`execute`, ``result``
    (its results.json) or ``error`` (one line, with the log to read)."""

    method: str
    seed: int
    run_dir: str
    scope: str = ""  # what else tells runs apart, e.g. the data set and setting of a benchmark
    result: Optional[dict] = None
    error: Optional[str] = None
    log: str = ""

    @property
    def label(self) -> str:
        return f"{self.scope} {self.method} s{self.seed}".strip()


# ---------------------------------------------------------------------------- fastreid
class ReidTask:
    """Runs of fastreid's trainer (``leap-train``) on a stock config plus each method's
    overrides, the user's ``overrides`` (applied to every run, after the method's) and SEED.

    Raises:
        ConfigError: the stock config does not load (naming the file, key or value).
    """

    kind = "reid"
    metrics = METRICS

    def __init__(self, config: str, overrides: Sequence[str] = (), num_gpus: int = 1):
        from .reid.config import load_config

        self.config = config
        self.overrides = list(overrides)
        self.num_gpus = num_gpus
        self.stock = load_config(config, self.overrides)

    def resolve(self, method: str) -> str:
        """The table's name of ``method``; ``ValueError`` (one line) when it is unknown or
        cannot apply to the stock config."""
        from .reid.methods import check_applicable, resolve_method

        try:
            name = resolve_method(method).name
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        check_applicable(name, self.stock, self.config)
        return name

    def describe(self, method: str) -> str:
        from .reid.methods import describe

        return describe(method, self.stock)

    def baseline_of(self, method: str) -> Optional[str]:
        from .reid.methods import METHODS

        return METHODS[method].baseline

    def method_overrides(self, method: str) -> list[str]:
        from .reid.methods import method_overrides

        return method_overrides(method, self.stock) + self.overrides

    def run(self, job: Job, threads: Optional[int] = None) -> dict:
        job.log = os.path.join(job.run_dir, "train.log")
        args = ["--num-gpus", str(self.num_gpus)] if self.num_gpus != 1 else []
        return train_run(job.label, self.config, job.run_dir, self.method_overrides(job.method) + ["SEED", str(job.seed)],
                         threads, extra_args=args)

    @staticmethod
    def curves(job: Job) -> str:
        return os.path.join(job.run_dir, "metrics.json")


# ---------------------------------------------------------------------------- face
class FaceTask:
    """Runs of ``leap-face-train`` on a stock arcface_torch-style config plus each method's
    keys, the user's ``key=value`` overrides and ``seed``; the metrics are the final
    verification of the config's ``val_targets``.

    Raises:
        ConfigError: the stock config does not load, or has no ``val_targets``.
    """

    kind = "face"

    def __init__(self, config: str, overrides: Sequence[str] = ()):
        from .face.config import load_config
        from .resources import find_config
        from .validation import ConfigError

        self.config = find_config(config)
        self.overrides = list(overrides)
        load_config(self.config, self.overrides)  # fails here, naming the key, on a bad stock config
        namespace = runpy.run_path(self.config)
        stock = namespace["config"]
        self.stock = dict(stock) if isinstance(stock, dict) else dict(vars(stock))
        if not load_config(self.config, self.overrides).val_targets:
            raise ConfigError(f"{self.config}: leap-compare --face compares verification results, but the config "
                              "has no val_targets: add at least one .bin")
        self.metrics: tuple[str, ...] = ()

    def resolve(self, method: str) -> str:
        from .face.methods import resolve_face_method

        try:
            return resolve_face_method(method).name
        except KeyError as e:
            raise ValueError(e.args[0]) from None

    def describe(self, method: str) -> str:
        from .face.methods import FACE_METHODS, face_method_config

        keys = face_method_config(method, self.stock)
        shown = ", ".join(f"{k}={v!r}" for k, v in keys.items() if self.stock.get(k) != v and v is not None)
        return f"{method}: {FACE_METHODS[method].summary}; " + (shown or "the config as it is")

    def baseline_of(self, method: str) -> Optional[str]:
        from .face.methods import FACE_METHODS

        return FACE_METHODS[method].baseline

    def method_overrides(self, method: str) -> list[str]:
        from .face.methods import face_method_config

        return [f"{k}={v!r}" for k, v in face_method_config(method, self.stock).items()] + self.overrides

    def run(self, job: Job, threads: Optional[int] = None) -> dict:
        done = os.path.join(job.run_dir, "results.json")
        if os.path.isfile(done):
            with open(done) as f:
                return json.load(f)
        os.makedirs(job.run_dir, exist_ok=True)
        job.log = os.path.join(job.run_dir, "train.log")
        opts = self.method_overrides(job.method) + [f"seed={job.seed}", f"output={job.run_dir!r}"]
        resume = ["--resume"] if os.path.isfile(os.path.join(job.run_dir, "checkpoint_rank0.pt")) else ["--overwrite"]
        cmd = [sys.executable, "-m", "leap_plugin.cli.face_train", self.config, *resume, *opts]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        start = time.time()
        print(f"[{job.label}] {' '.join(cmd[1:])}", flush=True)
        with open(job.log, "w") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        if proc.returncode:
            raise RuntimeError(f"[{job.label}] leap-face-train failed (exit {proc.returncode}); see {job.log}")
        final = _last_verification(os.path.join(job.run_dir, "metrics.jsonl"))
        result = {"label": job.label, "config": self.config, "overrides": opts, "seconds": round(time.time() - start, 1),
                  **final, "machine": machine_info(threads), "commit": code_commit()}
        atomic_write(done, lambda f: f.write(json.dumps(result, indent=1).encode()))
        return result

    @staticmethod
    def curves(job: Job) -> str:
        return os.path.join(job.run_dir, "metrics.jsonl")


def _last_verification(path: str) -> dict:
    """The last verification of a ``leap-face-train`` run (``val/<set>/<metric>`` keys), in percent."""
    final = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            values = {k[len("val/"):]: v for k, v in record.items() if k.startswith("val/")}
            if values:
                final = values
    if not final:
        raise RuntimeError(f"{path}: the run wrote no verification results")
    return {k: (100.0 * v if v is not None else None) for k, v in final.items()}


# ---------------------------------------------------------------------------- execution
@dataclass
class _Progress:
    total: int
    done: int = 0
    failed: int = 0
    minutes: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def execute(jobs: Sequence[Job], run: Callable[[Job], dict], parallel: int = 1,
            on_done: Optional[Callable[[Job], None]] = None, metric: str = "mAP") -> list[Job]:
    """Run ``run(job)`` for every job, ``parallel`` at a time. A job that raises is marked
    failed (``job.error``) and the others go on. Prints one line as each run starts (with an
    estimate of when it ends, from the runs so far) and a summary line as each ends.
    ``on_done(job)`` is called (under a lock) after each. Returns ``jobs``."""
    progress = _Progress(len(jobs))

    def one(job: Job) -> None:
        with progress.lock:
            eta = (f", about {statistics.mean(progress.minutes):.0f} min" if progress.minutes else "")
        print(f"[{job.label}] started{eta}: {job.run_dir}", flush=True)
        try:
            job.result = run(job)
        except Exception as e:  # noqa: BLE001 - any failure of one run is reported, the others go on
            job.error = str(e).splitlines()[0] if str(e) else type(e).__name__
        with progress.lock:
            progress.done += 1
            if job.error:
                progress.failed += 1
                status = f"FAILED: {job.error}" + (f" (log: {job.log})" if job.log and job.log not in job.error else "")
            else:
                trained = job.result.get("seconds")
                if trained:
                    progress.minutes.append(trained / 60)
                value = job.result.get(metric)
                status = (f"{metric} {value:.2f}" if isinstance(value, (int, float)) else "done") + \
                    (f" in {trained / 60:.1f} min" if trained else " (finished before)")
            left = progress.total - progress.done
            eta = (f", about {statistics.mean(progress.minutes) * left / parallel:.0f} min left"
                   if progress.minutes and left else "")
            print(f"[{progress.done}/{progress.total} done, {progress.failed} failed{eta}] {job.label}: {status}",
                  flush=True)
            if on_done is not None:
                on_done(job)

    with ThreadPoolExecutor(max(1, parallel)) as pool:
        list(pool.map(one, jobs))
    return list(jobs)


# ---------------------------------------------------------------------------- outputs
def paired(runs: dict[int, dict], base: dict[int, dict], metric: str) -> list[float]:
    """``metric`` of each seed's run minus the same seed's run of ``base``, over the seeds both have."""
    return [runs[s][metric] - base[s][metric] for s in sorted(runs) if s in base
            and isinstance(runs[s].get(metric), (int, float)) and isinstance(base[s].get(metric), (int, float))]


def mean_std(values: Sequence, digits: int = 2, signed: bool = False) -> str:
    """``mean ± std`` of the numbers among ``values`` (the one value alone; ``n/a`` for none)."""
    values = [v for v in values if isinstance(v, (int, float))]
    sign = "+" if signed else ""
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:{sign}.{digits}f}"
    return f"{statistics.mean(values):{sign}.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _pair_cell(values: list[float]) -> str:
    return f"{mean_std(values, signed=True)} ({sum(v > 0 for v in values)}/{len(values)})" if values else "n/a"


def _by_method(jobs: Sequence[Job]) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for job in jobs:
        if job.result is not None:
            out.setdefault(job.method, {})[job.seed] = job.result
    return out


def markdown(task, jobs: Sequence[Job], methods: Sequence[str], baseline: str, command: str,
             metrics: Sequence[str], notes: Sequence[str]) -> str:
    """``compare.md``: the per-method table, paired differences against ``baseline`` seed by
    seed, LEAP against each other method on the same seeds, the failed runs and the notes."""
    by = _by_method(jobs)
    first = next((j.result for j in jobs if j.result), None)
    machine = machine_id(first["machine"]) if first and first.get("machine") else machine_id(machine_info())
    commits = sorted({j.result.get("commit", "unknown")[:12] for j in jobs if j.result})
    main, second = metrics[0], metrics[1] if len(metrics) > 1 else metrics[0]
    lines = [f"# Comparison on {task.config}", "", f"Command: `{command}`  ", f"Machine: {machine}  ",
             f"Commit: {', '.join(commits) or 'n/a'}  ",
             "Every run is the stock config plus the method's overrides; runs of one seed differ only by the "
             "method (the same data, initialisation seed and batch order). Mean ± std over seeds.", "",
             "## What each method changes", ""] + [f"- {n}" for n in notes]
    lines += ["", "## Results", "", "| method | seeds | " + " | ".join(metrics) + " | minutes per run |",
              "|---" * (len(metrics) + 3) + "|"]
    for method in methods:
        runs = by.get(method, {})
        if not runs:
            lines.append(f"| {method} | 0 | " + " | ".join("n/a" for _ in metrics) + " | n/a |")
            continue
        lines.append(f"| {method} | {len(runs)} | " + " | ".join(mean_std([r.get(m) for r in runs.values()])
                                                              for m in metrics)
                     + f" | {mean_std([r['seconds'] / 60 for r in runs.values() if r.get('seconds')])} |")
    lines += ["", f"## Paired against {baseline}, seed by seed", "",
              f"Each method's run minus {baseline}'s run of the same seed; mean ± std over the seeds both "
              "finished, and how many of them are positive.", "",
              f"| method | Δ {main} | Δ {second} | per seed (Δ {main}) |", "|---|---|---|---|"]
    base = by.get(baseline, {})
    for method in methods:
        if method == baseline:
            continue
        d_main, d_second = paired(by.get(method, {}), base, main), paired(by.get(method, {}), base, second)
        seeds = ", ".join(f"s{s} {by[method][s][main] - base[s][main]:+.2f}" for s in sorted(by.get(method, {}))
                          if s in base and isinstance(by[method][s].get(main), (int, float)))
        lines.append(f"| {method} | {_pair_cell(d_main)} | {_pair_cell(d_second)} | {seeds or 'n/a'} |")
    leap = [m for m in methods if m.startswith("LEAP")]
    others = [m for m in methods if not m.startswith("LEAP")]
    if leap and others:
        lines += ["", "## LEAP against each other method on the same seeds", "",
                  f"Δ {main} = the LEAP run minus the other method's run of the same seed.", "",
                  "| LEAP method | " + " | ".join(f"− {o}" for o in others) + " |", "|---" * (len(others) + 1) + "|"]
        for m in leap:
            lines.append(f"| {m} | " + " | ".join(_pair_cell(paired(by.get(m, {}), by.get(o, {}), main))
                                                  for o in others) + " |")
    failed = [j for j in jobs if j.error]
    if failed:
        lines += ["", "## Failed runs", ""] + [f"- {j.label}: {j.error}" for j in failed]
    return "\n".join(lines) + "\n"


def _png(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def plot_paired(jobs: Sequence[Job], methods: Sequence[str], metrics: Sequence[str], path: str) -> str:
    """One panel per metric: the methods along x, one line per seed joining its runs."""
    from matplotlib.figure import Figure

    by = _by_method(jobs)
    seeds = sorted({j.seed for j in jobs})
    fig = Figure(figsize=(max(5.0, 1.3 * len(methods)) * len(metrics), 4.2))
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for seed in seeds:
            xs = [k for k, m in enumerate(methods) if seed in by.get(m, {})
                  and isinstance(by[m][seed].get(metric), (int, float))]
            ax.plot(xs, [by[methods[k]][seed][metric] for k in xs], marker="o", label=f"seed {seed}")
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{metric}, seed by seed")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def write_outputs(task, jobs: Sequence[Job], methods: Sequence[str], baseline: str, output: str, command: str,
                  notes: Sequence[str]) -> str:
    """``compare.json``, ``compare.md`` and ``report.html`` (with ``paired.png`` and
    ``training_curves.png``) in ``output``. Returns the Markdown."""
    from .analysis.plots import plot_training_curves
    from .analysis.report import markdown_to_html

    done = [j for j in jobs if j.result]
    metrics = list(task.metrics) or sorted({k for j in done for k in j.result
                                            if "/" in k and isinstance(j.result[k], (int, float))})
    record = {"kind": task.kind, "config": task.config, "overrides": task.overrides, "command": command,
              "baseline": baseline, "methods": list(methods), "notes": list(notes),
              "runs": [{"method": j.method, "seed": j.seed, "run_dir": j.run_dir, "error": j.error,
                        "method_overrides": task.method_overrides(j.method), **(j.result or {})} for j in jobs]}
    atomic_write(os.path.join(output, "compare.json"), lambda f: f.write(json.dumps(record, indent=1).encode()))
    text = markdown(task, jobs, methods, baseline, command, metrics or ["n/a"], notes)
    atomic_write(os.path.join(output, "compare.md"), lambda f: f.write(text.encode()))
    figures = []
    if done and metrics:
        figures.append(("Paired results (each line one seed)",
                        plot_paired(jobs, methods, metrics[:2], os.path.join(output, "paired.png"))))
    first_seed = {}
    for j in done:
        if os.path.isfile(task.curves(j)) and (j.method not in first_seed or j.seed < first_seed[j.method].seed):
            first_seed[j.method] = j
    if first_seed and task.kind == "reid":
        try:
            figures.append(("Training curves of each method's first seed (loss, accuracy, and what LEAP measured: "
                            "head / tail angular variance, clouded classes, cloud width)",
                            plot_training_curves({m: task.curves(j) for m, j in first_seed.items()},
                                                 os.path.join(output, "training_curves.png"))))
        except ValueError:
            pass
    body = markdown_to_html(text)
    images = "".join(f"<h2>{title}</h2><img src='{_png(path)}' alt='{title}' style='max-width:100%'>"
                     for title, path in figures)
    atomic_write(os.path.join(output, "report.html"),
                 lambda f: f.write(body.replace("</body>", images + "</body>").encode()))
    return text
