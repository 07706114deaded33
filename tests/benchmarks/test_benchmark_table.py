"""``benchmarks/longtail.py``'s results table: each row's mAP gain is taken against its own
stock baseline in the same setting (ArcFace for the angular-margin family, CosFace otherwise)."""
import json

import pytest

from tests.helpers.benchmark_scripts import load_benchmark



@pytest.fixture(scope="module")
def longtail():
    return load_benchmark("longtail")


def row(setting, method, seed, mAP):
    return {"setting": setting, "method": method, "seed": seed, "mAP": mAP, "Rank-1": 50.0,
            "tail_head_var_ratio": 0.5, "seconds": 60.0}


AMD = {"cpu": "AMD EPYC", "arch": "x86_64", "cores": 2, "gpu": None, "python": "3.11.7", "torch": "2.14.1",
       "threads": 1}
INTEL = dict(AMD, cpu="Intel(R) Xeon(R) Processor")


def on(machine, commit, r):
    """``r`` as a run of ``machine`` at ``commit`` records it."""
    return dict(r, machine=machine, commit=commit, leap=None)


def table_rows(text):
    return {tuple(c.strip() for c in line.strip("|").split("|")[:2]): [c.strip() for c in line.strip("|").split("|")]
            for line in text.splitlines()
            if (line.startswith("| H20_S4") or line.startswith("| natural")) and line.count("|") == 10}


def test_baselines(longtail):
    assert longtail.baseline_of("CosFace") is None and longtail.baseline_of("ArcFace") is None
    for method in ("LEAP-AF", "LEAP-AV", "LEAP-AF loo", "adaptive_arc"):
        assert longtail.baseline_of(method) == "ArcFace"
    for method in ("LEAP-CF", "LEAP-CV", "LT sampler", "ldam", "ldam_drw", "balanced_softmax", "cb_cosface"):
        assert longtail.baseline_of(method) == "CosFace"
    # the schedule / backbone ablations change the baseline too: compared with their own CosFace
    for suffix in ("32 ep", "R18 scratch"):
        assert longtail.baseline_of(f"CosFace {suffix}") is None
        assert longtail.baseline_of(f"LEAP-CF {suffix}") == f"CosFace {suffix}"
        assert {f"CosFace {suffix}", f"LEAP-CF {suffix}"} <= set(longtail.methods())


def test_delta_against_own_baseline_and_setting(longtail, tmp_path):
    rows = [row("H20_S4", "CosFace", 0, 50.0), row("H20_S4", "CosFace", 1, 52.0),
            row("H20_S4", "ArcFace", 0, 60.0),
            row("H20_S4", "LEAP-CF", 0, 54.0), row("H20_S4", "LEAP-CF", 1, 55.0),
            row("H20_S4", "LEAP-AF", 0, 59.0),
            row("natural", "CosFace", 0, 70.0), row("natural", "LEAP-CF", 0, 69.5),
            row("natural", "adaptive_arc", 0, 71.0)]
    text = longtail.write_table(rows, str(tmp_path))
    table = table_rows(text)
    assert table[("H20_S4", "CosFace")][4] == "—"
    assert table[("H20_S4", "LEAP-CF")][3] == "54.50 ± 0.71"
    assert table[("H20_S4", "LEAP-CF")][4] == "+3.50 (CosFace)"  # 54.5 - mean(50, 52)
    assert table[("H20_S4", "LEAP-AF")][4] == "-1.00 (ArcFace)"
    assert table[("natural", "LEAP-CF")][4] == "-0.50 (CosFace)"  # natural's CosFace, not H20_S4's
    assert table[("natural", "adaptive_arc")][4] == "n/a (no ArcFace run)"
    with open(tmp_path / "longtail.json") as f:
        assert json.load(f) == rows
    assert (tmp_path / "longtail.md").read_text() == text


