"""Multi-fidelity searches: the fidelity contract, the schedulers' rules, the simulated clock, resume."""

from __future__ import annotations

import collections
import math
import pathlib

import numpy as np
import pytest

import ma2ml_env
from agents.base import run
from agents.random_search import RandomSearch
from agents.registry import make_algorithm
from agents.schedulers import ASHA, FullTraining, Hyperband, SuccessiveHalving, make_scheduler, rung_levels
from agents.store import TrialStore
from ma2ml_env import Fidelity
from tests._cli_helpers import stored_count
from tests._fidelity_toys import CurveEvaluator, curve_env, full_only_env
from tests.conftest import LCBENCH


def _trials(result):
    return [(t.index, t.action, t.level, t.start, round(t.score, 12), round(t.clock, 9)) for t in result.trials]


# -- the contract -------------------------------------------------------------------------------------------
def test_fidelity_levels_are_checked():
    assert Fidelity((1, 2, 4)).top == 2 and Fidelity((1, 2.5)).levels == (1, 2.5)
    for bad in [(), (0, 1), (2, 1), (1, 1), ("a",), (1, math.inf)]:
        with pytest.raises(ValueError, match=r"Fidelity\.levels"):
            Fidelity(bad)
    with pytest.raises(ValueError, match="not a fidelity level; the levels are"):
        Fidelity((1, 3, 9)).index(4)


def test_bad_levels_raise_before_evaluating():
    env = curve_env()
    rows = np.zeros((2, env.unwrapped.codec.size), dtype=np.int64)
    ev = env.unwrapped
    with pytest.raises(ValueError, match=r"levels must be indices 0\.\.3"):
        ev.evaluate(rows, [0, 1], levels=[0, 4])
    with pytest.raises(ValueError, match="row 1 starts at 2 and asks for level 1"):
        ev.evaluate(rows, [0, 1], levels=[1, 1], start=[-1, 2])
    with pytest.raises(ValueError, match="2 integer level indices"):
        ev.evaluate(rows, [0, 1], levels=[1])
    single = full_only_env().unwrapped
    with pytest.raises(ValueError, match="declares no fidelity levels"):
        single.evaluate(np.zeros((1, single.codec.size), dtype=np.int64), [0], levels=[1])


def test_learning_curve_task_prices_continuations_by_the_recorded_times():
    env = ma2ml_env.learning_curve_env("7593", LCBENCH)
    ev = env.unwrapped.evaluator
    assert env.possible_agents == ["net", "reg", "opt"] and ev.fidelity.levels[-1] == 52
    rows = np.stack([env.unwrapped.codec.sample(np.random.default_rng(i)) for i in range(5)])
    seeds = np.arange(5)
    straight = env.unwrapped.evaluate(rows, seeds, levels=[6] * 5)
    part = env.unwrapped.evaluate(rows, seeds, levels=[2] * 5)
    cont = env.unwrapped.evaluate(rows, seeds, levels=[6] * 5, start=[2] * 5)
    np.testing.assert_array_equal(cont.score, straight.score)
    np.testing.assert_allclose(part.seconds + cont.seconds, straight.seconds, rtol=1e-12)
    assert np.all(cont.seconds < straight.seconds)
    full = env.unwrapped.evaluate(rows, seeds)  # no levels: the full training, as a plain search sees it
    np.testing.assert_array_equal(full.score, ev.true_score_of(rows))
    best, action = ev.optimum()
    assert best == pytest.approx(ev.true_score_of(env.unwrapped.codec.encode(action)[None])[0])
    # the table's finals and full costs, public and read-only (the suite's regret normalisation reads them)
    assert ev.final_accuracies.max() == best and ev.final_accuracies.min() < best
    assert ev.full_costs.shape == ev.final_accuracies.shape
    assert np.isin(ev.full_cost_of(rows), ev.full_costs).all() and np.isin(ev.true_score_of(rows),
                                                                            ev.final_accuracies).all()
    with pytest.raises(ValueError, match="read-only"):
        ev.final_accuracies[0] = 2.0
    with pytest.raises(ValueError, match="read-only"):
        ev.full_costs[0] = 2.0
    with pytest.raises(ValueError, match="the tasks in"):
        ma2ml_env.LearningCurveEvaluator("nope", LCBENCH)


