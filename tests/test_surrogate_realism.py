"""The analytic surrogate is real-like: variance shares across modules and rank agreement with recorded
real trainings (benchmarks/results/real-digits-random.json, made by benchmarks/surrogate_realism.py)."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import numpy as np
import pytest

import ma2ml_env

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
REAL = BENCH / "results" / "real-digits-random.json"


@pytest.fixture(scope="module")
def realism():
    spec = importlib.util.spec_from_file_location("ma2ml_surrogate_realism", BENCH / "surrogate_realism.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _groups(space):
    return {m: np.arange(o, o + s) for m, o, s in zip(space.names, space.offsets, space.sizes)}


def test_sobol_estimator_on_a_known_function(realism):
    """y = x0 + 2 x1 + x0 * x2 over uniform {0..9}: first-order shares known in closed form."""
    nvec = np.array([10, 10, 10])

    def f(A):
        x = A / 9.0
        return x[:, 0] + 2 * x[:, 1] + x[:, 0] * x[:, 2]

    res = realism.sobol_groups(f, nvec, {"a": np.array([0]), "b": np.array([1]), "c": np.array([2])}, 20000,
                               boots=50)
    # Var of u uniform on {0, 1/9, .., 1}: v = 11/108; E[x] = 1/2
    v = 11 / 108
    var_a, var_b, var_c, var_ac = 1.5 ** 2 * v, 4 * v, 0.25 * v, v * v
    total = var_a + var_b + var_c + var_ac
    assert res["a"]["S"][0] == pytest.approx(var_a / total, abs=0.02)
    assert res["b"]["S"][0] == pytest.approx(var_b / total, abs=0.02)
    assert res["c"]["S"][0] == pytest.approx(var_c / total, abs=0.02)
    assert res["interactions"]["S"][0] == pytest.approx(var_ac / total, abs=0.02)


def test_every_module_and_their_interactions_carry_variance(realism):
    env = ma2ml_env.parallel_env(reward="surrogate")
    ev, space = env.unwrapped.evaluator, env.unwrapped.space
    res = realism.sobol_groups(lambda A: ev.evaluate(A, np.zeros(len(A), np.int64)).accuracy, space.joint_nvec,
                               _groups(space), 20000, boots=50)
    for m in space.names:
        assert res[m]["S"][0] >= 0.04, (m, res[m])  # the target is 5%; the estimate's interval is about +-0.015
    assert res["interactions"]["S"][0] >= 0.08, res["interactions"]


@pytest.mark.skipif(not REAL.exists(), reason="needs the recorded real trainings")
def test_rank_agreement_with_recorded_real_training():
    from scipy.stats import spearmanr

    rows = [json.loads(line) for line in REAL.read_text().splitlines()]
    assert len(rows) >= 100
    env = ma2ml_env.parallel_env(reward="surrogate")
    flats = np.array([r["flat"] for r in rows])
    real = np.array([r["accuracy"] for r in rows])
    sur = env.unwrapped.evaluator.evaluate(flats, np.zeros(len(flats), np.int64)).accuracy
    assert spearmanr(sur, real).statistic >= 0.6


def test_optimum_is_not_the_corner_of_the_space():
    """Not the largest net, not the strongest augmentation everywhere (the old surrogate's optimum)."""
    env = ma2ml_env.parallel_env(reward="surrogate")
    ev, space = env.unwrapped.evaluator, env.unwrapped.space
    score, action = ev.optimum()
    assert 0.9 < score < 0.98  # below the ceiling: the top is not saturated
    nas = space.modules[space.names.index("nas")]
    flops = env.unwrapped.evaluate(env.unwrapped.codec.encode(action)[None], [0])[0].flops
    biggest = {a: np.array(v) for a, v in action.items()}
    biggest["nas"] = nas.nvec - 1
    assert flops < env.unwrapped.evaluate(env.unwrapped.codec.encode(biggest)[None], [0])[0].flops
    pipe = env.unwrapped.decode(action)
    assert not all(op.magnitude == 9 and op.prob == 1.0 for sub in pipe.augment for op in sub)
