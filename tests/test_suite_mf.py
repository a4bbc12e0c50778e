"""The multi-fidelity benchmark script: cells on the simulated clock, the anytime regret, the report."""

from __future__ import annotations

import gzip
import json

import numpy as np

from tests.conftest import LCBENCH


def _suite_mf():
    from benchmarks import suite_mf

    return suite_mf


def test_cells_regret_curves_and_report(tmp_path):
    mf = _suite_mf()
    out = tmp_path / "mf"
    mf.main(["run", "--out", str(out), "--curves-folder", str(LCBENCH), "--tasks", "7593", "--algos",
             "random+full", "random+hyperband", "--workers", "1", "2", "--seeds", "2", "--budget", "6"])
    cells = mf.load(out)
    assert sorted(cells) == [("random+full", 1), ("random+full", 2), ("random+hyperband", 1), ("random+hyperband", 2)]
    rec = cells[("random+hyperband", 2)][0]
    assert len(set(rec["level"])) > 1 and rec["clock"] == sorted(rec["clock"])
    curve = mf.regret_curve(rec, np.array([1e-9, 1e9]))
    assert curve[0] == 1.0  # nothing arrived yet
    full = [k for k, lv in enumerate(rec["level"]) if lv == max(rec["level"])]
    best = max(full, key=lambda k: (rec["score"][k], -k))
    want = (rec["optimum"] - rec["true_final"][best]) / (rec["optimum"] - rec["median"])
    assert curve[1] == want and 0 <= want < 1
    # the same cell again is skipped, a rerun gives the same record
    p = mf.cell_path(out, "7593", "random+hyperband", 2, 0)
    before = json.loads(gzip.decompress(p.read_bytes()))
    p.unlink()
    mf.main(["run", "--out", str(out), "--curves-folder", str(LCBENCH), "--tasks", "7593", "--algos",
             "random+hyperband", "--workers", "2", "--seeds", "1", "--budget", "6"])
    after = json.loads(gzip.decompress(p.read_bytes()))
    assert {k: v for k, v in after.items() if k != "wall_seconds"} == {
        k: v for k, v in before.items() if k != "wall_seconds"}
    report = mf.report(out).read_text()
    assert "## LCBench, W = 1 simulated workers" in report and "| random+hyperband | 2 |" in report
    assert (out / "regret-vs-time-w2.png").stat().st_size > 0
    assert "surrogate" not in report.split("\n## ", 1)[1]  # no surrogate cells: no surrogate section


def test_the_surrogate_is_a_task_of_the_preset(tmp_path):
    mf = _suite_mf()
    out = tmp_path / "mf"
    mf.main(["run", "--out", str(out), "--curves-folder", str(LCBENCH), "--tasks", "surrogate", "--algos",
             "random+hyperband", "--workers", "2", "--seeds", "1", "--budget", "4"])
    (rec,) = mf.load(out)[("random+hyperband", 2)]
    _env, optimum, median, median_full = mf.task_env("surrogate", str(LCBENCH))
    assert rec["task"] == "surrogate" and (rec["optimum"], rec["median"]) == (optimum, median)
    assert 0 < median < optimum <= 1 and median_full > 0
    # several fidelity levels were used, and the incumbent's regret is measured on the noise-free final score
    assert len(set(rec["level"])) > 1 and max(rec["true_final"]) <= optimum
    assert 0 <= mf.regret_curve(rec, np.array([1e9]))[0] < 1
    report = mf.report(out).read_text()
    assert "## surrogate, W = 2 simulated workers" in report and (out / "regret-vs-time-surrogate-w2.png").exists()


def test_the_report_says_by_how_much_ma2ml_misses_its_target():
    mf = _suite_mf()
    grid = np.array([1.0, 2.0, 4.0, 8.0])
    times = [2.0, 8.0]
    # regret curves over the grid, two cells each: ma2ml+hyperband is lowest early, the peer at the end
    curves = {"ma2ml+hyperband": np.array([[0.9, 0.5, 0.4, 0.3]] * 2),
              "optuna-hyperband": np.array([[1.0, 0.8, 0.3, 0.2]] * 2)}
    at = {a: c[:, [1, 3]] for a, c in curves.items()}
    lines = mf._target_lines(sorted(curves), at, times, curves, grid, "optuna-hyperband", 0.2)
    text = "\n".join(lines)
    assert "@2: lowest (0.500)" in text and "@8: 0.300 vs 0.200 (`optuna-hyperband`, +0.100)" in text
    assert "Does not reach `optuna-hyperband`'s final regret (0.200)" in text and "by 4.0" in text
    curves["ma2ml+hyperband"] = np.array([[0.9, 0.15, 0.1, 0.1]] * 2)  # reaches it at 2, the peer at 8
    at = {a: c[:, [1, 3]] for a, c in curves.items()}
    text = "\n".join(mf._target_lines(sorted(curves), at, times, curves, grid, "optuna-hyperband", 0.2))
    assert "at 2.0, 0.25x the peer's 8.0 (target: <= 0.5x)" in text and "@8: lowest (0.100)" in text
