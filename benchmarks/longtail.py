#!/usr/bin/env python
"""Long-tail benchmark on real data: every data set x method x setting x seed.

    python benchmarks/longtail.py                       # everything (hours on 2 CPU cores)
    python benchmarks/longtail.py --settings H20_S4 --methods CosFace LEAP-CF --seeds 0 1 2
    python benchmarks/longtail.py --datasets widelands --settings H20_S4 --methods CosFace LEAP-CF

Data sets: ``wesnoth`` (Wesnoth's unit sprites) and ``widelands`` (Widelands' characters),
both from Debian packages (``make data``). Each run trains with ``leap-train`` (fastreid's
trainer) from the sprite configs ``configs/Wesnoth/``, unchanged but for the data set keys,
plus the method's and the setting's overrides, then ``leap-analyze`` measures the tail/head
angular-variance ratio of its training features in eval mode. A finished run (its
``results.json``) is never run again, so the script resumes where it stopped. Writes
``benchmarks/results/longtail.{json,md}``: mean +- std over seeds of mAP, Rank-1 and the
tail/head variance ratio, per data set, with the machine it ran on (``longtail.md``: the
latest campaign; ``longtail_<cpu>_<commit>.md``: each campaign, one machine and commit, on
its own). Every run records its ``dataset``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from leap_plugin.compare import Job, execute, mean_std  # noqa: E402
from leap_plugin.core import DEFAULTS  # noqa: E402
from leap_plugin.io import atomic_write  # noqa: E402
from leap_plugin.runs import SETTINGS, SPRITE_CONFIGS, code_commit, machine_id, train_run  # noqa: E402

#: The stock config every method is applied to (CosFace, s = 24, m = 0.2).
STOCK = "cosface_mnv2.yml"
# Schedule and backbone ablations. START_EPOCH stays 5 in the longer schedule: the
# angle memory needs the same warm-up whatever the length. ResNet-18 is trained from scratch
# (no ResNet ImageNet weights ship in a PyPI or Debian package, and nothing is downloaded).
PAIRED_ABLATIONS = {
    "32 ep": ["SOLVER.MAX_EPOCH", "32", "TEST.EVAL_PERIOD", "32"],
    "R18 scratch": ["MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.BACKBONE.DEPTH", "18x",
                    "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.LAST_STRIDE", "1",
                    "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.BACKBONE.PRETRAIN_PATH", ""],
}
#: The CLOUD_SCALE sweep; the shipped scale is the method without a suffix.
SWEEP_SCALES = (1.0, 2.0, 3.0, 5.0)

#: The data sets: name -> the KEY VALUE overrides that point the sprite configs at it.
DATASETS = {
    "wesnoth": [],
    "widelands": ["DATASETS.NAMES", '("WidelandsCharacters",)', "DATASETS.TESTS", '("WidelandsCharacters",)'],
}
DATASET_NAMES = {"wesnoth": "Wesnoth unit sprites (wesnoth-1.16-data)",
                 "widelands": "Widelands characters (widelands-data)"}

#: The campaigns, each a set of runs for ``--plan``: the CLOUD_SCALE sweep, the controls
#: and peers on <H20, S4> (5 seeds), the other settings (3 seeds), and LEAP against its
#: closest relatives on both data sets.
MAIN_METHODS = ["CosFace", "ArcFace", "LEAP-CF", "LEAP-AF", "LEAP-CV", "LEAP-AV", "LEAP-CF uniform",
                "LEAP-CF printed", "ldam", "LEAP-CF + LDAM"]
RELATIVES = ["CosFace", "ArcFace", "LEAP-CF", "LEAP-AF", "LEAP-CF uniform", "ElasticFace-Cos", "ElasticFace-Arc",
             "GCL", "ldam"]
#: LEAP-CF is compared seed by seed with each of these (same data set, setting, machine, commit).
RIVALS = ["LEAP-CF uniform", "ElasticFace-Cos", "GCL", "ldam"]


def _scale_name(family: str, scale: float) -> str:
    return family if scale == DEFAULTS.cloud_scale else f"{family} scale {scale:g}"


#: name -> [(data sets, settings, seeds, methods), ...]
PLANS = {
    "sweep": [(["wesnoth"], ["H20_S4"], [0, 1, 2, 3, 4],
               ["CosFace", "ArcFace"] + [_scale_name(f, s) for f in ("LEAP-CF", "LEAP-AF") for s in SWEEP_SCALES])],
    "s4": [(["wesnoth"], ["H20_S4"], [0, 1, 2, 3, 4], MAIN_METHODS)],
    "grid": [(["wesnoth"], ["natural", "H20_S5", "H20_S3"], [0, 1, 2], MAIN_METHODS)],
    "relatives": [(["wesnoth"], ["H20_S4"], [0, 1, 2, 3, 4], RELATIVES),
                  (["widelands"], ["H20_S4"], [0, 1, 2],
                   RELATIVES + [_scale_name("LEAP-CF", s) for s in SWEEP_SCALES if s != DEFAULTS.cloud_scale])],
}


def methods() -> dict[str, tuple[str, list[str]]]:
    """name -> (config in configs/Wesnoth, KEY VALUE overrides): every method of the package's
    table (:data:`leap_plugin.reid.methods.METHODS`) on the CosFace sprite config, plus this
    benchmark's ablations."""
    from leap_plugin.reid.config import load_config
    from leap_plugin.reid.methods import METHODS, method_overrides

    stock = load_config(os.path.join(SPRITE_CONFIGS, STOCK))
    table = {name: (STOCK, method_overrides(name, stock)) for name in METHODS}
    leap_cf, leap_af = table["LEAP-CF"][1], table["LEAP-AF"][1]
    table.update({
        "LEAP-CF loo": (STOCK, leap_cf + ["MODEL.HEADS.LEAP.STATISTIC", "loo"]),
        "LEAP-AF loo": (STOCK, leap_af + ["MODEL.HEADS.LEAP.STATISTIC", "loo"]),
        "LT sampler": ("longtail_sampler_mnv2.yml", []),
        # ablations of LEAP-CF: when LEAP does not beat the baseline, find out why
        "LEAP-CF alpha/sample": (STOCK, leap_cf + ["MODEL.HEADS.LEAP.ALPHA_MODE", "sample"]),
        "LEAP-CF start 2": (STOCK, leap_cf + ["MODEL.HEADS.LEAP.START_EPOCH", "2"]),
        "LEAP-CF P=3": (STOCK, leap_cf + ["MODEL.HEADS.LEAP.MEMORY_FACTOR", "3"]),
    })
    for family, overrides in (("LEAP-CF", leap_cf), ("LEAP-AF", leap_af)):
        for scale in SWEEP_SCALES:
            if scale != DEFAULTS.cloud_scale:
                table[_scale_name(family, scale)] = (STOCK, overrides + ["MODEL.HEADS.LEAP.CLOUD_SCALE", f"{scale:g}"])
    # ablations that change the baseline as well: a CosFace / LEAP-CF pair each
    for suffix, overrides in PAIRED_ABLATIONS.items():
        table[f"CosFace {suffix}"] = (STOCK, table["CosFace"][1] + list(overrides))
        table[f"LEAP-CF {suffix}"] = (STOCK, leap_cf + list(overrides))
    return table