# -- the schedulers -------------------------------------------------------------------------------------------
def test_rungs_are_levels_eta_apart_ending_at_the_full_training():
    lc = Fidelity((1, 2, 3, 4, 6, 8, 12, 17, 24, 35, 52))
    assert [lc.levels[i] for i in rung_levels(lc, 3)] == [2, 6, 17, 52]
    assert [lc.levels[i] for i in rung_levels(lc, 3, min_level=4)] == [6, 17, 52]
    assert rung_levels(Fidelity((1, 3, 9, 27)), 3) == (0, 1, 2, 3)
    with pytest.raises(ValueError, match="above the full training"):
        rung_levels(lc, 3, min_level=60)
    with pytest.raises(ValueError, match="eta must be a number > 1"):
        Hyperband(eta=1)
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler("bohb")


def test_successive_halving_keeps_the_best_third_of_each_complete_rung():
    env = curve_env(levels=(1, 3, 9))
    res = run(RandomSearch(), env, budget=3, seed=0, batch_size=9, scheduler=SuccessiveHalving(), workers=3)
    first = [t for t in res.trials if t.round == 0]
    by_level = collections.defaultdict(list)
    for t in first:
        by_level[t.level].append(t)
    assert [len(by_level[k]) for k in range(3)] == [9, 3, 1]
    top3 = sorted(by_level[0], key=lambda t: -t.score)[:3]
    assert {t.action for t in by_level[1]} == {t.action for t in top3}
    assert all(t.start == 0 for t in by_level[1]) and by_level[2][0].start == 1
    assert by_level[2][0].action == max(by_level[1], key=lambda t: t.score).action
    # a rung waits for its last result: no promotion starts before the rung's last arrival
    last0 = max(t.clock - t.seconds for t in by_level[0])
    assert min(t.clock - t.seconds for t in by_level[1]) >= last0 - 1e-9


def test_hyperband_brackets_start_at_each_rung_in_turn():
    env = curve_env(levels=(1, 3, 9))
    res = run(RandomSearch(), env, budget=12, seed=1, batch_size=1, scheduler=Hyperband(), workers=1)
    fresh = [t.level for t in res.trials if t.start == -1]
    # brackets s = 2, 1, 0: 9 children at level 0, ceil(3/2 * 3) = 5 at level 1, 3 at level 2
    assert fresh[:17] == [0] * 9 + [1] * 5 + [2] * 3


