"""The cross-task aggregates (IQM, optimality gap, probability of improvement, performance profiles,
stratified-bootstrap intervals, marl-eval JSON) against values computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents.aggregates import (
    interval,
    iqm,
    marl_eval_json,
    optimality_gap,
    performance_profile,
    probability_of_improvement,
    stratified_resample,
)


def test_iqm_is_the_mean_of_the_middle_half():
    # 8 scores: the middle half is 3, 4, 5, 6
    assert iqm(np.array([[1, 2, 3, 4], [5, 6, 7, 80]])) == pytest.approx(4.5)
    assert iqm([[0.3]]) == pytest.approx(0.3)


def test_optimality_gap_counts_only_shortfalls():
    assert optimality_gap([[0.5, 1.2], [0.9, 1.0]]) == pytest.approx((0.5 + 0 + 0.1 + 0) / 4)
    assert optimality_gap([[0.5, 0.7]], gamma=0.6) == pytest.approx(0.05)


def test_probability_of_improvement_by_hand():
    # task 0: x = (1, 2), y = (1.5, 0): pairs x>y: (1,0) (2,1.5) (2,0) -> 3/4
    # task 1: x = (1, 1), y = (1, 0): ties count 1/2: (1=1 -> .5) (1>0) (1=1 -> .5) (1>0) -> 3/4
    x = np.array([[1.0, 1.0], [2.0, 1.0]])
    y = np.array([[1.5, 1.0], [0.0, 0.0]])
    assert probability_of_improvement(x, y) == pytest.approx(0.75)
    assert probability_of_improvement(y, x) == pytest.approx(0.25)
    assert probability_of_improvement(x, x) == pytest.approx(0.5)


def test_performance_profile_is_the_fraction_above_each_threshold():
    prof = performance_profile([[0.2, 0.6, 0.9]], [0.0, 0.5, 0.6, 0.95])
    np.testing.assert_allclose(prof, [1.0, 2 / 3, 1 / 3, 0.0])


def test_stratified_resample_keeps_each_task_in_its_column():
    x = np.array([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0]])
    (draw,) = stratified_resample(np.random.default_rng(0), x)
    assert draw.shape == x.shape
    assert set(draw[:, 0]) <= {0.0, 1.0, 2.0} and set(draw[:, 1]) <= {10.0, 11.0, 12.0}


def test_interval_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    a = rng.uniform(size=(10, 5))
    lo, hi = interval(iqm, a, reps=300, seed=3)
    assert lo < iqm(a) < hi
    assert (lo, hi) == interval(iqm, a, reps=300, seed=3)
    assert interval(iqm, np.full((4, 3), 0.7), reps=50) == (pytest.approx(0.7), pytest.approx(0.7))
    lo2, hi2 = interval(probability_of_improvement, a + 0.5, a, reps=200)
    assert 0.5 < lo2 <= hi2 <= 1.0
    plo, phi = interval(lambda s: performance_profile(s, [0.25, 0.5]), a, reps=200)
    assert plo.shape == (2,) and (plo <= phi).all()


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="runs, tasks"):
        iqm([1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        iqm([[np.nan]])
    with pytest.raises(ValueError, match="same tasks"):
        probability_of_improvement(np.zeros((2, 2)), np.zeros((2, 3)))


def test_marl_eval_json_layout():
    curves = {"car": {"ma2ml": [[0.1, 0.5, 0.7], [0.2, 0.2, 0.9]], "tpe": [[0.3, 0.3, 0.3], [0.0, 0.4, 0.8]]}}
    out = marl_eval_json("ma2ml", curves, steps=[1, 3], metrics={"score": lambda v: v,
                                                                  "regret": lambda v: 1.0 - v})
    json.dumps(out)  # serialisable
    run = out["ma2ml"]["car"]["ma2ml"]["run_1"]
    assert run["step_0"] == {"step_count": 1, "score": [0.2], "regret": [pytest.approx(0.8)]}
    assert run["step_1"]["step_count"] == 3 and run["step_1"]["score"] == [0.9]
    assert run["absolute_metrics"] == {"score": [0.9], "regret": [pytest.approx(0.1)]}
    assert sorted(out["ma2ml"]["car"]["tpe"]) == ["run_0", "run_1"]
    with pytest.raises(ValueError, match="same number of runs"):
        marl_eval_json("e", {"t": {"a": [[1.0]], "b": [[1.0], [1.0]]}}, [1], {"s": lambda v: v})
    with pytest.raises(ValueError, match="evaluations"):
        marl_eval_json("e", {"t": {"a": [[1.0]]}}, [2], {"s": lambda v: v})