def run_dir_of(out: str, commit: str, dataset: str, setting: str, method: str, seed: int) -> str:
    """Runs are kept per commit: a finished run is reused only by the code that trained it."""
    name = method.replace(" ", "_").replace("/", "_").replace("+", "plus")
    return os.path.join(out, "runs", commit[:12], dataset, setting, name, f"seed{seed}")


def run_one(dataset: str, setting: str, method: str, seed: int, out: str, threads: int | None = None) -> dict:
    config, overrides = methods()[method]
    run_dir = run_dir_of(out, code_commit(), dataset, setting, method, seed)
    opts = DATASETS[dataset] + SETTINGS[setting] + overrides + ["SEED", str(seed)]
    result = train_run(f"{dataset} {setting} {method} s{seed}", os.path.join(SPRITE_CONFIGS, config), run_dir, opts,
                       threads)
    if "tail_head_var_ratio" not in result:
        from leap_plugin.cli.analyze import analyze
        from leap_plugin.reid.config import load_config

        cfg = load_config(os.path.join(SPRITE_CONFIGS, config), ["OUTPUT_DIR", run_dir, *opts])
        summary = analyze(cfg, os.path.join(run_dir, "model_final.pth"), os.path.join(run_dir, "analysis"),
                          tail_threshold=10, max_classes_tsne=0)["summary"]
        ratios = summary["tail_head_ratio"]
        result.update(tail_head_var_ratio=ratios["center_angle_var"],
                      tail_head_pairwise_ratio=ratios["pairwise_angle_mean"])
        atomic_write(os.path.join(run_dir, "results.json"), lambda f: f.write(json.dumps(result, indent=1).encode()))
    return {"dataset": dataset, "setting": setting, "method": method, "seed": seed, **result}


