"""The PettingZoo environment: API conformance, determinism, pickling, bad input."""

import pickle

import gymnasium
import numpy as np
import pettingzoo
import pytest
from pettingzoo.test import api_test, parallel_api_test

import ma2ml_env
from ma2ml_env import INFO_KEYS

from .conftest import sample_joint


def test_parallel_api(senv):
    parallel_api_test(senv, num_cycles=30)


def test_aec_api():
    api_test(ma2ml_env.env(reward="surrogate"), num_cycles=10)


def test_registered_ids():
    e = pettingzoo.make("parallel", ma2ml_env.ENV_ID, reward="surrogate")
    assert isinstance(e, ma2ml_env.AutoMLPipelineEnv)
    a = pettingzoo.make("aec", ma2ml_env.ENV_ID, reward="surrogate")
    assert isinstance(a, pettingzoo.AECEnv)


def test_agents_spaces_and_state(senv):
    assert senv.possible_agents == ["aug", "nas", "hpo"]
    assert senv.action_space("aug") is senv.action_space("aug")
    assert senv.observation_space("nas") is senv.observation_space("nas")
    assert senv.action_space("aug").shape == (30,)
    assert senv.action_space("nas").shape == (13,)
    assert senv.action_space("hpo").shape == (7,)
    obs, infos = senv.reset(seed=0)
    assert senv.state().shape == senv.state_space.shape
    assert all(set(i) == set(INFO_KEYS) for i in infos.values())
    rng = np.random.default_rng(0)
    obs, rew, term, trunc, infos = senv.step(sample_joint(senv, rng))
    assert all(set(i) == set(INFO_KEYS) for i in infos.values())
    assert len(set(rew.values())) == 1 and isinstance(rew["aug"], float)
    assert all(term.values()) and not any(trunc.values())
    assert senv.agents == []
    assert senv.state_space.contains(senv.state())
    for a, o in obs.items():
        assert senv.observation_space(a).contains(o)


def test_multi_pipeline_episodes():
    rng = np.random.default_rng(1)
    e = ma2ml_env.parallel_env(reward="surrogate", pipelines_per_episode=4)
    e.reset(seed=3)
    best = 0.0
    for t in range(4):
        obs, rew, term, _, infos = e.step(sample_joint(e, rng))
        best = max(best, rew["aug"])
        assert obs["aug"][0] == pytest.approx((t + 1) / 4)
        assert obs["aug"][2] == pytest.approx(best, rel=1e-6)
        assert infos["hpo"]["t"] == t + 1
        assert all(term.values()) == (t == 3)


def _trajectory(seed, steps=25, noise=0.05):
    e = ma2ml_env.parallel_env(
        reward="surrogate", reward_kwargs={"noise_std": noise}, pipelines_per_episode=5
    )
    rng = np.random.default_rng(123)
    out = []
    e.reset(seed=seed)
    for _ in range(steps):
        if not e.agents:
            e.reset()
        obs, rew, *_ = e.step(sample_joint(e, rng))
        out.append((rew["aug"], obs["hpo"].tobytes()))
    return out


def test_multi_step_determinism():
    a, b, c = _trajectory(7), _trajectory(7), _trajectory(8)
    assert a == b
    assert a != c  # different seed -> different evaluation noise


def test_reset_without_seed_keeps_rng():
    e = ma2ml_env.parallel_env(reward="surrogate", reward_kwargs={"noise_std": 0.05})
    act = sample_joint(e, np.random.default_rng(0))
    e.reset(seed=1)
    r1 = e.step(act)[1]["aug"]
    e.reset()
    r2 = e.step(act)[1]["aug"]
    assert r1 != r2  # the RNG moved on: a new noise draw
    e.reset(seed=1)
    assert e.step(act)[1]["aug"] == r1


def test_pickle_round_trip(senv):
    senv.reset(seed=0)
    act = sample_joint(senv, np.random.default_rng(0))
    clone = pickle.loads(pickle.dumps(senv))
    assert clone.step(act)[1] == senv.step(act)[1]


