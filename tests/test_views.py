"""The Gymnasium joint-action view: checkers and a stable-baselines3 learning test."""

import gymnasium
import numpy as np
import pytest

import ma2ml_env


def test_gymnasium_and_sb3_checkers():
    from gymnasium.utils.env_checker import check_env

    check_env(gymnasium.make(ma2ml_env.JOINT_ENV_ID, reward="surrogate").unwrapped, skip_render_check=True)
    sb3 = pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_checker import check_env as sb3_check

    sb3_check(ma2ml_env.JointActionEnv(reward="surrogate"))
    assert sb3 is not None


def test_joint_view_step_matches_parallel_env():
    view = ma2ml_env.JointActionEnv(reward="surrogate")
    par = ma2ml_env.parallel_env(reward="surrogate")
    a = view.action_space.sample()
    view.reset(seed=0)
    par.reset(seed=0)
    _, r, term, trunc, _ = view.step(a)
    assert isinstance(r, float) and term is True and trunc is False
    assert r == par.step(par.space.codec.decode(a))[1]["aug"]
    with pytest.raises(RuntimeError, match="episode is over"):
        view.step(a)


def test_sb3_ppo_improves_on_the_joint_view(private_tmp, one_torch_thread):
    """SB3's PPO (the library's own, not re-implemented) learns on the joint view: the HPO agent alone
    keeps it to seconds on CI. Given a logger with no outputs, it leaves no log folder in the temp folder
    (SB3's default logger makes an ``SB3-<date>`` folder there at ``learn``)."""
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    env = ma2ml_env.JointActionEnv(reward="surrogate", modules=("hpo",))
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=128, n_epochs=4, learning_rate=3e-3, seed=0,
                device="cpu", policy_kwargs=dict(net_arch=[32]))
    model.set_logger(Logger(folder=None, output_formats=[]))

    def mean_reward(n=100):
        rewards = []
        for i in range(n):
            obs, _ = env.reset(seed=1000 + i)
            action, _ = model.predict(obs, deterministic=False)
            rewards.append(env.step(action)[1])
        return float(np.mean(rewards))

    before = mean_reward()
    model.learn(total_timesteps=1024)
    after = mean_reward()
    assert after > before + 0.02, (before, after)
    assert list(private_tmp.glob("SB3-*")) == []