def baseline_of(method: str) -> str | None:
    """The stock baseline a method is compared with: ArcFace for the angular-margin family
    (LEAP-AF / LEAP-AV and their variants, the adaptive ArcFace margin), the CosFace run of
    the same schedule / backbone for a paired ablation, CosFace otherwise."""
    if method in ("CosFace", "ArcFace"):
        return None
    for suffix in PAIRED_ABLATIONS:
        if method.endswith(f" {suffix}"):
            return None if method.startswith("CosFace") else f"CosFace {suffix}"
    from leap_plugin.reid.methods import METHODS

    family = method.split(" ")[0]  # "LEAP-AF scale 2" and "LEAP-AF loo" are LEAP-AF's
    return METHODS[family].baseline if family in METHODS else "CosFace"


def dataset_of(row: dict) -> str:
    """The data set of a run (runs recorded before there were two are the sprites')."""
    return row.get("dataset", "wesnoth")


def campaign_of(row: dict) -> str:
    """The machine and commit a run ran on: runs are only ever compared within one."""
    if "machine" not in row:
        return "machine and commit not recorded (the earliest runs)"
    return f"{machine_id(row['machine'])} @ {row['commit'][:12]}"


def paired_deltas(runs: list[dict], baseline_runs: list[dict]) -> list[float]:
    """mAP of each run minus its baseline's run with the same seed, over the seeds both have."""
    by_seed = {r["seed"]: r["mAP"] for r in baseline_runs}
    return [r["mAP"] - by_seed[r["seed"]] for r in sorted(runs, key=lambda r: r["seed"]) if r["seed"] in by_seed]


# Pooled over every setting: does a family beat its baseline at all, seed pair by seed pair?
POOLED_FAMILIES = {
    "LEAP-CF": ["LEAP-CF"],
    "LEAP (CF, AF, CV, AV)": ["LEAP-CF", "LEAP-AF", "LEAP-CV", "LEAP-AV"],
    "ArcFace over CosFace": ["ArcFace"],
}


def pooled_lines(groups: dict[tuple[str, str], list[dict]]) -> list[str]:
    lines = []
    for family, members in POOLED_FAMILIES.items():
        deltas, settings = [], set()
        for (setting, method), rs in groups.items():
            base = "CosFace" if method == "ArcFace" else baseline_of(method)
            pairs = paired_deltas(rs, groups.get((setting, base), [])) if method in members else []
            if pairs:
                deltas += pairs
                settings.add(setting)
        if len(deltas) < 2:
            continue
        mean, sem = statistics.mean(deltas), statistics.stdev(deltas) / len(deltas) ** 0.5
        lines.append(f"- {family}: paired Δ mAP {mean:+.2f} ± {sem:.2f} (mean ± standard error over "
                     f"{len(deltas)} seed pairs in {len(settings)} settings; {sum(d > 0 for d in deltas)} "
                     f"positive; t = {mean / sem if sem else float('nan'):.1f})")
    return lines