def test_batch_evaluate_matches_step(senv):
    rng = np.random.default_rng(5)
    acts = [sample_joint(senv, rng) for _ in range(20)]
    flat = np.stack([senv.codec.encode(a) for a in acts])
    batch = senv.evaluate(flat, seeds=list(range(20)))
    assert isinstance(batch, ma2ml_env.BatchResult) and len(batch) == 20
    assert senv.last_result == batch[19] and senv.evaluations == 20
    assert all(np.array_equal(senv.last_actions[a], acts[-1][a]) for a in acts[-1])
    for a, r in zip(acts, batch):
        senv.reset(seed=0)
        assert senv.step(a)[1]["aug"] == pytest.approx(r.score, abs=1e-12)


def test_evaluate_takes_one_int64_batch_and_says_what_is_wrong(senv):
    flat = senv.space.codec.sample(np.random.default_rng(1), 3)
    want = senv.evaluate(flat, seeds=[1, 2, 3])
    assert senv.evaluate(flat.tolist(), seeds=np.array([1, 2, 3], np.int32)).score.tolist() == want.score.tolist()
    assert senv.evaluate(flat, seeds=[1, 2, 3], validate=False).score.tolist() == want.score.tolist()
    bad = flat.copy()
    bad[2, 0] = 99
    with pytest.raises(ValueError, match=r"row 2: aug\.sub0_op0 = 99 is out of range"):
        senv.evaluate(bad)
    with pytest.raises(ValueError, match="pass \\[row\\]"):
        senv.evaluate(flat[0])
    with pytest.raises(ValueError, match="seeds must be 3 integers"):
        senv.evaluate(flat, seeds=[1, 2])
    assert len(senv.evaluate(np.zeros((0, flat.shape[1]), np.int64))) == 0
    seen = []
    r = senv.evaluate(flat, seeds=[1, 2, 3], on_result=lambda i, res: seen.append((i, res.score)))
    assert sorted(seen) == [(i, r[i].score) for i in range(3)]


def test_decode_and_render():
    e = ma2ml_env.parallel_env(reward="surrogate", render_mode="ansi")
    e.reset(seed=0)
    act = sample_joint(e, np.random.default_rng(2))
    e.step(act)
    text = e.render()
    pipe = e.decode(act)
    assert str(pipe.arch) in text and "score:" in text
    assert all(np.array_equal(e.space.encode(pipe)[k], act[k]) for k in act)


# -- bad input: clear errors, env stays usable --------------------------------------------------------
def _usable(e):
    e.reset(seed=0)
    e.step(sample_joint(e, np.random.default_rng(0)))


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a: a.pop("nas"), "missing \\['nas'\\]"),
        (lambda a: a.update(bogus=np.zeros(2, int)), "unknown \\['bogus'\\]"),
        (lambda a: a.update(hpo=np.zeros(6, int)), "shape \\(6,\\), expected \\(7,\\)"),
        (
            lambda a: a["hpo"].__setitem__(1, 99),
            "out of range at position 1 \\(decision 'lr'\\): got 99, allowed 0..5",
        ),
        (lambda a: a["aug"].__setitem__(0, -1), "out of range"),
        (lambda a: a.update(nas=np.full(13, 0.5)), "must be integers"),
    ],
)
def test_bad_actions(senv, mutate, match):
    senv.reset(seed=0)
    act = sample_joint(senv, np.random.default_rng(0))
    mutate(act)
    with pytest.raises(ValueError, match=match):
        senv.step(act)
    assert senv.agents  # the episode is untouched
    senv.step(sample_joint(senv, np.random.default_rng(0)))


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled-path", "python-path"])
@pytest.mark.parametrize("agents", [("hpo",), ("aug", "nas", "hpo")], ids=["one-bool-array", "all-bool"])
def test_boolean_action_arrays_are_refused_in_step_and_evaluate(compiled, agents):
    """numpy promotes a bool array concatenated with int arrays to int: still not an action."""
    env = ma2ml_env.parallel_env(reward="surrogate")
    if not compiled:
        env.evaluator._row_kernel = None
    env.reset(seed=0)
    act = sample_joint(env, np.random.default_rng(0))
    for a in agents:
        act[a] = np.zeros(act[a].size, dtype=bool)
    with pytest.raises(ValueError, match="must be integers, got dtype bool \\(booleans are not actions\\)"):
        env.step(act)
    with pytest.raises(ValueError, match="booleans are not actions"):
        env.evaluate(np.zeros((1, env.codec.size), dtype=bool))
    assert env.agents and env.evaluations == 0  # nothing evaluated, the episode untouched
    assert env.step({a: v.astype(np.int64) for a, v in act.items()})[1]["hpo"] > 0


