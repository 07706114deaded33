"""``leap-compare`` on the tiny Market-1501 folder and on tiny face data: the paired table
and the report, resuming, bad method names, a failing run, and the method table itself."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import leap_plugin  # noqa: F401
from tests.helpers import market_data
from tests.helpers import face_helpers as fh
from leap_plugin.reid.config import load_config
from leap_plugin.reid.methods import METHODS, check_applicable, describe, method_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    market_data.write_market1501(str(root / "datasets"))
    market_data.tiny_config(str(root / "stock.yml"), str(root / "unused"), leap=False, epochs=2, eval_period=2,
                            layer="CosSoftmax")
    return root


def compare(market, *args, timeout=900):
    env = dict(os.environ, FASTREID_DATASETS=str(market / "datasets"), PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "leap_plugin.cli.compare", "--config-file",
                           str(market / "stock.yml"), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=str(market))


def results_mtimes(out):
    return {p: os.path.getmtime(os.path.join(d, p)) for d, _, files in os.walk(out) for p in files
            if p == "results.json" for p in [os.path.relpath(os.path.join(d, p), out)]}


@pytest.mark.slow
def test_two_methods_two_seeds_write_the_paired_table_and_report(market):
    out = market / "two"
    proc = compare(market, "--methods", "CosFace", "LEAP-CF", "--seeds", "0", "1", "--output", str(out),
                   "--jobs", "2", "SOLVER.CHECKPOINT_PERIOD", "100")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "[4/4 done, 0 failed]" in proc.stdout and "LEAP-CF: LEAP, full version" in proc.stdout
    text = (out / "compare.md").read_text()
    record = json.loads((out / "compare.json").read_text())
    runs = {(r["method"], r["seed"]): r for r in record["runs"]}
    assert set(runs) == {("CosFace", 0), ("CosFace", 1), ("LEAP-CF", 0), ("LEAP-CF", 1)}
    for r in runs.values():
        assert r["machine"]["cores"] and r["commit"] and 0 <= r["mAP"] <= 100
    assert "MODEL.HEADS.NAME" in runs[("LEAP-CF", 0)]["method_overrides"]
    assert runs[("LEAP-CF", 0)]["leap"]["ENABLED"] and runs[("CosFace", 0)]["leap"] is None
    # the paired row is LEAP-CF minus CosFace seed by seed, from the recorded numbers
    deltas = [runs[("LEAP-CF", s)]["mAP"] - runs[("CosFace", s)]["mAP"] for s in (0, 1)]
    row = next(line for line in text.splitlines() if line.startswith("| LEAP-CF | ") and "s0" in line)
    assert f"s0 {deltas[0]:+.2f}, s1 {deltas[1]:+.2f}" in row
    assert f"({sum(d > 0 for d in deltas)}/2)" in row
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "Paired against CosFace" in html
    # a TensorBoard logdir of all runs
    assert all(any(f.startswith("events.out.tfevents") for f in os.listdir(out / m / f"seed{s}"))
               for m, s in (("CosFace", 0), ("LEAP-CF", 1)))


@pytest.mark.slow
def test_an_interrupted_comparison_resumes_without_retraining_finished_runs(market):
    out = market / "resume"
    env = dict(os.environ, FASTREID_DATASETS=str(market / "datasets"), PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "leap_plugin.cli.compare", "--config-file", str(market / "stock.yml"),
           "--methods", "CosFace", "ldam", "--seeds", "0", "--output", str(out), "SOLVER.CHECKPOINT_PERIOD", "1"]
    proc = subprocess.Popen(cmd, env=env, cwd=str(market), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    first = out / "CosFace" / "seed0" / "results.json"
    second_checkpoint = out / "ldam" / "seed0" / "model_0000.pth"
    deadline = time.time() + 600
    while not second_checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-way through the second run, after its first checkpoint
    proc.wait(timeout=60)
    assert first.exists() and not (out / "ldam" / "seed0" / "results.json").exists()
    before = os.path.getmtime(first)
    done = compare(market, "--methods", "CosFace", "ldam", "--seeds", "0", "--output", str(out),
                   "SOLVER.CHECKPOINT_PERIOD", "1")
    assert done.returncode == 0, done.stdout[-2000:]
    assert os.path.getmtime(first) == before and "[CosFace s0] finished before" in done.stdout
    log = (out / "ldam" / "seed0" / "train.log").read_text()
    assert "Resuming from" in log or "resum" in log.lower()


@pytest.mark.slow
def test_unknown_or_inapplicable_methods_are_one_line_errors(market, tmp_path):
    proc = compare(market, "--methods", "CosFace", "FocalFace", "--output", str(tmp_path / "x"), timeout=120)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "unknown method 'FocalFace'; valid: CosFace, ArcFace, LEAP-CF" in last
    clas = tmp_path / "clas.yml"
    clas.write_text(f'_BASE_: "{market / "stock.yml"}"\nMODEL:\n  HEADS:\n    NAME: ClasHead\n')
    env = dict(os.environ, FASTREID_DATASETS=str(market / "datasets"), PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "leap_plugin.cli.compare", "--config-file", str(clas),
                           "--methods", "CosFace", "LEAP-CF", "--output", str(tmp_path / "y")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "method 'LEAP-CF' cannot apply" in proc.stderr and "MODEL.HEADS.NAME is 'ClasHead'" in proc.stderr
    proc = compare(market, "--methods", "CosFace", "--output", str(tmp_path / "z"), "SEED", "1", "--jobs", "2",
                   timeout=120)
    assert proc.returncode == 2 and "flags go before the KEY VALUE overrides" in proc.stderr


@pytest.mark.slow
def test_a_failing_run_does_not_stop_the_others_and_fails_the_exit_status(market):
    out = market / "failing"
    (out / "ldam").mkdir(parents=True)
    (out / "ldam" / "seed0").write_text("a file where the run's folder should be")
    proc = compare(market, "--methods", "CosFace", "ldam", "--seeds", "0", "--output", str(out),
                   "SOLVER.CHECKPOINT_PERIOD", "100")
    assert proc.returncode == 1
    assert "[2/2 done, 1 failed]" in proc.stdout or "1 failed" in proc.stdout
    assert "ldam s0: FAILED" in proc.stdout
    assert (out / "CosFace" / "seed0" / "results.json").exists()
    assert "## Failed runs" in (out / "compare.md").read_text()


@pytest.mark.slow
def test_face_comparison_writes_its_table(tmp_path):
    fh.make_face_folder(str(tmp_path / "train"), [6] * 4 + [2] * 4)
    fh.make_pairs_bin(str(tmp_path / "pairs.bin"))
    config = tmp_path / "face.py"
    fh.write_config(config, margin_list=(1.0, 0.0, 0.35), scale=16.0, network="mbf", input_size=32,
                    embedding_size=32, batch_size=8, lr=0.05, num_epoch=2, verbose=10 ** 6, frequent=2,
                    num_workers=0, rec=str(tmp_path / "train"), output=str(tmp_path / "unused"),
                    val_targets=[str(tmp_path / "pairs.bin")], leap=dict(start_epoch=1, tail_threshold=3))
    proc = subprocess.run([sys.executable, "-m", "leap_plugin.cli.compare", "--face", str(config), "--methods",
                           "CosFace", "LEAP-CV", "GCL", "--seeds", "0", "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=900, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = (tmp_path / "out" / "compare.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| method | seeds |"))
    assert "pairs/accuracy" in header
    assert "| LEAP-CV | " in text and "| GCL | " in text
    record = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert {r["method"] for r in record["runs"]} == {"CosFace", "LEAP-CV", "GCL"}
    assert all(0 <= r["pairs/accuracy"] <= 100 for r in record["runs"])


# ------------------------------------------------------------------ the method table
STOCK = os.path.join(ROOT, "configs", "Wesnoth", "cosface_mnv2.yml")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_builds_from_the_stock_config(name):
    """Every method of the table loads and validates on the CosFace sprite config."""
    cfg = load_config(STOCK, method_overrides(name, load_config(STOCK)) + ["MODEL.BACKBONE.PRETRAIN", "False"])
    assert cfg.MODEL.HEADS.CLS_LAYER in (name_layer(name) or cfg.MODEL.HEADS.CLS_LAYER,)
    check_applicable(name, load_config(STOCK))
    assert describe(name, load_config(STOCK)).startswith(f"{name}: ")


def name_layer(name):
    overrides = list(METHODS[name].overrides)
    pairs = dict(zip(overrides[::2], overrides[1::2]))
    return pairs.get("MODEL.HEADS.CLS_LAYER")


def test_a_linear_stock_layer_gets_a_note_and_drw_follows_the_schedule():
    cfg = load_config(STOCK, ["MODEL.HEADS.CLS_LAYER", "Linear", "MODEL.HEADS.SCALE", "1"])
    note = describe("LEAP-CF", cfg)
    assert "not cosine-based" in note and "override MODEL.HEADS.SCALE" in note
    assert method_overrides("ldam_drw", load_config(STOCK, ["SOLVER.MAX_EPOCH", "60"]))[-2:] == [
        "MODEL.LOSSES.CLASS_BALANCED.START_EPOCH", "48"]