def test_asha_promotes_only_the_top_third_and_no_worker_waits():
    env = curve_env()
    res = run(RandomSearch(), env, budget=20, seed=0, batch_size=4, scheduler=ASHA(), workers=4)
    seen = collections.defaultdict(list)
    for t in sorted(res.trials, key=lambda t: (t.clock, t.index)):
        if t.start >= 0:  # a promotion from rung `start`: among the best third of that rung so far
            rung = [s for s in seen[t.start] if s.clock <= t.clock - t.seconds + 1e-9]
            best = sorted(rung, key=lambda s: (-s.score, s.clock))[: len(rung) // 3]
            assert t.action in {s.action for s in best}
        seen[t.level].append(t)
    assert any(t.start >= 0 for t in res.trials) and any(t.full for t in res.trials)
    # no worker waits: the jobs started at any time are 4 until the budget ends
    starts = sorted(t.clock - t.seconds for t in res.trials)
    ends = sorted(t.clock for t in res.trials)
    stop = starts[-1]
    for moment in np.linspace(0, stop, 50)[1:-1]:
        busy = sum(1 for t in res.trials if t.clock - t.seconds <= moment < t.clock)
        assert busy == 4, (moment, busy)
    assert ends[-1] >= stop


def test_results_arrive_in_simulated_time_order_and_workers_shorten_the_clock():
    got = []
    env = curve_env()
    r1 = run(RandomSearch(), env, budget=15, seed=3, batch_size=4, scheduler=ASHA(), workers=1,
             callback=lambda ts: got.extend(ts))
    clocks = [t.clock for t in got]
    assert clocks == sorted(clocks) and len(got) == len(r1.trials)
    r4 = run(RandomSearch(), curve_env(), budget=15, seed=3, batch_size=4, scheduler=ASHA(), workers=4)
    span1 = max(t.clock for t in r1.trials)
    span4 = max(t.clock for t in r4.trials)
    assert span4 < 0.5 * span1
    # a continuation costs the new epochs only
    for t in r1.trials:
        assert t.seconds == pytest.approx(CurveEvaluator().evaluate(
            np.array([t.action]), [0], levels=[t.level], start=[t.start]).seconds[0])


def test_budget_counts_full_trainings_and_simulated_seconds():
    env = curve_env()
    levels = np.array(env.unwrapped.evaluator.fidelity.levels, dtype=float)
    res = run(RandomSearch(), env, budget=10, seed=0, batch_size=4, scheduler=Hyperband(), workers=2)
    used = sum((levels[t.level] - (levels[t.start] if t.start >= 0 else 0)) / levels[-1] for t in res.trials)
    last = max(res.trials, key=lambda t: t.index)
    assert 10 <= used < 10 + 1 + 1e-9 and (levels[last.level] - (levels[last.start] if last.start >= 0 else 0)
                                            ) / levels[-1] + 10 > used
    short = run(RandomSearch(), curve_env(), budget=1000, seed=0, batch_size=4, scheduler=ASHA(), workers=2,
                budget_seconds=200.0)
    assert all(t.clock - t.seconds < 200.0 for t in short.trials) and max(t.clock for t in short.trials) >= 200.0


def test_full_training_scheduler_is_the_plain_search_on_the_clock():
    plain = run(make_algorithm("tpe"), curve_env(), budget=12, seed=5, batch_size=3)
    timed = run(make_algorithm("tpe"), curve_env(), budget=12, seed=5, batch_size=3, scheduler=FullTraining())
    assert [t.action for t in plain.trials] == [t.action for t in timed.trials]
    np.testing.assert_allclose([t.score for t in plain.trials], [t.score for t in timed.trials], rtol=1e-14)
    np.testing.assert_allclose([t.clock for t in timed.trials], np.cumsum([t.seconds for t in plain.trials]))


@pytest.mark.parametrize("algo", ["random", "tpe", "local-search"])
@pytest.mark.parametrize("scheduler", ["hyperband", "asha"])
def test_same_seed_same_search_and_the_best_is_a_full_training(algo, scheduler):
    a = run(make_algorithm(algo), curve_env(), budget=8, seed=2, batch_size=4, scheduler=make_scheduler(scheduler),
            workers=3)
    b = run(make_algorithm(algo), curve_env(), budget=8, seed=2, batch_size=4, scheduler=make_scheduler(scheduler),
            workers=3)
    assert _trials(a) == _trials(b)
    assert a.best.full and a.best.score == max(t.score for t in a.trials if t.full)
    assert a.best_pipeline is not None


class _Kill(Exception):
    pass


@pytest.mark.parametrize("scheduler", ["hyperband", "asha", "sh"])
def test_resume_after_an_interruption_gives_the_uninterrupted_search(tmp_path, scheduler):
    whole = run(make_algorithm("tpe"), curve_env(), budget=10, seed=4, batch_size=4,
                scheduler=make_scheduler(scheduler), workers=2)
    seen = []

    def die(ts):
        seen.extend(ts)
        if len(seen) >= 17:
            raise _Kill

    path = tmp_path / "s.db"
    with pytest.raises(_Kill):
        run(make_algorithm("tpe"), curve_env(), budget=10, seed=4, batch_size=4, scheduler=make_scheduler(scheduler),
            workers=2, store=TrialStore(path), callback=die)
    stored = len(TrialStore(path))
    assert stored >= 17
    again = run(make_algorithm("tpe"), curve_env(), budget=10, seed=4, batch_size=4,
                scheduler=make_scheduler(scheduler), workers=2, store=TrialStore(path))
    assert _trials(again) == _trials(whole)
    assert [t.index for t in TrialStore(path).trials()] == [t.index for t in whole.trials]
    assert len(TrialStore(path).completed_trials()) == len(whole.trials)  # every result is final when stored
    with pytest.raises(ValueError, match=r"differ|scheduler"):
        run(make_algorithm("tpe"), curve_env(), budget=10, seed=4, batch_size=4, scheduler=make_scheduler("sh"
            if scheduler != "sh" else "asha"), workers=2, store=TrialStore(path))


def test_bad_multi_fidelity_arguments_fail_before_anything_is_recorded(tmp_path):
    path = tmp_path / "s.db"
    with pytest.raises(ValueError, match="declares no fidelity levels"):
        run(RandomSearch(), full_only_env(), budget=4, scheduler=ASHA(), store=TrialStore(path))
    assert len(TrialStore(path)) == 0
    for kw, msg in [({"workers": 0}, "workers must be a positive integer"),
                    ({"budget_seconds": -1}, "budget_seconds must be a positive"),
                    ({"dedupe": True}, "dedupe is for full-fidelity searches")]:
        with pytest.raises(ValueError, match=msg):
            run(RandomSearch(), curve_env(), budget=4, scheduler=ASHA(), **kw)
    with pytest.raises(TypeError, match="scheduler must be"):
        run(RandomSearch(), curve_env(), budget=4, scheduler="asha")


# -- through the command line ---------------------------------------------------------------------------------
def _cli_search(out, scheduler, *extra):
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    return subprocess.Popen(
        [sys.executable, "-m", "tests._cli_toy", "search", "--reward", "curves", "--algo", "tpe", "--scheduler",
         scheduler, "--sim-workers", "3", "--budget", "12", "--batch-size", "4", "--seed", "3", "--out", str(out),
         "--no-progress", *extra], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**__import__("os").environ, "PYTHONPATH": str(root)})


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["hyperband", "asha"])
def test_kill_9_during_a_multi_fidelity_search_then_resume_is_exact(tmp_path, scheduler):
    import json
    import os
    import random
    import signal
    import time

    out, rng = tmp_path / "killed", random.Random(7)
    for kill in range(2):
        resume = ("--resume",) if (out / "search.db").exists() else ()
        proc = _cli_search(out, scheduler, "--reward-config", '{"delay": 0.02}', *resume)
        before = stored_count(out / "search.db")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and stored_count(out / "search.db") <= before + 5:
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.3))
        assert proc.poll() is None, f"the search ended before kill {kill + 1}: {proc.communicate()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    final = _cli_search(out, scheduler, "--reward-config", '{"delay": 0.02}', "--resume")
    _, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr
    ref = tmp_path / "ref"
    whole = _cli_search(ref, scheduler, "--reward-config", '{"delay": 0.0}')
    assert whole.communicate(timeout=300)[0] and whole.returncode == 0

    def rows(d):
        return sorted((json.loads(line) for line in (d / "trials.jsonl").read_text().splitlines()),
                      key=lambda r: r["index"])

    got, want = rows(out), rows(ref)
    assert [(r["index"], r["action"], r["level"], r["start"], r["score"], r["clock"]) for r in got] == [
        (r["index"], r["action"], r["level"], r["start"], r["score"], r["clock"]) for r in want]
    best, best_ref = (json.loads((d / "best.json").read_text())["best"] for d in (out, ref))
    assert (best["index"], best["score"], best["full"]) == (best_ref["index"], best_ref["score"], True)