def test_paired_delta_is_taken_seed_by_seed(longtail, tmp_path):
    rows = [row("H20_S4", "CosFace", 0, 50.0), row("H20_S4", "CosFace", 1, 60.0), row("H20_S4", "CosFace", 2, 55.0),
            row("H20_S4", "LEAP-CF", 0, 51.0), row("H20_S4", "LEAP-CF", 1, 61.0),  # seed 2 not run
            row("H20_S4", "ArcFace", 0, 52.0), row("H20_S4", "ArcFace", 1, 59.0),
            row("natural", "CosFace", 0, 70.0), row("natural", "LEAP-CF", 0, 69.0)]
    assert longtail.paired_deltas(rows[3:5], rows[:3]) == [1.0, 1.0]
    text = longtail.write_table(rows, str(tmp_path))
    table = table_rows(text)
    # unpaired: 56.0 - 55.0; paired: +1 on both seeds LEAP-CF has, whatever CosFace did on seed 2
    assert table[("H20_S4", "LEAP-CF")][4] == "+1.00 (CosFace)"
    assert table[("H20_S4", "LEAP-CF")][5] == "+1.00 ± 0.00 (2/2)"
    assert table[("H20_S4", "CosFace")][5] == "—"
    assert table[("natural", "LEAP-CF")][5] == "-1.00 (0/1)"
    # pooled over settings: LEAP-CF +1, +1, -1; ArcFace over CosFace +2, -1
    pooled = {line.split(":")[0][2:]: line for line in text.splitlines() if line.startswith("- ")}
    assert "paired Δ mAP +0.33 ± 0.67" in pooled["LEAP-CF"] and "3 seed pairs in 2 settings; 2 positive" in pooled["LEAP-CF"]
    assert "paired Δ mAP +0.50 ± 1.50" in pooled["ArcFace over CosFace"]


def test_pairs_only_runs_of_one_machine_and_commit(longtail, tmp_path):
    """The same seed gives other numbers on another machine: never pair across."""
    here = {"cpu": "CPU A", "arch": "x86_64", "cores": 2, "gpu": None, "python": "3.11.7", "torch": "2.14.1",
            "threads": 1}
    there = dict(here, cpu="CPU B")

    rows = [row("H20_S4", "CosFace", 0, 50.0), row("H20_S4", "LEAP-CF", 0, 70.0),  # not recorded
            on(there, "c" * 40, row("H20_S4", "CosFace", 0, 40.0)),
            on(here, "a" * 40, row("H20_S4", "CosFace", 0, 55.0)),
            on(here, "b" * 40, row("H20_S4", "LEAP-CF", 1, 90.0)),  # another commit
            on(here, "a" * 40, row("H20_S4", "CosFace", 1, 57.0)),
            on(here, "a" * 40, row("H20_S4", "LEAP-CF", 0, 58.0)),
            on(here, "a" * 40, row("H20_S4", "LEAP-CF", 1, 58.0))]
    text = longtail.write_table(rows, str(tmp_path))  # the last row's campaign
    table = table_rows(text)
    assert table[("H20_S4", "CosFace")][2] == "2" and table[("H20_S4", "LEAP-CF")][2] == "2"
    assert table[("H20_S4", "LEAP-CF")][5] == "+2.00 ± 1.41 (2/2)"  # 58 - 55, 58 - 57
    assert "CPU A (x86_64, 2 cores, no GPU), Python 3.11.7, torch 2.14.1, 1 thread(s) per run @ aaaaaaaaaaaa" in text
    assert "- CPU B (x86_64" in text and "- machine and commit not recorded" in text and "@ bbbbbbbbbbbb: 1 runs" in text
    with open(tmp_path / "longtail.json") as f:
        assert json.load(f) == rows  # nothing is dropped from the record


def test_each_campaign_keeps_its_own_table(longtail, tmp_path):
    """A campaign on a second machine must not replace the first campaign's table."""
    rows = [on(AMD, "a" * 40, row("H20_S4", "CosFace", 0, 50.0)),
            on(AMD, "a" * 40, row("H20_S4", "LEAP-CF", 0, 54.0)),
            on(INTEL, "b" * 40, row("H20_S5", "CosFace", 0, 60.0)),
            on(INTEL, "b" * 40, row("H20_S5", "LEAP-CF", 0, 61.0)),
            row("natural", "CosFace", 0, 70.0)]  # no machine recorded: no file of its own
    names = longtail.write_campaigns(rows, str(tmp_path))
    assert names == ["longtail_AMD-EPYC_aaaaaaaaaaaa.md", "longtail_Intel-R-Xeon-R-Processor_bbbbbbbbbbbb.md"]
    first = table_rows((tmp_path / names[0]).read_text())
    second = (tmp_path / names[1]).read_text()
    assert set(first) == {("H20_S4", "CosFace"), ("H20_S4", "LEAP-CF")}
    assert first[("H20_S4", "LEAP-CF")][5] == "+4.00 (1/1)"
    assert "| H20_S5 | LEAP-CF | 1 | 61.00 | +1.00 (CosFace) | +1.00 (1/1) |" in second
    assert "| H20_S4 |" not in second and "Intel(R) Xeon(R) Processor" in second.splitlines()[0]


