"""The evaluator contract: the base class's declared fast paths, CostBudget, streaming, guarded failures,
config() and the shipped conformance check :func:`ma2ml_env.check_evaluator`."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest

import ma2ml_env
from ma2ml_env import CostBudget, EvalResult, Evaluator, EvaluatorCheckError, check_evaluator
from ma2ml_env.pipeline import Architecture, Pipeline, Stage
from ma2ml_env.rewards.surrogate import SurrogateEvaluator
from ma2ml_env.rewards.tabular import TabularEvaluator, benchmark_env, benchmark_modules

from .test_tabular import _tiny_table


class Const(Evaluator):
    """A minimal user backend: only evaluate()."""

    name = "const"

    def __init__(self, value: float = 0.5) -> None:
        self.value = value

    def evaluate(self, pipelines, seeds):
        return [EvalResult(score=self.value + 1e-3 * (s % 7), accuracy=self.value) for s in seeds]

    def config(self):
        return {**super().config(), "value": self.value}


class Raises(Const):
    name = "raises"

    def evaluate(self, pipelines, seeds):
        raise RuntimeError("the cluster is down")


class NaNScore(Const):
    name = "nan"

    def evaluate(self, pipelines, seeds):
        return [EvalResult(score=math.nan) for _ in pipelines]


class FailsOnSomeSeeds(Const):
    """Raises for odd seeds only: one bad pipeline must not take the others of its batch with it."""

    def evaluate(self, pipelines, seeds):
        if any(s % 2 for s in seeds):
            raise ValueError("odd seed")
        return super().evaluate(pipelines, seeds)


# -- the base class declares every optional method --------------------------------------------------------
def test_a_new_backend_learns_every_fast_path_from_the_base_class():
    ev = Const()
    assert ev.vectorised is False and ev.deterministic is True
    assert ev.evaluate_one_tuple([0, 1], 3) is None and ev.step_kernel() is None
    with pytest.raises(NotImplementedError, match="not vectorised"):
        ev.evaluate_actions(np.zeros((1, 3), np.int64))
    out = {
        "score": np.array([0.5, 0.0]),
        "accuracy": np.array([0.5, 0.7]),
        "flops": np.array([1.0, 2.0]),
        "params": np.array([3.0, 4.0]),
        "seconds": np.array([0.1, 0.2]),
        "over_budget": np.array([False, True]),
    }
    r = ev.results_from_arrays(out)
    assert [x.status for x in r] == ["ok", "over_budget"] and r[1].accuracy == 0.7 and r[0].params == 3.0
    assert ev.config() == {"class": "tests.test_evaluator_contract.Const", "value": 0.5}
    for cls in (SurrogateEvaluator, TabularEvaluator):
        assert cls.vectorised is True


def test_the_env_uses_only_declared_methods():
    """A backend with no fast path: step and evaluate go through evaluate_streaming, one pipeline each."""
    calls = []

    class Counting(Const):
        def evaluate_streaming(self, pipelines, seeds, on_result):
            calls.append(len(pipelines))
            return super().evaluate_streaming(pipelines, seeds, on_result)

    env = ma2ml_env.parallel_env(reward=Counting(), pipelines_per_episode=3)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(2):
        _, rew, *_ = env.step(env.space.unflatten(env.space.sample(rng)))
        assert 0.5 <= rew["aug"] < 0.51
    env.evaluate([env.space.unflatten(f) for f in env.space.sample(rng, 4)])
    assert calls == [1, 1, 4] and env.evaluations == 6
    assert env._init_kernel() is None and env._one is False


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
    acts = [a.space.unflatten(f) for f in a.space.sample(np.random.default_rng(0), 20)]
    assert a.evaluate(acts, seeds=list(range(20))) == b.evaluate(acts, seeds=list(range(20)))
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
    actions = [env.space.unflatten(f) for f in env.space.sample(np.random.default_rng(2), 5)]
    seen = []
    results = env.evaluate(actions, seeds=[1, 2, 3, 4, 5], on_result=lambda i, r: seen.append((i, r)))
    assert [i for i, _ in seen] == [0, 1, 2, 3, 4]
    assert [r for _, r in seen] == results == env.evaluate(actions, seeds=[1, 2, 3, 4, 5])


def test_tabular_env_streams_the_batch_at_once():
    env = benchmark_env("hpobench/car", table=_tiny_table())
    actions = [env.space.unflatten(f) for f in env.space.sample(np.random.default_rng(0), 6)]
    seen = []
    results = env.evaluate(actions, seeds=list(range(6)), on_result=lambda i, r: seen.append(i))
    assert seen == list(range(6)) and len(results) == 6
    ev = env.evaluator
    pipes = [env.space.decode(env.space.flatten(a)) for a in actions]
    got = {}
    assert ev.evaluate_streaming(pipes, list(range(6)), got.__setitem__) == results
    assert [got[i] for i in range(6)] == results


@pytest.mark.parametrize("bad", [Raises, NaNScore])
def test_a_failing_user_evaluator_gives_error_results_in_evaluate_and_step(bad):
    env = ma2ml_env.parallel_env(reward=bad(), pipelines_per_episode=2)
    actions = [env.space.unflatten(f) for f in env.space.sample(np.random.default_rng(3), 3)]
    results = env.evaluate(actions, seeds=[1, 2, 3])
    assert [r.status for r in results] == ["error"] * 3 and all(r.score == 0.0 for r in results)
    assert ("cluster is down" if bad is Raises else "finite") in results[0].info["error"]
    env.reset(seed=0)
    _, rew, terms, _, infos = env.step(actions[0])
    assert ma2ml_env.STATUSES[infos["aug"]["status"]] == "error" and rew["nas"] == 0.0 and not terms["hpo"]
    assert infos["aug"]["status"] == ma2ml_env.STATUS_CODES["error"] == 5
    # an error result measured nothing: -1.0, never NaN, in the infos
    assert [infos["aug"][k] for k in ("accuracy", "flops", "params")] == [-1.0, -1.0, -1.0]
    assert env.last_result.status == "error" and env.evaluations == 4


def test_one_failing_pipeline_does_not_fail_its_batch():
    env = ma2ml_env.parallel_env(reward=FailsOnSomeSeeds())
    actions = [env.space.unflatten(f) for f in env.space.sample(np.random.default_rng(4), 4)]
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


class _Count(Const):
    def evaluate(self, pipelines, seeds):
        return [EvalResult(0.5)]


class _Type(Const):
    def evaluate(self, pipelines, seeds):
        return [0.5 for _ in pipelines]


class _FailureScore(Const):
    def evaluate(self, pipelines, seeds):
        return [EvalResult(0.3, "error") for _ in pipelines]


class _NonDeterministic(Const):
    calls = 0

    def evaluate(self, pipelines, seeds):
        self.calls += 1
        return [EvalResult(self.calls / 100) for _ in pipelines]


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
    def evaluate_streaming(self, pipelines, seeds, on_result):
        out = self.evaluate(pipelines, seeds)
        on_result(0, out[0])
        return out


class _Vectorised(Const):
    vectorised = True

    def evaluate_actions(self, flat_actions, seeds=None):
        k = len(flat_actions)
        return {
            "score": np.full(k, 0.9),
            "accuracy": np.zeros(k),
            "flops": np.zeros(k),
            "params": np.zeros(k),
            "seconds": np.zeros(k),
            "over_budget": np.zeros(k, bool),
        }


class _Scalar(Const):
    def evaluate_one_tuple(self, x, seed=None):
        return 0.1, "ok", 0.1, 0.0, 0.0, 0.0


_BROKEN = {"raises": Raises, "count": _Count, "type": _Type, "failure_score": _FailureScore,
           "nondeterministic": _NonDeterministic, "unpicklable": _Unpicklable, "config": _ConfigTuple,
           "config_json": _ConfigObject, "stream": _StreamOnce, "vectorised": _Vectorised, "scalar": _Scalar}


def _broken(kind):
    return _BROKEN[kind]()


@pytest.mark.parametrize("kind, match", [
    ("raises", "raised RuntimeError: the cluster is down"),
    ("count", "one EvalResult per pipeline"),
    ("type", "EvalResult objects, got float"),
    ("failure_score", "must score failure_score"),
    ("nondeterministic", "same seeds"),
    ("unpicklable", "cannot be pickled before bind"),
    ("config", "JSON-native"),
    ("config_json", "JSON-serialisable"),
    ("stream", "once per index"),
    ("vectorised", "evaluate_actions \\+ results_from_arrays disagrees"),
    ("scalar", "evaluate_one_tuple disagrees"),
])
def test_check_evaluator_names_what_is_broken(kind, match):
    with pytest.raises(EvaluatorCheckError, match=match):
        check_evaluator(_broken(kind), num_pipelines=3)


def test_check_evaluator_refuses_non_evaluators():
    with pytest.raises(EvaluatorCheckError, match="not an Evaluator"):
        check_evaluator(object())
    assert pickle.loads(pickle.dumps(EvaluatorCheckError("x"))).args == ("x",)
