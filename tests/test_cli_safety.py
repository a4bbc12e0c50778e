"""The command line never loses or duplicates data: kill -9 then --resume, and every failing command
leaves what is on disk as it was (each case below failed before the store became the run's record)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ma2ml_env
from agents.cli import main
from agents.store import TrialStore
from tests._cli_helpers import snapshot, stored_count

ROOT = Path(__file__).resolve().parents[1]
TOY = ["--reward", "toy", "--algo", "random", "--batch-size", "4", "--no-progress"]

ma2ml_env.register_evaluator("toy", "tests._toys:ToyEvaluator", overwrite=True)


def cli(out: Path, *extra: str, budget: int = 12) -> int:
    return main(["search", *TOY, "--budget", str(budget), "--out", str(out), *extra])


def surrogate(out: Path, *extra: str, budget: int = 8) -> int:
    return main(["search", "--reward", "surrogate", "--algo", "random", "--batch-size", "4", "--no-progress",
                 "--budget", str(budget), "--out", str(out), *extra])


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]


# -- kill -9 at random moments, three times in a row, then --resume -----------------------------------------
def _start(out: Path, budget: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests._cli_toy", "search", *TOY, "--budget", str(budget), "--out", str(out),
         "--reward-config", '{"delay": 0.04}', "--seed", "7", *(["--resume"] if (out / "search.db").exists() else [])],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path):
    budget, out, rng = 40, tmp_path / "killed", random.Random(2026)
    kills = 0
    while kills < 3:
        proc = _start(out, budget)
        start = stored_count(out / "search.db") if (out / "search.db").exists() else 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and stored_count(out / "search.db") <= start:
            time.sleep(0.02)  # wait for this process's first commit, then a random moment more
        time.sleep(rng.uniform(0.0, 0.35))
        assert proc.poll() is None, f"the search ended before kill {kills + 1}: {proc.communicate()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        assert stored_count(out / "search.db") < budget
    final = _start(out, budget)
    stdout, stderr = final.communicate(timeout=120)
    assert final.returncode == 0, stderr
    assert f"random: {budget} evaluations" in stdout

    ref = tmp_path / "ref"
    assert main(["search", *TOY, "--budget", str(budget), "--out", str(ref), "--reward-config", '{"delay": 0.0}',
                 "--seed", "7"]) == 0

    def comparable(r: dict) -> dict:
        return {k: v for k, v in r.items() if k not in ("seconds", "info")}  # toy: seconds = delay, info = pid

    got, want = rows(out), rows(ref)
    assert len(got) == budget and len({r["index"] for r in got}) == budget
    assert [comparable(r) for r in got] == [comparable(r) for r in want]
    best, best_ref = (json.loads((d / "best.json").read_text()) for d in (out, ref))
    assert best["evaluations"] == budget
    assert comparable(best["best"]) == comparable(best_ref["best"])
    assert len(TrialStore(out / "search.db", create=False).trials()) == budget


def test_resume_after_an_interrupted_round_writes_each_trial_once(tmp_path, monkeypatch):
    """In-process: the first run stops in the middle of round 2 (3 of its 4 trials committed)."""
    import agents.base as base

    real = base.evaluate_joint_actions
    calls = {"n": 0}

    def dying(env, actions, seeds, on_result=None):
        calls["n"] += 1
        if calls["n"] == 3:  # the third round: commit three results, then the process "dies"
            for i in range(3):
                real(env, [actions[i]], [seeds[i]], on_result=lambda _, r, i=i: on_result(i, r))
            raise KeyboardInterrupt
        return real(env, actions, seeds, on_result)

    out = tmp_path / "r"
    monkeypatch.setattr(base, "evaluate_joint_actions", dying)
    assert cli(out, budget=16) == 130
    assert len(rows(out)) == 8 and stored_count(out / "search.db") == 11
    monkeypatch.setattr(base, "evaluate_joint_actions", real)
    assert cli(out, "--resume", budget=16) == 0
    got = rows(out)
    assert [r["index"] for r in got] == list(range(16))
    ref = tmp_path / "ref"
    assert cli(ref, budget=16) == 0
    assert [(r["action"], r["score"]) for r in got] == [(r["action"], r["score"]) for r in rows(ref)]
    assert json.loads((out / "best.json").read_text())["evaluations"] == 16


# -- failing commands leave everything as it was -------------------------------------------------------------
def test_corrupted_store_is_one_line_error_and_nothing_changes(tmp_path, capsys):
    out = tmp_path / "r"
    assert surrogate(out) == 0
    (out / "search.db").write_bytes(b"not a database at all" * 100)
    for p in out.glob("search.db-*"):
        p.unlink()
    before = snapshot(out)
    assert surrogate(out, "--resume") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a readable search store" in err[0] and "Traceback" not in err[0]
    assert snapshot(out) == before


EVO = ["--algo", "evolution"]


@pytest.mark.parametrize(("start", "change", "named"), [
    ([], ["--algo", "evolution"], "algorithm: stored 'random'"),
    ([], ["--noise", "0.1"], "noise"),
    ([], ["--max-flops", "5M"], "max_flops"),
    ([], ["--seed", "3"], "seed: stored 0, now 3"),
    ([], ["--batch-size", "2"], "batch_size: stored 4, now 2"),
    ([], ["--modules", "nas,hpo"], "modules"),
    ([], ["--task", "4"], "task"),
    (EVO, [*EVO, "--algo-config", '{"population_size": 20}'], "algorithm_config.population_size"),
])
def test_resume_of_another_search_is_refused_naming_the_difference_and_nothing_changes(
        tmp_path, capsys, start, change, named):
    out = tmp_path / "r"
    assert surrogate(out, *start) == 0
    capsys.readouterr()
    before = snapshot(out)
    code = surrogate(out, "--resume", *change)
    err = capsys.readouterr().err
    assert code == 1, err
    assert "holds a different search" in err and named in err, err
    assert snapshot(out) == before


def test_resume_of_a_different_reward_backend_is_refused(tmp_path, capsys):
    out = tmp_path / "r"
    assert cli(out, budget=4) == 0
    before = snapshot(out)
    assert surrogate(out, "--resume", budget=8) == 1
    assert "holds a different search" in capsys.readouterr().err
    assert snapshot(out) == before


def test_overwrite_with_a_bad_algo_config_keeps_the_store(tmp_path, capsys):
    out = tmp_path / "r"
    assert surrogate(out) == 0
    before = snapshot(out)
    with pytest.raises(SystemExit) as exc:
        surrogate(out, "--overwrite", "--algo-config", '{"nope": 1}')
    assert exc.value.code == 2
    assert snapshot(out) == before


def test_a_second_process_on_a_running_search_is_refused_before_touching_anything(tmp_path, capsys):
    out = tmp_path / "r"
    assert surrogate(out) == 0
    before = snapshot(out)
    with TrialStore(out / "search.db", create=False) as running:
        running.lock()  # stands in for the live search
        for extra in (["--resume"], ["--overwrite"]):
            assert surrogate(out, *extra, budget=12) == 1
            assert "in use by another running search" in capsys.readouterr().err
            assert snapshot(out) == before


def test_resume_without_a_store_is_an_error_and_creates_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        surrogate(tmp_path / "none", "--resume")
    assert exc.value.code == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(("extra", "code", "message"), [
    (["--seed", "-1"], 2, "must be >= 0"),
    (["--max-flops", "1"], 2, "no pipeline fits the budget"),
    (["--reward-config", '{"budget": {"max_flop": 5e6}}'], 2, "unknown CostBudget field(s) ['max_flop']"),
    (["--reward", "train", "--dataset", "cifar10", "--data-root", "{tmp}/nowhere"], 2, "nowhere"),
])
def test_errors_found_before_the_run_create_nothing(tmp_path, capsys, extra, code, message):
    out = tmp_path / "o"
    argv = ["search", "--algo", "random", "--budget", "2", "--no-progress", "--out", str(out),
            *[e.replace("{tmp}", str(tmp_path)) for e in extra]]
    if "--reward" not in extra:
        argv += ["--reward", "surrogate"]
    try:
        got = main(argv)
    except SystemExit as exc:
        got = exc.code
    assert got == code
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_missing_tensorboard_is_reported_before_the_run(tmp_path, capsys, monkeypatch):
    import agents.tracking as tracking

    def missing():
        raise ImportError('TensorBoard logging needs tensorboard: pip install "ma2ml[tensorboard]"')

    monkeypatch.setattr(tracking, "check_tensorboard", missing)
    out = tmp_path / "o"
    assert surrogate(out, "--tensorboard", str(tmp_path / "tb")) == 1
    assert "needs tensorboard" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "tb").exists()


def test_a_failing_user_evaluator_is_a_recorded_failed_trial_under_the_default_backend(tmp_path):
    from agents.base import run
    from agents.registry import make_algorithm
    from ma2ml_env import EvalResult, PipelineEvaluator

    class Flaky(PipelineEvaluator):
        def evaluate_pipeline(self, pipeline, seed):
            if seed % 3 == 0:
                raise RuntimeError("user code exploded")
            if seed % 3 == 1:
                return EvalResult(float("nan"))
            return EvalResult(0.5, accuracy=0.5)

    res = run(make_algorithm("random"), ma2ml_env.parallel_env(reward=Flaky()), budget=9, seed=0, batch_size=3,
              store=TrialStore(tmp_path / "s.db"))
    statuses = [t.status for t in res.trials]
    assert statuses.count("error") == 6 and statuses.count("ok") == 3
    errors = [t.info["error"] for t in res.trials if t.status == "error"]
    assert any("user code exploded" in e for e in errors) and any("finite" in e for e in errors)
    assert len(TrialStore(tmp_path / "s.db").trials()) == 9


def test_a_budget_few_pipelines_meet_is_warned_about_and_json_budgets_work(tmp_path, capsys):
    assert surrogate(tmp_path / "a", "--max-flops", "2.5M") == 0
    assert "warning: only" in capsys.readouterr().err
    assert surrogate(tmp_path / "b", "--reward-config", '{"budget": {"max_flops": 5e6, "mode": "hard"}}') == 0
    assert "warning" not in capsys.readouterr().err
    trials = rows(tmp_path / "b")
    assert all(t["flops"] <= 5e6 for t in trials if t["status"] == "ok")
    with TrialStore(tmp_path / "b" / "search.db", create=False) as store:
        assert store.config()["env"]["reward"]["budget"]["max_flops"] == 5e6
