"""The surrogate with fidelity levels: its learning-curve model (ma2ml_env.rewards.surrogate_curves)."""

from __future__ import annotations

import importlib.util
import pathlib
import pickle
import sys

import numpy as np
import pytest

import ma2ml_env
from agents.base import run
from agents.random_search import RandomSearch
from agents.schedulers import Hyperband
from ma2ml_env.rewards.surrogate import SurrogateEvaluator
from ma2ml_env.rewards.surrogate_curves import DEFAULT_CURVES, CurveModel

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
SETTINGS = [{}, {"noise_std": 0.03}, {"budget": {"max_flops": 8e6, "mode": "soft"}},
            {"budget": {"max_flops": 8e6}}, {"task": 3}]


def _env(**kw):
    return ma2ml_env.parallel_env(reward=SurrogateEvaluator(**kw)).unwrapped


def _rows(env, n=64, seed=0):
    return env.codec.sample(np.random.default_rng(seed), n), np.arange(100, 100 + n, dtype=np.int64)


def _fields(r):
    return r.score, r.accuracy, r.flops, r.params, r.seconds, r.status


@pytest.mark.parametrize("kw", SETTINGS, ids=lambda kw: "-".join(map(str, kw)) or "default")
def test_the_top_level_is_the_full_training_bit_for_bit(kw):
    env = _env(**kw)
    A, seeds = _rows(env)
    assert env.evaluator.fidelity == ma2ml_env.Fidelity((1, 2, 4, 8))  # the training backend's default ladder
    full = env.evaluate(A, seeds)
    top = env.evaluate(A, seeds, levels=np.full(len(A), 3))
    for got, want in zip(_fields(top), _fields(full)):
        assert np.array_equal(got, want)
    for i in range(4):  # the one-row path (env.step's) too
        one = env.evaluate(A[i:i + 1], seeds[i:i + 1], levels=np.array([3]))
        assert [f[0] for f in _fields(one)] == [f[0] for f in _fields(env.evaluate(A[i:i + 1], seeds[i:i + 1]))]
    # levels at or past a child's own schedule are its full training too
    epochs = np.array([env.decode(a).train.epochs for a in A])
    for level, resource in enumerate((1, 2, 4)):
        at = env.evaluate(A, seeds, levels=np.full(len(A), level))
        done = epochs <= resource
        assert done.any() and (~done).any()
        assert np.array_equal(at.score[done], full.score[done])
        assert np.array_equal(at.seconds[done], full.seconds[done])


@pytest.mark.parametrize("kw", SETTINGS[:3], ids=["default", "noise", "soft-budget"])
def test_continuing_gives_the_straight_result_at_the_difference_of_the_costs(kw):
    env = _env(**kw)
    A, seeds = _rows(env)
    k = len(A)
    straight = [env.evaluate(A, seeds, levels=np.full(k, b)) for b in range(4)]
    for a in range(4):
        for b in range(a + 1, 4):
            went_on = env.evaluate(A, seeds, levels=np.full(k, b), start=np.full(k, a))
            assert np.array_equal(went_on.score, straight[b].score)
            assert np.array_equal(went_on.accuracy, straight[b].accuracy)
            np.testing.assert_allclose(straight[a].seconds + went_on.seconds, straight[b].seconds, rtol=1e-12)
    mixed = env.evaluate(A, seeds, levels=np.arange(k) % 4)  # every row its own level, in one batch
    for b in range(4):
        assert np.array_equal(mixed.score[b::4], straight[b].score[b::4])


def test_curves_rise_with_training_and_cost_grows_linearly_in_epochs():
    env = _env()
    A, seeds = _rows(env, 256)
    k = len(A)
    at = [env.evaluate(A, seeds, levels=np.full(k, i)) for i in range(4)]
    acc = np.stack([r.accuracy for r in at], axis=1)
    sec = np.stack([r.seconds for r in at], axis=1)
    assert (np.diff(acc, axis=1) >= 0).all() and (np.diff(sec, axis=1) >= 0).all()
    epochs = np.array([env.decode(a).train.epochs for a in A], dtype=float)
    trained = np.minimum(np.array([1.0, 2.0, 4.0, 8.0])[None], epochs[:, None])
    partial = trained < epochs[:, None]
    assert (acc[partial] < np.broadcast_to(acc[:, -1:], acc.shape)[partial]).all()  # stopped early: lower
    per_epoch = (sec[:, -1] - env.evaluator.overhead) / epochs
    np.testing.assert_allclose(sec, trained * per_epoch[:, None] + env.evaluator.overhead, rtol=1e-12)
    # a larger child learns more slowly: with the same epochs and final accuracy, a lower accuracy early on
    assert DEFAULT_CURVES.steps > 0 and DEFAULT_CURVES.capacity > 0
    c = env.evaluator.capacity(at[-1].flops)
    halvings = np.log2(epochs / np.minimum(1.0, epochs))
    gap = np.log((acc[:, -1] - 0.1) / (0.99 - acc[:, -1])) - np.log((acc[:, 0] - 0.1) / (0.99 - acc[:, 0]))
    np.testing.assert_allclose(gap, halvings * (DEFAULT_CURVES.steps + DEFAULT_CURVES.capacity * c), atol=1e-9)
    flat = _env(curves=CurveModel()).evaluate(A, seeds, levels=np.zeros(k, np.int64))
    assert np.array_equal(flat.accuracy, at[-1].accuracy)  # a zero model: every level is the final accuracy


