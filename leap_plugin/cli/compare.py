"""``leap-compare``: a stock baseline against LEAP and its peers on your own data, seed by seed.

    leap-compare --config-file MY_STOCK.yml --methods CosFace LEAP-CF "LEAP-CF uniform" ldam \\
        --seeds 0 1 2 --output outputs/compare [--jobs 2] [--num-gpus 1] [KEY VALUE ...]
    leap-compare --face MY_FACE_CONFIG.py --methods CosFace LEAP-CV GCL --seeds 0 1 --output outputs/face

Each method is your config plus the method's overrides (``leap_plugin.reid.methods``; for
``--face``, ``leap_plugin.face.methods``); the trailing ``KEY VALUE`` overrides (``key=value``
for ``--face``) apply to every run. Writes ``compare.json``, ``compare.md`` and
``report.html`` into ``--output``, which is also a TensorBoard logdir of all runs. Run it
again to resume: finished runs are reused, interrupted ones resume from their last
checkpoint. Exit status: 0 when every run finished, 1 when some failed (they are listed
with their logs), 2 on a usage or config error.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Optional, Sequence

from ..compare import FaceTask, Job, ReidTask, execute, slug, write_outputs
from ..io import FolderInUse, lock_folder
from ..validation import ConfigError

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="leap-compare", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config-file", help="your stock fastreid config (YAML)")
    source.add_argument("--face", metavar="CONFIG", help="your stock leap-face-train config (Python)")
    parser.add_argument("--methods", nargs="+", required=True, help="methods to compare (the first is the baseline "
                        "unless --baseline says otherwise)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--output", required=True, help="folder of the comparison (created; resumable)")
    parser.add_argument("--baseline", help="the method every other is paired with (default: the first)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each with one thread when > 1)")
    parser.add_argument("--num-gpus", type=int, default=1, help="GPUs per fastreid run")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="overrides for every run, after the flags")
    args = parser.parse_args(argv)
    if any(o.startswith("--") for o in args.opts):
        flag = next(o for o in args.opts if o.startswith("--"))
        parser.error(f"{flag!r} comes after the overrides: flags go before the KEY VALUE overrides")
    if args.jobs < 1 or args.num_gpus < 1 or any(s < 0 for s in args.seeds):
        parser.error("--jobs and --num-gpus must be >= 1 and seeds >= 0")

    import leap_plugin  # noqa: F401  (fastreid's registries, before the config is read)

    try:
        task = FaceTask(args.face, args.opts) if args.face else ReidTask(args.config_file, args.opts, args.num_gpus)
        methods = list(dict.fromkeys(task.resolve(m) for m in args.methods))
        baseline = task.resolve(args.baseline) if args.baseline else methods[0]
    except (ConfigError, ValueError, FileNotFoundError) as e:
        parser.error(str(e).splitlines()[0])
    if baseline not in methods:
        parser.error(f"--baseline {baseline!r} is not among --methods")
    output = os.path.abspath(args.output)
    if os.path.exists(output) and not os.path.isdir(output):
        parser.error(f"--output {output!r} is a file, not a folder")
    try:
        os.makedirs(output, exist_ok=True)
        lock_folder(output, "comparison")
    except FolderInUse as e:
        parser.error(str(e))
    except OSError as e:
        parser.error(f"--output {output!r}: {e.strerror}")

    notes = [task.describe(m) for m in methods]
    print("\n".join(["leap-compare: what each method changes in your config:"] + [f"  {n}" for n in notes]),
          flush=True)
    jobs = [Job(m, seed, os.path.join(output, slug(m), f"seed{seed}")) for seed in args.seeds for m in methods]
    command = " ".join(["leap-compare", *map(shlex.quote, argv if argv is not None else sys.argv[1:])])
    threads = 1 if args.jobs > 1 else None

    def progress(job: Job) -> None:  # the tables follow the comparison run by run
        write_outputs(task, jobs, methods, baseline, output, command, notes)

    metric = task.metrics[0] if task.metrics else ""
    execute(jobs, lambda job: task.run(job, threads), args.jobs, on_done=progress, metric=metric)
    print(write_outputs(task, jobs, methods, baseline, output, command, notes), flush=True)
    failed = [j for j in jobs if j.error]
    print(f"leap-compare: {len(jobs) - len(failed)} of {len(jobs)} runs finished; "
          f"{os.path.join(output, 'report.html')}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
