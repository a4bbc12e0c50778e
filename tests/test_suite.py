"""Smoke run of the benchmark suite (what CI runs): matrix, resume, report."""

import importlib.util
import json
import pathlib
import sys

import pytest

SUITE = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "suite.py"


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("ma2ml_bench_suite", SUITE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_smoke_run_resume_and_report(suite, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    args = ["all", "--preset", "smoke", "--budget", "8", "--out", str(tmp_path)]
    suite.main(args)
    cells = sorted((tmp_path / "raw").glob("*/*/seed*.json"))
    assert len(cells) == 2 * 2 * 2  # tasks x algorithms x seeds
    rec = json.loads(cells[0].read_text())
    assert len(rec["scores"]) == 8 and len(rec["statuses"]) == 8
    report = (tmp_path / "REPORT.md").read_text()
    assert "| ma2ml |" in report and "| random |" in report
    assert (tmp_path / "curves-surrogate.png").stat().st_size > 1000
    # a rerun finds every cell done and redoes nothing
    mtimes = [c.stat().st_mtime_ns for c in cells]
    capsys.readouterr()
    suite.main(["run", "--preset", "smoke", "--budget", "8", "--out", str(tmp_path)])
    assert "8 of 8 cells already done; running 0" in capsys.readouterr().out
    assert [c.stat().st_mtime_ns for c in cells] == mtimes


def test_partial_run_resumes_only_missing_cells(suite, tmp_path, capsys):
    suite.main(["run", "--tasks", "surrogate", "--algos", "random", "--seeds", "1", "--budget", "4",
                "--out", str(tmp_path)])
    capsys.readouterr()
    suite.main(["run", "--tasks", "surrogate", "--algos", "random", "--seeds", "3", "--budget", "4",
                "--out", str(tmp_path)])
    assert "1 of 3 cells already done; running 2" in capsys.readouterr().out


def test_statistics(suite):
    import numpy as np

    m, lo, hi = suite.bootstrap_ci(np.array([1.0, 2.0, 3.0, 4.0]))
    assert m == 2.5 and lo < m < hi
    assert suite.iqm(np.array([0.0, 1.0, 2.0, 3.0, 100.0])) < 10


def test_bad_names(suite):
    with pytest.raises(SystemExit):
        suite.main(["run", "--algos", "nope"])