def campaign_file(row: dict) -> str | None:
    """``longtail_<cpu>_<commit>.md``: the file of the campaign (machine and commit) of ``row``;
    None for runs that recorded neither."""
    if "machine" not in row:
        return None
    cpu = re.sub(r"[^A-Za-z0-9]+", "-", row["machine"]["cpu"]).strip("-")
    return f"longtail_{cpu}_{row['commit'][:12]}.md"


def write_campaigns(rows: list[dict], out: str) -> list[str]:
    """Write every campaign's table to its own :func:`campaign_file` (``longtail.md`` keeps
    the latest one), so that a campaign on another machine never replaces an earlier
    campaign's table. Returns the file names."""
    latest: dict[str, dict] = {}
    for r in rows:
        if campaign_file(r):
            latest[campaign_file(r)] = r
    for name, r in latest.items():
        write_table(rows, out, campaign_of(r), name)
    return sorted(latest)


def _leap_cf_variants(groups: dict[tuple[str, str], list[dict]]) -> list[str]:
    """The shipped LEAP-CF and its CLOUD_SCALE variants present in ``groups``."""
    present = {m for _, m in groups}
    return [m for m in ["LEAP-CF"] + sorted(m for m in present if m.startswith("LEAP-CF scale ")) if m in present]


def rival_lines(groups: dict[tuple[str, str], list[dict]]) -> list[str]:
    """LEAP-CF (the shipped scale and every scale of the sweep) paired seed by seed with each
    of :data:`RIVALS`, per setting."""
    lines = []
    for setting in sorted({s for s, _ in groups}):
        for variant in _leap_cf_variants(groups):
            leap = groups.get((setting, variant), [])
            cells = []
            for rival in RIVALS:
                pairs = paired_deltas(leap, groups.get((setting, rival), []))
                cells.append(f"{mean_std(pairs, signed=True)} ({sum(d > 0 for d in pairs)}/{len(pairs)})" if pairs
                             else "n/a")
            if any(c != "n/a" for c in cells):
                lines.append(f"| {setting} | {variant} | " + " | ".join(cells) + " |")
    if not lines:
        return []
    return (["", "LEAP-CF against its closest relatives, seed by seed (LEAP-CF's mAP minus the other method's "
             "run of the same seed; mean ± std, seeds where LEAP-CF is ahead):", "",
             "| setting | LEAP-CF | " + " | ".join(f"− {r}" for r in RIVALS) + " |",
             "|---" * (len(RIVALS) + 2) + "|"] + lines)


def campaign_scale(rows: list[dict]) -> str:
    """The CLOUD_SCALE that the campaign's LEAP runs without a ``scale`` suffix ran at (each
    run records its resolved LEAP keys; the shipped default when none recorded one)."""
    scales = sorted({float(r["leap"]["CLOUD_SCALE"]) for r in rows
                     if " scale " not in r["method"] and "CLOUD_SCALE" in (r.get("leap") or {})})
    return ", ".join(f"{s:g}" for s in scales) if scales else f"{DEFAULTS.cloud_scale:g}"


def _order_of(method: str, order: list[str]) -> float:
    """Table position: the method table's order; the CLOUD_SCALE sweep of a family right after
    it, by scale; another name that today's table lacks right after its family."""
    family, _, scale = method.partition(" scale ")
    if family in order and scale:  # the sweep right after its family, by scale
        return order.index(family) + 0.5 + float(scale) / 1e3
    if method in order:
        return order.index(method)
    family = method.split(" ")[0]
    return order.index(family) + 0.5 if family in order else len(order)


