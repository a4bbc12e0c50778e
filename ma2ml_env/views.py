"""Gymnasium views of the multi-agent env, for single-agent libraries (stable-baselines3 and the like).

:class:`JointActionEnv` exposes the agents' joint action as one ``MultiDiscrete`` (the concatenation
of every agent's decisions, in agent order) and the env's global state as the observation. Registered as
``ma2ml/AutoMLPipelineJoint-v1``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import numpy as np

from ma2ml_env.env import AutoMLPipelineEnv

__all__ = ["JOINT_ENV_ID", "JointActionEnv"]

JOINT_ENV_ID = "ma2ml/AutoMLPipelineJoint-v1"


class JointActionEnv(gymnasium.Env):
    """One agent choosing the whole pipeline: ``MultiDiscrete(joint nvec)`` actions, global-state
    observations, the shared score as reward (a Python ``float``); terminated after
    ``pipelines_per_episode`` steps.

    Args:
        parallel_env: an :class:`AutoMLPipelineEnv`; if omitted one is built from ``kwargs``.
        **kwargs: arguments of :class:`AutoMLPipelineEnv` (e.g. ``reward="surrogate"``).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"]}

    def __init__(self, parallel_env: AutoMLPipelineEnv | None = None, **kwargs: Any) -> None:
        self.penv = parallel_env if parallel_env is not None else AutoMLPipelineEnv(**kwargs)
        self.space = self.penv.space
        self.action_space = gymnasium.spaces.MultiDiscrete(self.space.joint_nvec)
        self.observation_space = self.penv.state_space
        self.render_mode = self.penv.render_mode

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        _, infos = self.penv.reset(seed=seed, options=options)
        return self.penv.state(), dict(infos[self.penv.possible_agents[0]])

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self.penv.agents:
            self.penv.step({})  # raises the env's own clear error (reset needed)
        _, rewards, terms, truncs, infos = self.penv.step(self.space.codec.decode(action))
        first = self.penv.possible_agents[0]
        return (self.penv.state(), float(rewards[first]), bool(terms[first]), bool(truncs[first]),
                dict(infos[first]))

    def decode(self, action: Any):
        """The readable pipeline of a flat joint action."""
        return self.space.decode(action)

    def render(self) -> str | None:
        return self.penv.render()

    def close(self) -> None:
        self.penv.close()
