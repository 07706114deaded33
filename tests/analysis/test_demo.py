"""``leap-demo`` end to end on a small generated sprite tree in Debian's layout.

The real demo trains on ``wesnoth-1.16-data`` for minutes; here the same code path (two
``leap-train`` processes through fastreid's trainer, in parallel, then ``leap-analyze`` and the
report) runs on 12 generated identities for 2 epochs, from scratch.
"""
import json
import os
import re

import pytest
from PIL import Image

from leap_plugin import runs
from leap_plugin.cli import demo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
POSES = ["", "-attack-1", "-attack-2", "-defend", "-idle-1", "-idle-2", "-die-1", "-die-2"]


def write_units(root):
    """12 identities in 4 factions, 3 to 8 images each, at least two pose families each."""
    for i in range(12):
        faction, unit = ("drakes", "orcs", "undead", "elves")[i % 4], f"unit{i}"
        for n, pose in enumerate(POSES[: 3 + i % 6]):
            path = os.path.join(root, faction, f"{unit}{pose}.png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            image = Image.new("RGBA", (24, 24), (0, 0, 0, 0))
            colour = (20 * i % 256, 255 - 20 * i % 256, 37 * n % 256, 255)
            for y in range(4 + i % 8, 20):  # a bar whose height and colour depend on the identity
                for x in range(6, 18):
                    image.putpixel((x, y), colour)
            image.save(path)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    units = str(tmp / "units")
    write_units(units)
    out = str(tmp / "out")
    opts = ["DATASETS.WESNOTH.UNITS_ROOT", units, "DATASETS.WESNOTH.CACHE_DIR", str(tmp / "cache"),
            "MODEL.BACKBONE.PRETRAIN", "False", "SOLVER.MAX_EPOCH", "2", "TEST.EVAL_PERIOD", "2",
            "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.IMS_PER_BATCH", "8", "DATALOADER.NUM_INSTANCE", "2",
            "MODEL.HEADS.LEAP.START_EPOCH", "1", "MODEL.HEADS.LEAP.TAIL_THRESHOLD", "4"]
    rc = demo.main(["--output", out, "--setting", "natural", "--jobs", "2", *opts])
    return out, opts, rc


def test_demo_writes_report_and_figures(demo_run):
    out, _, rc = demo_run
    assert rc == 0
    report = open(os.path.join(out, "report.md")).read()
    assert os.path.isfile(os.path.join(out, "report.html"))
    # One retrieval row per method, with four metrics each.
    for label in ("CosFace", "LEAP-CF"):
        row = re.search(rf"^\| {label} \|(.*)$", report, re.M)
        assert row, f"no {label} row in the report"
        metrics = [float(x) for x in row.group(1).split("|")[:4]]
        assert all(0 <= m <= 100 for m in metrics)
        results = json.load(open(os.path.join(out, label.lower().replace("-", "_"), "results.json")))
        assert results["mAP"] == pytest.approx(metrics[0], abs=0.01)
    # Every figure the report links exists and is a PNG.
    figures = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", report)
    assert "training_curves.png" in figures and len(figures) >= 3
    for figure in figures:
        with open(os.path.join(out, figure), "rb") as f:
            assert f.read(8) == PNG_MAGIC, figure


def test_demo_trained_with_the_cloud_on(demo_run):
    out, _, _ = demo_run
    # The LEAP-CF run's hook wrote the cloud's state into fastreid's metrics; CosFace has none.
    def metrics(name):
        with open(os.path.join(out, name, "metrics.json")) as f:
            return [json.loads(line) for line in f if line.strip()]

    leap, cos = metrics("leap_cf"), metrics("cosface")
    assert not any(k.startswith("leap/") for m in cos for k in m)
    assert "mAP" in leap[-1] and "mAP" in cos[-1]  # the final evaluation is written too
    leap = [m for m in leap if "leap/cloud_active" in m or m is leap[0]]
    # START_EPOCH 1 of 2: the cloud is on in the second epoch and clouds some classes.
    assert leap[-1]["leap/cloud_active"] == 1.0 and leap[-1]["leap/clouded_classes"] > 0
    assert leap[0].get("leap/cloud_active", 0.0) == 0.0


def test_demo_reuses_finished_runs(demo_run, capsys):
    out, opts, _ = demo_run
    before = os.path.getmtime(os.path.join(out, "cosface", "model_final.pth"))
    assert demo.main(["--output", out, "--setting", "natural", "--jobs", "1", *opts]) == 0
    assert "finished before" in capsys.readouterr().out
    assert os.path.getmtime(os.path.join(out, "cosface", "model_final.pth")) == before


def test_train_run_completes_a_run_whose_results_file_is_missing(tmp_path, monkeypatch):
    """Final checkpoint and evaluation on disk, results.json lost (e.g. the driver was killed):
    nothing is trained again and no training time is claimed for this call."""
    calls = []
    config = os.path.join(runs.SPRITE_CONFIGS, "leap_cf_mnv2.yml")
    monkeypatch.setattr(runs, "_leap_train", lambda *a, **k: calls.append(a))
    (tmp_path / "model_final.pth").write_bytes(b"x")
    (tmp_path / "eval_results.json").write_text(json.dumps({"mAP": 50.0, "Rank-1": 60.0, "Rank-5": 70.0,
                                                             "Rank-10": 80.0, "metric": 55.0}))
    result = runs.train_run("t", config, str(tmp_path), ["MODEL.HEADS.LEAP.CLOUD_SCALE", "2"])
    assert calls == [] and result["seconds"] is None and result["mAP"] == 50.0
    # where and on what it ran, and the LEAP keys it ran with
    assert result["machine"]["cores"] == os.cpu_count() and result["machine"]["torch"]
    assert result["commit"] == runs.code_commit() and result["leap"]["CLOUD_SCALE"] == 2.0
    assert json.loads((tmp_path / "results.json").read_text())["seconds"] is None
    os.remove(tmp_path / "eval_results.json")  # checkpoint without evaluation: evaluated, not trained
    os.remove(tmp_path / "results.json")
    monkeypatch.setattr(runs, "_leap_train", lambda label, out, args, log, threads=None: (
        calls.append(args), (tmp_path / "eval_results.json").write_text(json.dumps({m: 1.0 for m in runs.METRICS}))))
    result = runs.train_run("t", os.path.join(runs.SPRITE_CONFIGS, "cosface_mnv2.yml"), str(tmp_path), [])
    assert result["seconds"] is None and result["leap"] is None
    assert calls[0][0] == "--eval-only"