def write_table(rows: list[dict], out: str, campaign: str | None = None, name: str = "longtail.md") -> str:
    """Write ``longtail.json`` (every row) and ``name`` (default ``longtail.md``): the table
    of one campaign (one machine and commit; default: the campaign of the last row), whose
    runs alone are compared and paired, one section per data set. Returns the Markdown."""
    if campaign is None:
        campaign = campaign_of(rows[-1]) if rows else "none"
    others: dict[str, int] = {}
    by_dataset: dict[str, dict[tuple[str, str], list[dict]]] = {}
    for r in rows:
        if campaign_of(r) == campaign:
            by_dataset.setdefault(dataset_of(r), {}).setdefault((r["setting"], r["method"]), []).append(r)
        else:
            others[campaign_of(r)] = others.get(campaign_of(r), 0) + 1
    own = [r for r in rows if campaign_of(r) == campaign]
    lines = [f"Machine and commit of every run below: {campaign}  ",
             f"CLOUD_SCALE of the LEAP methods without a `scale` suffix: {campaign_scale(own)} (the default of "
             f"that commit; today's default: {DEFAULTS.cloud_scale:g}).  ",
             "Mean ± std over seeds; tail/head ratio = tail classes' mean angular variance to the class "
             "center over head classes' (training features, eval mode, T = 10; 1 = no gap).", "",
             "Δ mAP = the row's mean mAP minus its baseline's (ArcFace for the LEAP-AF / LEAP-AV family, "
             "ElasticFace-Arc and adaptive_arc, the CosFace run with the same schedule / backbone for the paired "
             "ablations " + " and ".join(f"`{s}`" for s in PAIRED_ABLATIONS) + ", CosFace otherwise) in the "
             "same data set and setting.", "",
             "Paired Δ = the same difference taken seed by seed (a run minus its baseline's run with the "
             "same SEED, on the same machine and commit; SEED seeds initialisation and batch order, the "
             "data split is the same for all seeds), mean ± std over the seeds both have, with how many "
             "of them are positive."]
    order = list(methods())
    commands = []
    for dataset in sorted(by_dataset, key=lambda d: list(DATASETS).index(d) if d in DATASETS else len(DATASETS)):
        groups = by_dataset[dataset]
        lines += ["", f"### {DATASET_NAMES.get(dataset, dataset)}", "",
                  "| setting | method | seeds | mAP | Δ mAP vs baseline | paired Δ (seeds > 0) | Rank-1 "
                  "| tail/head variance ratio | minutes per run |",
                  "|---|---|---|---|---|---|---|---|---|"]
        ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], _order_of(kv[0][1], order)))
        for (setting, method), rs in ordered:
            ratio = [r.get("tail_head_var_ratio") for r in rs]
            base = baseline_of(method)
            if base is None:
                delta = paired_text = "—"
            elif (setting, base) in groups:
                base_runs = groups[(setting, base)]
                diff = statistics.mean(r["mAP"] for r in rs) - statistics.mean(r["mAP"] for r in base_runs)
                delta = f"{diff:+.2f} ({base})"
                paired = paired_deltas(rs, base_runs)
                paired_text = (f"{mean_std(paired, signed=True)} ({sum(d > 0 for d in paired)}/{len(paired)})"
                               if paired else "n/a")
            else:
                delta, paired_text = f"n/a (no {base} run)", "n/a"
            lines.append(f"| {setting} | {method} | {len(rs)} | {mean_std([r['mAP'] for r in rs])} | {delta} | "
                         f"{paired_text} | "
                         f"{mean_std([r['Rank-1'] for r in rs])} | "
                         f"{mean_std(ratio, 3)} | "
                         f"{mean_std([r['seconds'] / 60 if r['seconds'] else None for r in rs], 1)} |")
            seeds = " ".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"]))
            commands.append(f"    python benchmarks/longtail.py --datasets {dataset} --settings {setting} "
                            f"--methods '{method}' --seeds {seeds}")
        lines += rival_lines(groups)
        pooled = pooled_lines(groups)
        if pooled:
            lines += ["", "Pooled over the settings (ArcFace against CosFace, LEAP against its own baseline). "
                      "The pairs of one family are not independent where members share a baseline run "
                      "(LEAP-CF and LEAP-CV share CosFace's), so its standard error is optimistic:", ""]
            lines += pooled
    if others:
        lines += ["", "Other runs kept in `longtail.json`, from other machines or commits (never compared "
                  "or paired with the table above):", ""]
        lines += [f"- {name}: {count} runs" for name, count in others.items()]
    lines += ["", "Each row is reproduced (and resumed: finished runs of the same commit are reused) by:", ""]
    lines += commands
    text = "\n".join(lines) + "\n"
    atomic_write(os.path.join(out, name), lambda f: f.write(text.encode()))
    atomic_write(os.path.join(out, "longtail.json"), lambda f: f.write(json.dumps(rows, indent=1).encode()))
    return text


