"""``benchmarks/face.py``'s table: paired differences pair runs of one seed, machine and commit."""

import pytest

from tests.helpers.benchmark_scripts import load_benchmark



@pytest.fixture(scope="module")
def face():
    return load_benchmark("face")


MACHINE = {"cpu": "CPU A", "arch": "x86_64", "cores": 2, "gpu": None, "python": "3.11.7", "torch": "2.14.1",
           "threads": 1}


def row(method, seed, acc, commit="a" * 40, machine=MACHINE):
    return {"method": method, "seed": seed, "accuracy": acc, "tpr@fpr=0.001": acc / 2, "tpr@fpr=0.0001": acc / 3,
            "rank1": acc / 4, "machine": machine, "commit": commit}


def test_paired_delta_within_one_campaign(face, tmp_path):
    split = {"train_ids": 10, "test_ids": 10, "pairs": 20, "probes": [["p", "i"]], "distractors": ["d"]}
    rows = [row("CosFace", 0, 0.9, commit="b" * 40),  # another commit: never paired
            row("CosFace", 0, 0.80), row("CosFace", 1, 0.70), row("LEAP-CV", 0, 0.85), row("LEAP-CV", 1, 0.72)]
    text = face.write_table(rows, str(tmp_path), split)
    line = next(l for l in text.splitlines() if l.startswith("| LEAP-CV"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "2" and cells[2] == "78.50 ± 9.19"
    assert cells[6] == "+3.50 ± 2.12 (2/2)"  # +5 and +2 points, seed by seed
    assert "@ aaaaaaaaaaaa" in text and (tmp_path / "face.json").exists()
