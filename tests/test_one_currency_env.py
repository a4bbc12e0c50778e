"""One currency, validated once (issue 20): a spy counts the codec's validations on the env's paths.

``JointActionCodec.validate_batch`` is THE validation of a flat batch (its rows are counted),
``JointActionCodec.encode`` THE validation of one per-agent joint action (env.step, the PettingZoo
boundary) and ``JointActionCodec.encode_agent`` the validation of one agent's action at its AEC step. Each
evaluated joint action must be validated exactly once, on every path and for every kind of evaluator."""

from __future__ import annotations

import numpy as np
import pytest

import ma2ml_env
from ma2ml_env import EvalResult, JointActionCodec, PipelineEvaluator

from .conftest import sample_joint


class UserEvaluator(PipelineEvaluator):
    """A user's pipeline evaluator (a Pipeline is built inside it, from the flat row)."""

    name = "user"

    def evaluate_pipeline(self, pipeline, seed):
        return EvalResult(score=0.25 + 0.5 * (pipeline.train.lr > 0.01), accuracy=0.5)


@pytest.fixture
def spy(monkeypatch):
    counts = {"rows": 0, "encode": 0, "agent": 0}
    real_batch, real_encode, real_agent = (JointActionCodec.validate_batch, JointActionCodec.encode,
                                           JointActionCodec.encode_agent)

    def validate_batch(self, actions):
        out = real_batch(self, actions)
        counts["rows"] += len(out)
        return out

    def encode(self, action, *args, **kwargs):
        counts["encode"] += 1
        return real_encode(self, action, *args, **kwargs)

    def encode_agent(self, agent, action):
        counts["agent"] += 1
        return real_agent(self, agent, action)

    monkeypatch.setattr(JointActionCodec, "validate_batch", validate_batch)
    monkeypatch.setattr(JointActionCodec, "encode", encode)
    monkeypatch.setattr(JointActionCodec, "encode_agent", encode_agent)
    return counts


REWARDS = {"surrogate": lambda: "surrogate", "user": UserEvaluator}
BACKENDS = {"serial": {}, "serial-retries": {"backend_kwargs": {"max_retries": 1}}}


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("reward", list(REWARDS))
def test_env_step_validates_each_joint_action_once(spy, reward, backend):
    env = ma2ml_env.parallel_env(reward=REWARDS[reward](), pipelines_per_episode=4, **BACKENDS[backend])
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    acts = [sample_joint(env, rng) for _ in range(4)]
    for a in acts:
        env.step(a)
    assert spy == {"rows": 0, "encode": 4, "agent": 0} and env.evaluations == 4


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("reward", list(REWARDS))
def test_aec_step_validates_each_agents_action_once_per_joint_action(spy, reward, backend):
    aec = ma2ml_env.env(reward=REWARDS[reward](), pipelines_per_episode=3, **BACKENDS[backend])
    aec.reset(seed=0)
    n_agents = len(aec.possible_agents)
    for agent in aec.agent_iter():
        _, _, term, trunc, _ = aec.last()
        aec.step(None if term or trunc else aec.action_space(agent).sample())
    assert aec.unwrapped.evaluations == 3
    # every decision checked once, at its agent's step; the joint action is not validated again
    assert spy == {"rows": 0, "encode": 0, "agent": 3 * n_agents}


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("reward", list(REWARDS))
def test_env_evaluate_validates_each_row_once(spy, reward, backend):
    env = ma2ml_env.parallel_env(reward=REWARDS[reward](), **BACKENDS[backend])
    actions = env.unwrapped.space.codec.sample(np.random.default_rng(1), 7)
    res = env.evaluate(actions, on_result=lambda i, r: None)
    assert len(res) == 7 and spy == {"rows": 7, "encode": 0, "agent": 0}
    env.evaluate(env.unwrapped.codec.validate_batch(actions), validate=False)  # the caller validated: once
    assert spy == {"rows": 14, "encode": 0, "agent": 0} and env.evaluations == 14