def _key(row: dict) -> tuple:
    return dataset_of(row), row["setting"], row["method"], row["seed"], campaign_of(row)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", choices=sorted(PLANS),
                        help="a campaign (data sets, settings, seeds, methods); the other options replace its parts")
    parser.add_argument("--datasets", nargs="+", default=None, choices=list(DATASETS), help="default: wesnoth")
    parser.add_argument("--settings", nargs="+", default=None, choices=list(SETTINGS), help="default: all")
    parser.add_argument("--methods", nargs="+", default=None, help="default: all")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 1 2")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (each with one thread when > 1)")
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    parser.add_argument("--report-only", action="store_true",
                        help="tabulate the finished runs among the chosen ones, train nothing")
    args = parser.parse_args(argv)
    import leap_plugin  # noqa: F401

    known = methods()
    jobs = []
    for plan_datasets, plan_settings, plan_seeds, plan_methods in PLANS[args.plan] if args.plan else [(None,) * 4]:
        chosen = args.methods or plan_methods or list(known)
        unknown = [m for m in chosen if m not in known]
        if unknown:
            parser.error(f"unknown methods {unknown}; known: {list(known)}")
        jobs += [(d, s, m, seed) for d in args.datasets or plan_datasets or ["wesnoth"]
                 for s in args.settings or plan_settings or list(SETTINGS)
                 for seed in args.seeds or plan_seeds or [0, 1, 2] for m in chosen]
    # seed by seed across the plan's parts: a campaign cut short still has paired seeds everywhere
    jobs = sorted(dict.fromkeys(jobs), key=lambda j: j[3])
    threads = 1 if args.jobs > 1 else None
    commit = code_commit()
    if args.report_only:
        jobs = [j for j in jobs if os.path.isfile(os.path.join(run_dir_of(args.output, commit, *j), "results.json"))]
    path = os.path.join(args.output, "longtail.json")
    rows: list[dict] = []
    if os.path.isfile(path):
        with open(path) as f:
            rows = [dict(r, dataset=dataset_of(r)) for r in json.load(f)]
    def record(job: Job) -> None:  # the table follows the campaign run by run
        if job.result is not None:
            rows[:] = [r for r in rows if _key(r) != _key(job.result)] + [job.result]
            write_table(rows, args.output, campaign_of(job.result))

    start = time.time()
    runs = [Job(m, seed, run_dir_of(args.output, commit, d, s, m, seed), scope=f"{d} {s}") for d, s, m, seed in jobs]
    execute(runs, lambda job: run_one(*job.scope.split(), job.method, job.seed, args.output, threads), args.jobs,
            on_done=record)
    print(write_table(rows, args.output))
    write_campaigns(rows, args.output)
    failed = [job for job in runs if job.error]
    print(f"{len(jobs)} runs in {(time.time() - start) / 60:.1f} min, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