def test_report_only_rewrites_every_campaign_file(longtail, tmp_path):
    """``--report-only`` (what a campaign's end runs too) re-tabulates ``longtail.json`` into
    ``longtail.md`` and one file per campaign, training nothing."""
    rows = [on(AMD, "a" * 40, row("H20_S4", "CosFace", 0, 50.0)),
            on(AMD, "a" * 40, row("H20_S4", "LEAP-CF", 0, 54.0)),
            on(INTEL, "b" * 40, row("H20_S3", "CosFace", 0, 60.0)),
            on(INTEL, "b" * 40, row("H20_S3", "LEAP-CF", 0, 63.0))]
    (tmp_path / "longtail.json").write_text(json.dumps(rows))
    assert longtail.main(["--report-only", "--output", str(tmp_path), "--settings", "H20_S4",
                          "--methods", "CosFace", "LEAP-CF", "--seeds", "0"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "longtail.json", "longtail.md", "longtail_AMD-EPYC_aaaaaaaaaaaa.md",
        "longtail_Intel-R-Xeon-R-Processor_bbbbbbbbbbbb.md"]  # no run folder: nothing trained
    assert "+4.00 (1/1)" in (tmp_path / "longtail_AMD-EPYC_aaaaaaaaaaaa.md").read_text()
    latest = (tmp_path / "longtail.md").read_text()
    assert "| H20_S3 | LEAP-CF | 1 | 63.00 | +3.00 (CosFace) | +3.00 (1/1) |" in latest
    # every run now records its data set (runs from before there were two are the sprites')
    assert json.loads((tmp_path / "longtail.json").read_text()) == [dict(r, dataset="wesnoth") for r in rows]


def test_data_sets_are_tabulated_and_paired_apart_with_the_relatives(longtail, tmp_path):
    rows = [on(AMD, "a" * 40, dict(row("H20_S4", m, seed, v), dataset=d))
            for d, shift in (("wesnoth", 0.0), ("widelands", 20.0))
            for m, base in (("CosFace", 50.0), ("LEAP-CF", 53.0), ("GCL", 52.0), ("ElasticFace-Cos", 54.0))
            for seed, v in ((0, base + shift), (1, base + shift + 1.0))]
    rows.append(on(AMD, "a" * 40, dict(row("H20_S4", "LEAP-CF", 2, 99.0), dataset="widelands")))  # unpaired
    text = longtail.write_table(rows, str(tmp_path))
    wesnoth, widelands = text.split("### Widelands")
    assert "### Wesnoth" in wesnoth
    leap = table_rows(widelands)[("H20_S4", "LEAP-CF")]
    assert leap[2] == "3" and leap[5] == "+3.00 ± 0.00 (2/2)"  # paired within widelands only
    rival = next(l for l in widelands.splitlines() if l.startswith("| H20_S4 | LEAP-CF | ") and l.count("|") == 7)
    cells = [c.strip() for c in rival.strip("|").split("|")]
    # LEAP-CF minus: uniform (not run), ElasticFace-Cos (-1 on both seeds), GCL (+1), ldam (not run)
    assert cells[2:] == ["n/a", "-1.00 ± 0.00 (0/2)", "+1.00 ± 0.00 (2/2)", "n/a"]
    assert "--datasets widelands --settings H20_S4 --methods 'LEAP-CF' --seeds 0 1 2" in text


def test_a_campaign_names_the_cloud_scale_its_runs_recorded_and_pairs_every_scale_with_the_relatives(
        longtail, tmp_path):
    """Runs of an earlier default keep their names; the table says which CLOUD_SCALE the
    suffix-free LEAP runs used (from the keys each run recorded), gives a scale that today's
    table lacks its Δ, and pairs each LEAP-CF scale with the relatives."""
    def leap(r, scale):
        return dict(r, leap={"CLOUD_SCALE": scale})
    rows = [on(AMD, "a" * 40, row("H20_S4", "CosFace", 0, 50.0)), on(AMD, "a" * 40, row("H20_S4", "GCL", 0, 49.0)),
            leap(on(AMD, "a" * 40, row("H20_S4", "LEAP-CF", 0, 53.0)), 3.0),
            leap(on(AMD, "a" * 40, row("H20_S4", "LEAP-CF scale 7", 0, 56.0)), 7.0)]
    text = longtail.write_table(rows, str(tmp_path))
    assert "without a `scale` suffix: 3 (the default of that commit" in text
    assert table_rows(text)[("H20_S4", "LEAP-CF scale 7")][4] == "+6.00 (CosFace)"
    variants = {line.split("|")[2].strip(): line.split("|")[5].strip() for line in text.splitlines()
                if line.startswith("| H20_S4 | LEAP-CF") and "(CosFace)" not in line}
    assert variants == {"LEAP-CF": "+4.00 (1/1)", "LEAP-CF scale 7": "+7.00 (1/1)"}