def test_check_evaluator_passes_and_the_evaluator_pickles():
    for kw in ({}, {"noise_std": 0.02}, {"fidelity_epochs": (2, 8), "curves": {"steps": 0.7}}):
        ma2ml_env.check_evaluator(SurrogateEvaluator(**kw))
    env = _env(noise_std=0.02)
    A, seeds = _rows(env, 16)
    lv = np.arange(16) % 4
    clone = pickle.loads(pickle.dumps(env.evaluator))
    for got, want in zip(_fields(clone.evaluate(A, seeds, levels=lv)), _fields(env.evaluate(A, seeds, levels=lv))):
        assert np.array_equal(got, want)


def test_settings_are_checked_and_named_in_config():
    for bad in ({"steps": -0.1}, {"schedule": (1.0, 2.0)}, {"rate": 1.0}, "fast"):
        with pytest.raises(ValueError, match=r"CurveModel|curves must be"):
            SurrogateEvaluator(curves=bad)
    with pytest.raises(ValueError, match="fidelity_epochs"):
        SurrogateEvaluator(fidelity_epochs=(4, 2))
    plain = _env().config()["reward"]
    assert "curves" not in plain and "fidelity_epochs" not in plain  # recorded configs are unchanged
    cfg = _env(fidelity_epochs=(2, 8), curves={"steps": 0.5}).config()["reward"]
    assert cfg["fidelity_epochs"] == [2, 8] and cfg["curves"]["steps"] == 0.5
    env = _env(fidelity_epochs=(2, 8))
    A, seeds = _rows(env, 8)
    with pytest.raises(ValueError, match=r"levels must be indices 0\.\.1"):
        env.evaluate(A, seeds, levels=np.full(8, 2))


def test_the_default_curves_are_the_fit_to_the_recorded_digits_curves():
    spec = importlib.util.spec_from_file_location("ma2ml_surrogate_curves_bench", BENCH / "surrogate_curves.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    data = mod.load(BENCH / "results" / "digits-curves.json")
    env = _env()
    ev = env.evaluator
    floor, span = ev.task.floor, ev.task.ceil - ev.task.floor
    X, anchors, y, where = mod.design(ev, data)
    theta = mod.fit(X, anchors["surrogate"], y, floor, span)
    np.testing.assert_allclose(theta, DEFAULT_CURVES.coefficients(), atol=6e-4)
    # the script's model is what the evaluator computes at those (pipeline, level) pairs
    got = np.array([env.evaluate(data["flats"][r:r + 1], np.zeros(1, np.int64), levels=np.array([lv])).accuracy[0]
                    for r, lv in where])
    np.testing.assert_allclose(got, mod.predict(DEFAULT_CURVES.coefficients(), X, anchors["surrogate"], floor, span),
                               rtol=1e-12)
    # and it is far closer to the real accuracies below the full training than the final accuracy is
    assert np.sqrt(np.mean((got - y) ** 2)) < 0.8 * np.sqrt(np.mean((anchors["surrogate"] - y) ** 2))


def test_a_multi_fidelity_search_on_the_surrogate_is_deterministic():
    def search():
        env = ma2ml_env.parallel_env(reward="surrogate")
        res = run(RandomSearch(), env, budget=6, scheduler=Hyperband(), workers=2)
        return [(t.action, t.level, t.start, t.score, t.result.seconds, t.clock) for t in res.trials], res

    first, res = search()
    assert first == search()[0]
    assert {t.level for t in res.trials} > {3} and any(t.start >= 0 for t in res.trials)
    full = ma2ml_env.parallel_env(reward="surrogate").unwrapped
    tops = [t for t in res.trials if t.full]
    assert tops and all(t.score == full.evaluate(np.asarray([t.action]), np.array([t.seed])).score[0] for t in tops)
