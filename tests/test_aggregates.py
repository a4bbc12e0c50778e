"""The cross-task aggregates (IQM, optimality gap, probability of improvement, performance profiles,
stratified-bootstrap intervals, marl-eval JSON) against values computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents.aggregates import (
    check_marl_eval,
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


def test_statistics_of_a_stack_and_vectorized_intervals_match_the_loop():
    rng = np.random.default_rng(2)
    a, b = rng.uniform(size=(6, 4)), rng.uniform(size=(5, 4))
    stack = np.stack([a, a[::-1] * 0.5, np.ones_like(a)])  # three matrices
    np.testing.assert_allclose(iqm(stack), [iqm(m) for m in stack])
    np.testing.assert_allclose(optimality_gap(stack), [optimality_gap(m) for m in stack])
    np.testing.assert_allclose(probability_of_improvement(stack, np.stack([b] * 3)),
                               [probability_of_improvement(m, b) for m in stack])
    assert performance_profile(stack, [0.2, 0.9]).shape == (3, 2)
    # the same draws either way: the same interval, for this module's statistics (vectorized by default)
    for stat, args in ((iqm, (a,)), (optimality_gap, (a,)), (probability_of_improvement, (a, b))):
        assert interval(stat, *args, reps=300, seed=1) == interval(stat, *args, reps=300, seed=1, vectorized=False)
    lo, hi = interval(lambda s: performance_profile(s, [0.3, 0.6]), a, reps=300, vectorized=True)
    lo2, hi2 = interval(lambda s: performance_profile(s, [0.3, 0.6]), a, reps=300)
    np.testing.assert_array_equal(lo, lo2)
    np.testing.assert_array_equal(hi, hi2)
    (draws,) = stratified_resample(np.random.default_rng(0), a, reps=7)
    assert draws.shape == (7, 6, 4) and all(set(draws[:, :, j].ravel()) <= set(a[:, j]) for j in range(4))
    with pytest.raises(ValueError, match="one value per draw"):
        interval(lambda s: float(s.mean()), a, reps=10, vectorized=True)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="runs, tasks"):
        iqm([1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        iqm([[np.nan]])
    with pytest.raises(ValueError, match="same tasks"):
        probability_of_improvement(np.zeros((2, 2)), np.zeros((2, 3)))


def test_marl_eval_json_layout():
    best = {"ma2ml": [[0.1, 0.5, 0.7], [0.2, 0.2, 0.9]], "tpe": [[0.3, 0.3, 0.3], [0.0, 0.4, 0.8]]}
    runs = {"car": {a: [{"score": c, "regret": [1.0 - v for v in c]} for c in cs] for a, cs in best.items()}}
    out = marl_eval_json("ma2ml", runs, steps=[1, 3])
    assert json.loads(json.dumps(out)) == out  # serialisable as it is
    check_marl_eval(json.loads(json.dumps(out)))
    run = out["ma2ml"]["car"]["ma2ml"]["run_1"]
    assert run["step_0"] == {"step_count": 1, "score": [0.2], "regret": [pytest.approx(0.8)]}
    assert run["step_1"]["step_count"] == 3 and run["step_1"]["score"] == [0.9]
    assert run["absolute_metrics"] == {"score": [0.9], "regret": [pytest.approx(0.1)]}
    assert sorted(out["ma2ml"]["car"]["tpe"]) == ["run_0", "run_1"]
    with pytest.raises(ValueError, match="same runs"):
        marl_eval_json("e", {"t": {"a": [{"s": [1.0]}], "b": [{"s": [1.0]}, {"s": [1.0]}]}}, [1])
    with pytest.raises(ValueError, match="evaluations"):
        marl_eval_json("e", {"t": {"a": [{"s": [1.0]}]}}, [2])
    with pytest.raises(ValueError, match="steps must be"):
        marl_eval_json("e", {"t": {"a": [{"s": [1.0]}]}}, [0])


def _valid():
    run = {"step_0": {"step_count": 10, "score": [0.5]}, "step_1": {"step_count": 20, "score": [0.6]},
           "absolute_metrics": {"score": [0.6]}}
    return {"env": {t: {a: {"run_0": json.loads(json.dumps(run))} for a in ("x", "y")} for t in ("t1", "t2")}}


@pytest.mark.parametrize("break_it, message", [
    (lambda d: d["env"]["t2"].pop("y"), "same tasks"),
    (lambda d: d["env"]["t1"]["y"].update(run_1=d["env"]["t1"]["y"]["run_0"]), "same runs"),
    (lambda d: d["env"]["t1"]["x"]["run_0"].pop("step_1"), "differ from those of"),
    (lambda d: d["env"]["t1"]["x"]["run_0"]["step_1"].update(step_count=30), "differ from those of"),
    (lambda d: d["env"]["t2"]["y"]["run_0"]["step_0"].update(regret=[0.1]), "differ from those of"),
    (lambda d: d["env"]["t1"]["x"]["run_0"].pop("absolute_metrics"), "no absolute_metrics"),
    (lambda d: d["env"]["t1"]["x"]["run_0"]["step_0"].update(step_count=10.0), "step_count must be an integer"),
    (lambda d: d["env"]["t1"]["x"]["run_0"]["step_0"].update(score=0.5), "non-empty list of finite numbers"),
    (lambda d: d["env"]["t1"]["x"]["run_0"]["step_0"].update(score=[float("nan")]), "finite numbers"),
    (lambda d: d["env"]["t1"]["x"]["run_0"].update(final={}), "neither step_<k> nor absolute_metrics"),
    (lambda d: d["env"].clear(), "non-empty object"),
])
def test_check_marl_eval_names_what_is_wrong(break_it, message):
    check_marl_eval(_valid())
    data = _valid()
    break_it(data)
    with pytest.raises(ValueError, match=message):
        check_marl_eval(data)
