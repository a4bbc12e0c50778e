"""The evaluator contract: one method on flat batches, BatchResult, PipelineEvaluator, CostBudget, streaming,
guarded failures, config() and the shipped conformance check :func:`ma2ml_env.check_evaluator`."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest

import ma2ml_env
from ma2ml_env import (
    CostBudget,
    EvalResult,
    Evaluator,
    EvaluatorCheckError,
    Fidelity,
    PipelineEvaluator,
    check_evaluator,
)
from ma2ml_env.pipeline import Architecture, Pipeline, Stage
from ma2ml_env.rewards.surrogate import SurrogateEvaluator
from ma2ml_env.rewards.tabular import TabularEvaluator, benchmark_env, benchmark_modules
from tests.conftest import LCBENCH

from .test_tabular import _tiny_table


class Const(PipelineEvaluator):
    """A minimal user backend: only evaluate_pipeline()."""

    name = "const"

    def __init__(self, value: float = 0.5) -> None:
        self.value = value

    def evaluate_pipeline(self, pipeline, seed):
        return EvalResult(score=self.value + 1e-3 * (seed % 7), accuracy=self.value)

    def config(self):
        return {**super().config(), "value": self.value}


class Raises(Const):
    name = "raises"

    def evaluate_pipeline(self, pipeline, seed):
        raise RuntimeError("the cluster is down")


class BatchRaises(Evaluator):
    """A batch backend (the one method) whose whole call fails."""

    name = "batch-raises"

    def evaluate(self, actions, seeds, on_result=None):
        raise RuntimeError("the cluster is down")


class NaNScore(Const):
    name = "nan"

    def evaluate_pipeline(self, pipeline, seed):
        return EvalResult(score=math.nan)


class FailsOnSomeSeeds(Const):
    """Raises for odd seeds only: one bad pipeline must not take the others of its batch with it."""

    def evaluate_pipeline(self, pipeline, seed):
        if seed % 2:
            raise ValueError("odd seed")
        return super().evaluate_pipeline(pipeline, seed)


# -- the contract: one method ---------------------------------------------------------------------------------
_GONE = ("evaluate_streaming", "evaluate_actions", "results_from_arrays", "evaluate_one_tuple", "step_kernel",
         "vectorised")


def test_the_contract_is_one_method():
    from ma2ml_env.rewards.parallel import BACKENDS
    from ma2ml_env.rewards.train import TrainEvaluator

    for cls in (Evaluator, PipelineEvaluator, SurrogateEvaluator, TabularEvaluator, TrainEvaluator,
                *BACKENDS.values()):
        assert not [n for n in _GONE if hasattr(cls, n)], cls
    with pytest.raises(NotImplementedError, match="must implement evaluate\\(actions, seeds"):
        Evaluator().evaluate(np.zeros((1, 3), np.int64), np.zeros(1, np.int64))
    with pytest.raises(NotImplementedError, match="must implement evaluate_pipeline"):
        PipelineEvaluator().evaluate_pipeline(Pipeline(), 0)
    ev = Const()
    assert ev.deterministic is True and ev.wall_clock_seconds is False and ev.device is None
    assert ev.config() == {"class": "tests.test_evaluator_contract.Const", "value": 0.5}


def test_batch_result_is_arrays_with_one_result_per_row():
    rows = [EvalResult(0.5, accuracy=0.5, flops=1.0, params=3.0, seconds=0.1, info={"a": 1}),
            EvalResult(0.0, "over_budget", accuracy=0.7, flops=2.0, params=4.0, seconds=0.2),
            EvalResult(-1.0, "error", info={"error": "x"})]
    b = ma2ml_env.BatchResult.from_results(rows)
    assert len(b) == 3 and list(b) == rows and b[1] == rows[1] and b[-1] == rows[2]
    assert b.status.tolist() == [0, 1, 5] and b.statuses() == ["ok", "over_budget", "error"]
    assert b.score.dtype == np.float64 and np.isnan(b.accuracy[2]) and b.info[0] == {"a": 1}
    assert len(ma2ml_env.BatchResult.from_results([])) == 0
    with pytest.raises(ValueError, match="score must be finite, got nan in row 1"):
        ma2ml_env.BatchResult([0.1, math.nan], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0], ({}, {}))
    with pytest.raises(ValueError, match="codes into STATUSES"):
        ma2ml_env.BatchResult([0.1], [9], [0], [0], [0], [0], ({},))
    with pytest.raises(ValueError, match="1-d array of 1 values"):
        ma2ml_env.BatchResult([0.1], [0], [0, 1], [0], [0], [0], ({},))
    with pytest.raises(ValueError, match="one mapping per row"):
        ma2ml_env.BatchResult([0.1], [0], [0], [0], [0], [0], ())
    with pytest.raises(TypeError, match="EvalResult objects, got float"):
        ma2ml_env.BatchResult.from_results([0.5])


def test_the_env_makes_one_evaluator_call_per_step_and_per_evaluate_and_builds_the_observation():
    calls = []

    class Counting(Const):
        def evaluate(self, actions, seeds, on_result=None):
            calls.append(len(actions))
            return super().evaluate(actions, seeds, on_result)

    env = ma2ml_env.parallel_env(reward=Counting(), pipelines_per_episode=3)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for t in (1, 2):
        flat = env.space.codec.sample(rng)
        obs, rew, *_ = env.step(env.space.codec.decode(flat))
        assert 0.5 <= rew["aug"] < 0.51
        scale = (1.0 / np.maximum(env.space.joint_nvec - 1, 1)).astype(np.float32)
        assert np.array_equal(obs["aug"][3:], flat.astype(np.float32) * scale)  # the env's own observation
        assert obs["aug"][0] == np.float32(t / 3) and obs["aug"][1] == np.float32(rew["aug"])
    env.evaluate(env.space.codec.sample(rng, 4))
    assert calls == [1, 1, 4] and env.evaluations == 6


# -- budgets in one place ----------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [
    CostBudget(), CostBudget(max_flops=5e6), CostBudget(max_params=4e4, penalty_score=0.1),
    CostBudget(max_flops=5e6, max_params=4e4, mode="soft", weight=-0.3),
])
def test_cost_budget_scalar_and_vectorised_rules_agree(budget):
    rng = np.random.default_rng(1)
    acc, flops, params = rng.random(200), rng.uniform(1e6, 1e7, 200), rng.uniform(1e4, 1e5, 200)
    score, over = budget.apply_arrays(acc, flops, params)
    for i in range(200):
        s, status, info = budget.apply(float(acc[i]), float(flops[i]), float(params[i]))
        assert s == pytest.approx(score[i], rel=1e-12) and (status == "over_budget") == over[i]
        if budget.mode == "soft" and budget.active:
            assert (
                info["budget_factor"] == budget.factor(flops[i], params[i])
                and s == acc[i] * info["budget_factor"]
            )
        elif status == "over_budget":
            assert s == budget.penalty_score and info["budget"]["max_flops"] == budget.max_flops
        else:
            assert s == acc[i] and info == {}
    assert over.any() == (budget.active and budget.mode == "hard")


_BAD_BUDGETS = [
    (5e6, r"budget must be a ma2ml_env.CostBudget, a dict of its fields \[.*\] or None, got float 5000000.0"),
    ("max_flops=5e6", r"budget must be a ma2ml_env.CostBudget, a dict .* got str 'max_flops=5e6'"),
    ({"max_flops": -1}, r"CostBudget.max_flops must be > 0 or None, got -1"),
    ({"max_flops": 0.0, "mode": "soft"}, r"CostBudget.max_flops must be > 0 or None, got 0.0"),
    ({"max_flop": 5e6}, r"unknown CostBudget field\(s\) \['max_flop'\]; the fields are \['max_flops', "),
    ({"max_flops": 5e6, "mode": "medium"}, r"CostBudget.mode must be 'hard' or 'soft', got 'medium'"),
    ({"max_params": "4e4"}, r"CostBudget.max_params must be a number or None, got str '4e4'"),
    ({"max_flops": True}, r"CostBudget.max_flops must be a number or None, got bool True"),
    ({"max_flops": float("nan")}, r"CostBudget.max_flops must be a number, got nan"),
    ({"max_flops": 5e6, "weight": 0.5}, r"CostBudget.weight must be <= 0 \(a penalty\), got 0.5"),
]


@pytest.mark.parametrize("budget, message", _BAD_BUDGETS, ids=[m.split(" ")[0] for _, m in _BAD_BUDGETS])
def test_a_bad_budget_is_the_same_value_error_on_every_backend(budget, message):
    """The same mistake, the same ValueError and message: surrogate, training, through the env, and
    CostBudget.from_dict / CostBudget(**fields) directly."""
    from ma2ml_env.rewards.train import TrainEvaluator

    makers = [lambda: SurrogateEvaluator(budget=budget), lambda: TrainEvaluator(device="cpu", budget=budget),
              lambda: ma2ml_env.parallel_env(reward="surrogate", reward_kwargs={"budget": budget}),
              lambda: ma2ml_env.parallel_env(reward="train",
                                             reward_kwargs={"device": "cpu", "budget": budget})]
    if isinstance(budget, dict):
        makers.append(lambda: CostBudget.from_dict(budget))
    messages = set()
    for make in makers:
        with pytest.raises(ValueError, match=message) as err:
            make()
        messages.add(str(err.value))
    assert len(messages) == 1, messages


def test_a_budget_as_a_dict_is_the_budget_on_every_backend():
    """JSON in, the same budget out: the dict of fields builds the CostBudget its config() describes."""
    from ma2ml_env.rewards.train import TrainEvaluator

    fields = json.loads('{"max_flops": 5000000, "mode": "soft", "weight": -0.3}')
    want = CostBudget(max_flops=5e6, mode="soft", weight=-0.3)
    assert CostBudget.from_dict(fields) == want and CostBudget.from_dict(want.config()) == want
    assert SurrogateEvaluator(budget=fields).budget == want
    assert TrainEvaluator(device="cpu", budget=fields).budget == want
    a = ma2ml_env.parallel_env(reward="surrogate", reward_kwargs={"budget": fields})
    b = ma2ml_env.parallel_env(reward="surrogate", reward_kwargs={"budget": want})
    assert a.config() == b.config()
    acts = a.space.codec.sample(np.random.default_rng(0), 20)
    assert list(a.evaluate(acts, seeds=list(range(20)))) == list(b.evaluate(acts, seeds=list(range(20))))
    # a hard budget from JSON on the training backend: every child over it, none trained
    env = ma2ml_env.parallel_env(reward="train", reward_kwargs={"device": "cpu", "max_train": 64,
                                                                "budget": {"max_flops": 1}})
    res = env.evaluate(acts[:2], seeds=[0, 1])
    assert [r.status for r in res] == ["over_budget"] * 2 and all(r.score == 0.0 for r in res)
    assert env.config()["reward"]["budget"] == CostBudget(max_flops=1).config()


# -- streaming and failures ---------------------------------------------------------------------------------
@pytest.mark.parametrize("reward", ["surrogate", "const"])
def test_env_evaluate_reports_each_result_once_as_it_becomes_final(reward):
    env = ma2ml_env.parallel_env(reward=Const() if reward == "const" else reward)
    actions = env.space.codec.sample(np.random.default_rng(2), 5)
    seen = []
    results = env.evaluate(actions, seeds=[1, 2, 3, 4, 5], on_result=lambda i, r: seen.append((i, r)))
    assert [i for i, _ in seen] == [0, 1, 2, 3, 4]
    assert [r for _, r in seen] == list(results) == list(env.evaluate(actions, seeds=[1, 2, 3, 4, 5]))


def test_tabular_env_streams_the_batch_at_once():
    env = benchmark_env("hpobench/car", table=_tiny_table())
    actions = env.space.codec.sample(np.random.default_rng(0), 6)
    seen = []
    results = env.evaluate(actions, seeds=list(range(6)), on_result=lambda i, r: seen.append(i))
    assert seen == list(range(6)) and len(results) == 6
    got = {}
    assert list(env.evaluator.evaluate(actions, np.arange(6), got.__setitem__)) == list(results)
    assert [got[i] for i in range(6)] == list(results)


@pytest.mark.parametrize("bad", [Raises, NaNScore, BatchRaises])
def test_a_failing_user_evaluator_gives_error_results_in_evaluate_and_step(bad):
    env = ma2ml_env.parallel_env(reward=bad(), pipelines_per_episode=2)
    actions = env.space.codec.sample(np.random.default_rng(3), 3)
    results = env.evaluate(actions, seeds=[1, 2, 3])
    assert [r.status for r in results] == ["error"] * 3 and all(r.score == 0.0 for r in results)
    assert ("finite" if bad is NaNScore else "cluster is down") in results[0].info["error"]
    env.reset(seed=0)
    _, rew, terms, _, infos = env.step(env.space.codec.decode(actions[0]))
    assert ma2ml_env.STATUSES[infos["aug"]["status"]] == "error" and rew["nas"] == 0.0 and not terms["hpo"]
    assert infos["aug"]["status"] == ma2ml_env.STATUS_CODES["error"] == 5
    # an error result measured nothing: -1.0, never NaN, in the infos
    assert [infos["aug"][k] for k in ("accuracy", "flops", "params")] == [-1.0, -1.0, -1.0]
    assert env.last_result.status == "error" and env.evaluations == 4


def test_one_failing_pipeline_does_not_fail_its_batch():
    env = ma2ml_env.parallel_env(reward=FailsOnSomeSeeds())
    actions = env.space.codec.sample(np.random.default_rng(4), 4)
    results = env.evaluate(actions, seeds=[2, 3, 4, 5])
    assert [r.status for r in results] == ["ok", "error", "ok", "error"]


# -- config(): what a durable store records -----------------------------------------------------------------
def _cfg(**kw):
    return ma2ml_env.parallel_env(**kw).config()


def test_env_config_is_json_and_names_modules_episode_base_and_reward():
    cfg = _cfg(reward="surrogate", reward_kwargs={"noise_std": 0.01}, pipelines_per_episode=3)
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg["modules"] == ["aug", "nas", "hpo"] and cfg["pipelines_per_episode"] == 3
    assert cfg["base_pipeline"] is None
    r = cfg["reward"]
    assert r["class"] == "ma2ml_env.rewards.surrogate.SurrogateEvaluator" and r["noise_std"] == 0.01
    assert r["task"]["a_c"] == 1.258 and r["budget"]["max_flops"] is None


def test_equal_setups_give_equal_configs_and_different_rewards_different_ones(tmp_path):
    same = [_cfg(reward="surrogate"), _cfg(reward="surrogate", backend="serial"),
            _cfg(reward="surrogate", reward_kwargs={"task": "default", "noise_std": 0.0})]
    assert all(c == same[0] for c in same)
    assert _cfg(reward="surrogate", reward_kwargs={"task": 7}) == _cfg(
        reward="surrogate", reward_kwargs={"task": ma2ml_env.rewards.surrogate.SurrogateTask.random(7)})
    train = {"reward": "train", "reward_kwargs": {"device": "cpu", "max_train": 100}}
    variants = [
        _cfg(reward="surrogate"),
        _cfg(reward="surrogate", reward_kwargs={"task": 3}),
        _cfg(reward="surrogate", reward_kwargs={"noise_std": 0.02}),
        _cfg(reward="surrogate", reward_kwargs={"budget": CostBudget(max_flops=5e6)}),
        _cfg(reward="surrogate", reward_kwargs={"budget": CostBudget(max_flops=6e6)}),
        _cfg(reward="surrogate", reward_kwargs={"budget": CostBudget(max_flops=5e6, mode="soft")}),
        _cfg(reward="surrogate", pipelines_per_episode=2),
        _cfg(reward="surrogate", modules=("aug", "hpo")),
        _cfg(reward="surrogate", base_pipeline=Pipeline().with_train(epochs=2)),
        _cfg(**train),
        _cfg(reward="train", reward_kwargs={"device": "cpu", "max_train": 200}),
        _cfg(reward="train", reward_kwargs={"device": "cpu", "max_train": 100, "epoch_scale": 1.0}),
        _cfg(reward="train", reward_kwargs={"device": "cpu", "max_train": 100, "dataset": "synthetic"}),
        _cfg(reward="train", reward_kwargs={"device": "cpu", "max_train": 100, "time_limit": 60}),
        _cfg(
            reward="train",
            reward_kwargs={"device": "cpu", "max_train": 100, "budget": CostBudget(max_params=1e5)},
        ),
        _cfg(reward=Const(0.5)),
        _cfg(reward=Const(0.6)),
        benchmark_env("hpobench/car", table=_tiny_table()).config(),
        benchmark_env("hpobench/car", table=_tiny_table(), seed_mean=True).config(),
    ]
    texts = [json.dumps(c, sort_keys=True) for c in variants]
    assert len(set(texts)) == len(texts)
    # execution settings are not part of it
    assert _cfg(**train) == _cfg(
        reward="train", reward_kwargs={"device": "cpu", "max_train": 100, "num_threads": 2}
    )
    other = _tiny_table()
    other.score[0, 0] = 0.99
    assert benchmark_env("hpobench/car", table=other).config() != variants[-2]
    assert benchmark_env("hpobench/car", table=_tiny_table()).config() == variants[-2]


def test_user_module_objects_are_named_by_class_and_decisions():
    from ma2ml_env import ArchitectureModule

    cfg = _cfg(reward="surrogate", modules=("aug", ArchitectureModule(), "hpo"))
    assert cfg == _cfg(reward="surrogate")  # a default built-in object is the built-in
    tab = benchmark_env("hpobench/car", table=_tiny_table()).config()
    assert tab["modules"][0]["class"] == "ma2ml_env.rewards.tabular.TabularModule"
    assert tab["modules"][0]["decisions"]["depth"] == [1, 2]
    assert tab["reward"]["benchmark"] == "hpobench/car" and "sha256" in tab["reward"]["table"]


def test_matrix_games_have_a_config_too():
    from ma2ml_env.matrix_games import matrix_game

    a, b = matrix_game("climbing"), matrix_game("penalty", k=-50.0)
    assert json.loads(json.dumps(a.config())) == a.config() != b.config()
    assert a.config() == matrix_game("climbing").config()


# -- check_evaluator -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"task": 5, "noise_std": 0.03}, {"budget": CostBudget(max_flops=5e6)},
                                    {"budget": CostBudget(max_flops=5e6, mode="soft")}])
def test_check_evaluator_passes_the_surrogate(kwargs):
    check_evaluator(SurrogateEvaluator(**kwargs), num_pipelines=16)
    check_evaluator(SurrogateEvaluator(**kwargs), modules=("hpo", "aug"))


def test_check_evaluator_passes_the_tabular_evaluator():
    table = _tiny_table()
    for seed_mean in (False, True):
        ev = TabularEvaluator("hpobench/car", seed_mean=seed_mean, table=table)
        check_evaluator(ev, modules=benchmark_modules("hpobench/car", table), num_pipelines=8)


def test_check_evaluator_passes_the_training_evaluator():
    from ma2ml_env.rewards.train import TrainEvaluator

    tiny = Architecture(resolution=8, stem_width=8, stages=(Stage(3, 1, 8, 1, 1),), head_width=16)
    ev = TrainEvaluator(device="cpu", max_train=64, epoch_scale=0.25, bn_recalibration=0)
    check_evaluator(ev, modules=("hpo",), base=Pipeline(arch=tiny), num_pipelines=2)
    check_evaluator(Const())


class _Count(Evaluator):
    name = "count"

    def evaluate(self, actions, seeds, on_result=None):
        return ma2ml_env.BatchResult.from_results([EvalResult(0.5)])


class _Type(Evaluator):
    name = "type"

    def evaluate(self, actions, seeds, on_result=None):
        return [0.5 for _ in actions]


class _FailureScore(Const):
    def evaluate_pipeline(self, pipeline, seed):
        return EvalResult(0.3, "error")


class _NonDeterministic(Const):
    calls = 0

    def evaluate_pipeline(self, pipeline, seed):
        self.calls += 1
        return EvalResult(self.calls / 100)


class _Unpicklable(Const):
    def __init__(self):
        super().__init__()
        self.lock = __import__("threading").Lock()


class _ConfigTuple(Const):
    def config(self):
        return {"value": (1, 2)}


class _ConfigObject(Const):
    def config(self):
        return {"value": object()}


class _StreamOnce(Const):
    def evaluate(self, actions, seeds, on_result=None):
        out = super().evaluate(actions, seeds)
        if on_result is not None:
            on_result(0, out[0])
        return out


class _ReportsOther(Const):
    def evaluate(self, actions, seeds, on_result=None):
        out = super().evaluate(actions, seeds)
        for i in range(len(out)):
            if on_result is not None:
                on_result(i, EvalResult(0.123))
        return out


class _OneRowPath(Const):
    """A private single-row path that disagrees with the batch."""

    def evaluate(self, actions, seeds, on_result=None):
        if len(actions) == 1:
            return ma2ml_env.BatchResult.from_results([EvalResult(0.1)])
        return super().evaluate(actions, seeds, on_result)


_BROKEN = {"raises": BatchRaises, "count": _Count, "type": _Type, "failure_score": _FailureScore,
           "nondeterministic": _NonDeterministic, "unpicklable": _Unpicklable, "config": _ConfigTuple,
           "config_json": _ConfigObject, "stream": _StreamOnce, "reported": _ReportsOther,
           "one_row": _OneRowPath}


def _broken(kind):
    return _BROKEN[kind]()


@pytest.mark.parametrize("kind, match", [
    ("raises", "raised RuntimeError: the cluster is down"),
    ("count", "BatchResult of one row per joint action \\(3"),
    ("type", "must return a ma2ml_env.BatchResult"),
    ("failure_score", "must score failure_score"),
    ("nondeterministic", "same seeds"),
    ("unpicklable", "cannot be pickled before bind"),
    ("config", "JSON-native"),
    ("config_json", "JSON-serialisable"),
    ("stream", "exactly once per row"),
    ("reported", "results reported to on_result disagrees"),
    ("one_row", "one row at a time disagrees"),
])
def test_check_evaluator_names_what_is_broken(kind, match):
    with pytest.raises(EvaluatorCheckError, match=match):
        check_evaluator(_broken(kind), num_pipelines=3)


def test_check_evaluator_refuses_non_evaluators():
    with pytest.raises(EvaluatorCheckError, match="not an Evaluator"):
        check_evaluator(object())
    assert pickle.loads(pickle.dumps(EvaluatorCheckError("x"))).args == ("x",)


# -- check_evaluator and fidelity levels ------------------------------------------------------------------------


class _AcceptsBadLevels(Evaluator):
    """Declares levels but never checks the request."""

    name = "accepts-bad-levels"
    fidelity = Fidelity((1, 2))

    def evaluate(self, actions, seeds, on_result=None, *, levels=None, start=None):
        out = ma2ml_env.BatchResult.from_results([EvalResult(0.5) for _ in actions])
        for i in range(len(out) if on_result is not None else 0):
            on_result(i, out[i])
        return out


def test_check_evaluator_checks_the_fidelity_rules():
    from tests._toys import ToyFidelityEvaluator

    check_evaluator(ToyFidelityEvaluator(), num_pipelines=4)
    with pytest.raises(EvaluatorCheckError, match=r"continuing from level 0 .* disagrees"):
        check_evaluator(ToyFidelityEvaluator(continue_bias=0.1), num_pipelines=3)
    with pytest.raises(EvaluatorCheckError, match=r"costs 2\.5 seconds; it must cost .* 3\.0"):
        check_evaluator(ToyFidelityEvaluator(cost_bias=0.5), num_pipelines=3)
    wall = ToyFidelityEvaluator(cost_bias=0.5)
    wall.wall_clock_seconds = True  # measured seconds: the cost rule does not apply
    check_evaluator(wall, num_pipelines=3)
    with pytest.raises(EvaluatorCheckError, match="a level above the last \\(1\\) must raise ValueError"):
        check_evaluator(_AcceptsBadLevels(), num_pipelines=3)


def test_check_evaluator_passes_the_learning_curve_evaluator():  # the full tables, or the shipped extract
    from ma2ml_env.rewards.learning_curves import LearningCurveEvaluator, learning_curve_tasks

    task = learning_curve_tasks(LCBENCH)[0]
    ev = LearningCurveEvaluator(task, LCBENCH)
    check_evaluator(ev, modules=ev.modules, num_pipelines=8)
