"""``leap-analyze`` end to end on a tiny ResNet-18 trained for one epoch in-process."""
import json
import os
import subprocess
import sys

import pytest

import leap_plugin  # noqa: F401  (patches fastreid before its data / engine modules load)
import fastreid.data.build as data_build
from leap_plugin import LeapTrainer
from leap_plugin.analysis.plots import plot_training_curves, read_metrics
from leap_plugin.analysis.stats import STATISTICS
from leap_plugin.cli.analyze import analyze, main
from leap_plugin.reid.config import load_config
from tests.helpers.market_data import tiny_config, write_market1501

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# write_market1501's training counts are (12, 10, 8, 4, 4, 3, 3, 2): T = 5 gives 3 head classes.
TAIL_THRESHOLD = 5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config file, output dir) of a LEAP run trained for one epoch, with its checkpoint."""
    tmp = tmp_path_factory.mktemp("analyze")
    root = write_market1501(str(tmp / "data"))
    output = str(tmp / "run")
    os.makedirs(output)  # fastreid's default_setup makes it in leap-train; the trainer expects it
    # DefaultTrainer.train asserts evaluation results: evaluate at the (only) last epoch.
    config = tiny_config(str(tmp / "config.yml"), output, leap=True, epochs=1, eval_period=1)
    with pytest.MonkeyPatch.context() as mp:
        # fastreid reads the datasets root from this module global when building data sets.
        mp.setattr(data_build, "_root", root)
        # Batch 8: 5 iterations in the epoch. fastreid's CommonMetricPrinter divides by zero at
        # the end of an epoch when its IterationTimer has not yet timed an iteration (it skips 3).
        trainer = LeapTrainer(load_config(config, ["SOLVER.IMS_PER_BATCH", "8"]))
        trainer.resume_or_load(resume=False)
        trainer.train()
        yield config, output


def _png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC


def test_cli_writes_json_and_plots(trained, tmp_path, capsys):
    config, output = trained
    out = tmp_path / "analysis"
    rc = main(["--config-file", config, "--output", str(out), "--tail-threshold", str(TAIL_THRESHOLD),
               "--max-classes-tsne", "6"])
    assert rc == 0, capsys.readouterr().err
    result = json.loads((out / "analysis.json").read_text())
    # Default weights: the last checkpoint of OUTPUT_DIR.
    assert result["weights"] == os.path.abspath(os.path.join(output, "model_final.pth"))
    assert result["split"] == "train" and result["unit"] == "rad"
    assert result["images"] == 46 and result["classes"] == 8 and result["feature_dim"] == 512
    summary = result["summary"]
    assert summary["head"]["classes"] == 3 and summary["tail"]["classes"] == 5
    assert summary["matched_size"] == 3  # median size of the tail classes (4, 4, 3, 3, 2)
    for key in STATISTICS:
        assert 0 < summary["head"][key]["mean"] < 3.15
        assert summary["head"][key]["ci"] >= 0
    assert [c["count"] for c in result["per_class"]] == [12, 10, 8, 4, 4, 3, 3, 2]
    assert set(result["plots"]) == {"angles", "tsne", "training_curves"}
    for name in result["plots"].values():
        assert _png(out / name)
    assert "center_angle_mean" in capsys.readouterr().out


def test_analyze_test_split_in_process(trained, tmp_path):
    config, output = trained
    cfg = load_config(config)
    weights = os.path.join(output, "model_final.pth")
    result = analyze(cfg, weights, str(tmp_path), 1, split="test", max_classes_tsne=0, compare={})
    # 4 query/gallery identities of 4 images each, plus one distractor image (pid 0).
    assert result["images"] == 17 and result["classes"] == 5
    assert result["summary"]["head"]["classes"] == 4
    assert "tsne" not in result["plots"]
    assert (tmp_path / "analysis.json").is_file()


def test_missing_or_bad_checkpoint_fails_clearly(trained, tmp_path, capsys):
    config, _ = trained
    missing = str(tmp_path / "nope.pth")
    assert main(["--config-file", config, "--weights", missing, "--output", str(tmp_path)]) == 2
    assert "nope.pth" in capsys.readouterr().err

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    assert main(["--config-file", config, "--weights", str(junk), "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "junk.pth" in err and "checkpoint" in err

    # A checkpoint of another backbone would otherwise load partially and silently.
    assert main(["--config-file", config, "--output", str(tmp_path), "MODEL.BACKBONE.DEPTH", "34x"]) == 2
    assert "does not fit the model" in capsys.readouterr().err
    assert not (tmp_path / "analysis.json").exists()


def test_training_curves_overlay_runs(tmp_path):
    base, leap = tmp_path / "base.json", tmp_path / "leap.json"
    base.write_text('{"iteration": 0, "total_loss": 3.0}\n{"iteration": 1, "total_loss": 2.5}\n')
    # A run still writing: its truncated last line is skipped.
    leap.write_text('{"iteration": 0, "total_loss": 3.1, "leap/cloud_width": 0.1}\n{"iteration": 1, "tot')
    assert read_metrics(str(leap)) == [{"iteration": 0, "total_loss": 3.1, "leap/cloud_width": 0.1}]
    path = plot_training_curves({"baseline": str(base), "LEAP": str(leap)}, str(tmp_path / "curves.png"))
    assert _png(path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"iteration": 0}\nnot json\n{"iteration": 1}\n')
    with pytest.raises(ValueError, match="bad.json:2"):
        read_metrics(str(bad))
    with pytest.raises(ValueError, match="none of"):
        plot_training_curves({"x": str(base)}, str(tmp_path / "none.png"), keys=["mAP"])


def test_each_log_line_is_printed_once(trained, tmp_path):
    """The console script in its own process (no pytest handlers on the root logger): leap_plugin's
    records reach fastreid's logger too, and used to be printed by the root handler twice."""
    config, output = trained
    root = os.path.join(os.path.dirname(output), "data")  # write_market1501's datasets root
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, FASTREID_DATASETS=root, PYTHONPATH=repo)
    done = subprocess.run([sys.executable, "-m", "leap_plugin.cli.analyze", "--config-file", config,
                           "--output", str(tmp_path), "--tail-threshold", str(TAIL_THRESHOLD),
                           "--max-classes-tsne", "0"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    text = done.stdout + done.stderr
    assert text.count("leap-analyze: wrote") == 1, text
    assert text.count("images of 8 classes") == 1, text
    assert "center_angle_mean" in done.stdout


def test_flag_after_the_overrides_says_flags_come_first(trained, tmp_path, capsys):
    config, _ = trained
    with pytest.raises(SystemExit) as exit_info:
        main(["--config-file", config, "MODEL.DEVICE", "cpu", "--output", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert lines == ["leap-analyze: error: '--output' comes after the KEY VALUE overrides: flags come before the "
                     "overrides (leap-analyze --config-file ... --output ... KEY VALUE ...)"]
    assert not (tmp_path / "analysis.json").exists()
