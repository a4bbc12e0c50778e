"""The AEC form of the env: PettingZoo's ``parallel_to_aec`` conversion, with each agent's action validated
at that agent's own step.

PettingZoo's conversion only stores each agent's action and hands the whole joint action to the parallel
env at the last agent's step, so an invalid action of the first agent would be refused only then (and again
at every later step until ``reset``). Here each action is checked when it is given
(:meth:`~ma2ml_env.codec.JointActionCodec.encode_agent`: a ``ValueError`` at that agent's step, nothing
stored), and the last step evaluates the validated parts as one flat joint action: every decision is
validated once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pettingzoo.utils.conversions import parallel_to_aec_wrapper

__all__ = ["AECAutoMLEnv"]


class _FlatParts:
    """The parallel env as the conversion sees it: attributes are the env's; ``step`` evaluates the parts the
    agents' steps validated (:meth:`AECAutoMLEnv.step`), in agent order."""

    def __init__(self, parallel: Any) -> None:
        self._parallel = parallel
        self.parts: dict[str, np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parallel, name)

    def step(self, actions: Any) -> tuple[dict, dict, dict, dict, dict]:
        env = self._parallel
        if env._needs_reset or not env.agents:  # the parallel env's own errors
            return env.step(actions)
        flat = np.concatenate([self.parts[a] for a in env.codec.agents])
        self.parts = {}
        return env._step_flat(flat)


class AECAutoMLEnv(parallel_to_aec_wrapper):
    """:func:`ma2ml_env.env`: the AEC env over an :class:`~ma2ml_env.AutoMLPipelineEnv`."""

    def __init__(self, parallel: Any) -> None:
        super().__init__(_FlatParts(parallel))

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if not (self.terminations[agent] or self.truncations[agent]):  # a live agent: check its action now
            self.env.parts[agent] = self.env.codec.encode_agent(agent, action)
        super().step(action)