def test_not_a_dict(senv):
    senv.reset()
    with pytest.raises(ValueError, match="must be a dict"):
        senv.step([1, 2, 3])


def test_step_before_reset_and_after_end(senv):
    act = sample_joint(senv, np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="reset\\(\\) before step"):
        senv.step(act)
    senv.reset()
    senv.step(act)
    with pytest.raises(RuntimeError, match="episode is over"):
        senv.step(act)
    _usable(senv)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(modules=("aug", "warp")), "unknown AutoML module 'warp'"),
        (dict(modules=("aug", "aug")), "duplicate AutoML module names \\['aug'\\]"),
        (dict(modules=()), "at least one AutoML module"),
        (dict(reward="oracle"), "unknown reward 'oracle'"),
        (dict(pipelines_per_episode=0), "positive integer"),
        (dict(pipelines_per_episode=1.5), "positive integer"),
        (dict(render_mode="rgb"), "render_mode"),
        (dict(reward_kwargs={"noise_std": -1}), "noise_std"),
        (dict(reward_kwargs={"task": "hard"}), "task must be"),
    ],
)
def test_bad_config(kwargs, match):
    kwargs.setdefault("reward", "surrogate")
    with pytest.raises(ValueError, match=match):
        ma2ml_env.parallel_env(**kwargs)


def test_unknown_agent_space(senv):
    with pytest.raises(ValueError, match="unknown agent 'foo'"):
        senv.action_space("foo")


def test_import_is_light():
    import subprocess
    import sys

    code = (
        "import sys, ma2ml_env; e = ma2ml_env.parallel_env(reward='surrogate'); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_gymnasium_id_registered():
    assert ma2ml_env.JOINT_ENV_ID in gymnasium.registry


# -- AEC: each agent's action is validated at its own step (defect 6) -----------------------------------
@pytest.mark.parametrize("bad_agent", ["aug", "nas", "hpo"])
@pytest.mark.parametrize("bad", [lambda a: np.full(a.shape, np.nan), lambda a: a + 1000,
                                 lambda a: a.astype(bool)], ids=["nan", "out-of-range", "bool"])
def test_aec_refuses_an_invalid_action_at_that_agents_step(bad_agent, bad):
    aec = ma2ml_env.env(reward="surrogate", pipelines_per_episode=2)
    aec.reset(seed=0)
    for agent in aec.agent_iter():
        action = aec.action_space(agent).sample()
        if agent == bad_agent:
            with pytest.raises(ValueError, match=f"action of agent '{agent}'"):
                aec.step(bad(action))
            assert aec.agent_selection == agent  # nothing stored: the same agent acts again
            aec.step(aec.action_space(agent).sample())  # a valid action goes on, no repeated error
            break
        aec.step(action)
    while aec.agents and aec.agent_selection != "aug":  # finish the joint action: it is evaluated
        aec.step(aec.action_space(aec.agent_selection).sample())
    assert aec.unwrapped.evaluations == 1
    assert aec.infos["aug"]["t"] == 1 and aec.infos["aug"]["status"] == 0


def test_aec_evaluates_the_same_joint_action_as_the_parallel_env():
    par = ma2ml_env.parallel_env(reward="surrogate", pipelines_per_episode=3)
    aec = ma2ml_env.env(reward="surrogate", pipelines_per_episode=3)
    par.reset(seed=5), aec.reset(seed=5)
    rng = np.random.default_rng(1)
    for _ in range(3):
        act = sample_joint(par, rng)
        _, rew, *_ = par.step(act)
        for agent in list(aec.agents):
            aec.step(act[agent])
        assert aec.rewards["hpo"] == rew["hpo"] and aec.unwrapped.last_result == par.last_result
    assert not aec.agents or all(aec.terminations.values())
