"""AutoMLPipelineDecisions-v0: the pipeline built one decision at a time, for MARL libraries.

MARL libraries (TorchRL's multi-agent stack, BenchMARL, EPyMARL) take one ``Discrete`` action per agent per
step, the same action size for every agent, and an action mask for the choices that are not legal. This
view of any of our envs (surrogate, real training, a tabular task, a user's modules) gives them that:

Agents
    Those of the wrapped env (one per AutoML module), in its order.

Steps
    A pipeline takes ``T = max_i n_i`` steps, ``n_i`` being agent ``i``'s number of decisions. At step ``k``
    every agent picks its ``k``-th decision at once (the parallel form); an agent with fewer decisions
    picks the no-op ``0`` (its mask has that one legal choice). After step ``T`` the joint action is
    complete, is evaluated by the wrapped env's reward backend, and every agent gets the shared score.

Action space (per agent)
    ``Discrete(A)``, ``A`` the largest number of choices of any decision of any agent; the legal choices of
    the current decision are marked by the observation's ``action_mask`` (an illegal one raises
    ``ValueError`` naming the agent, the decision and its legal range). ``action_space(agent).sample()``
    without a mask draws a legal choice of that agent's current decision (what PettingZoo's seed test and a
    random policy do); with a mask it samples as ``Discrete`` does.

Observation (per agent)
    ``Dict(observation=Box(0, 1, (2 D + T + N,)), action_mask=Box(0, 1, (A,), int8))``. ``observation`` is
    the partial pipeline of every agent (for each of the ``D`` decisions: whether it is made, and its value
    scaled to ``[0, 1]``), which step comes next (one-hot over ``T``) and which agent this is (one-hot over
    ``N``). ``state()`` is the same without the agent part (``2 D + T``): the global state for centralised
    critics; ``state_space`` describes it.

Reward, termination
    ``0.0`` on the ``T - 1`` intermediate steps, the pipeline's shared score on the last; every agent
    terminates after ``pipelines_per_episode`` complete pipelines (default 1). Never truncated.

Infos
    The wrapped env's keys (:data:`ma2ml_env.env.INFO_KEYS`, numbers only, neutral until a pipeline is
    evaluated) plus ``decision``: the step within the pipeline that comes next.

Seeding
    ``reset(seed=...)`` seeds the evaluation seeds (``gymnasium.utils.seeding``), as the wrapped env does.

    from ma2ml_env.stepwise import decision_parallel_env
    env = decision_parallel_env(reward="surrogate")
    obs, infos = env.reset(seed=0)
    while env.agents:
        actions = {a: int(np.flatnonzero(obs[a]["action_mask"])[0]) for a in env.agents}
        obs, rewards, terms, truncs, infos = env.step(actions)

Version history
    v0: initial release.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec_wrapper

from ma2ml_env.codec import JointActionCodec
from ma2ml_env.env import AutoMLPipelineEnv
from ma2ml_env.rewards.base import BatchResult

__all__ = ["DECISIONS_ENV_ID", "DecisionLayout", "DecisionStepAEC", "DecisionStepEnv", "decision_aec_env",
           "decision_parallel_env"]

DECISIONS_ENV_ID = "ma2ml/AutoMLPipelineDecisions-v0"


class _LegalDiscrete(gymnasium.spaces.Discrete):
    """``Discrete(n)`` whose ``sample()`` without a mask or probabilities draws among the choices ``legal()``
    marks (its agent's current decision), so that an unmasked random action is a legal one."""

    def __init__(self, n: int, legal: Callable[[], np.ndarray]) -> None:
        super().__init__(n)
        self._legal = legal

    def sample(self, mask: np.ndarray | None = None, probability: np.ndarray | None = None) -> np.int64:
        if mask is None and probability is None:
            mask = self._legal()
        return super().sample(mask=mask, probability=probability)


class DecisionLayout:
    """The decision-per-step layout of a joint action space: the steps, masks and observations of the view,
    computed from the codec alone and vectorised over pipelines, so that the env and learners on the view
    (``agents.marl``) build them one way.

    A *partial* pipeline at step ``k`` is a flat row (``int64 [D]``, codec layout) whose decisions made
    before step ``k`` are set; the others are ignored (the complete row of a finished pipeline gives the
    observations of each of its steps).

    Args:
        codec: the :class:`~ma2ml_env.codec.JointActionCodec` of the agents.

    Attributes:
        horizon: ``T``, steps per pipeline (the most decisions of any agent).
        n_actions: ``A``, the padded action size (the most choices of any decision).
        decision: int64 ``[N, T]``, the flat index of agent ``i``'s ``k``-th decision, ``-1`` for a no-op.
        mask: int8 ``[N, T, A]``, the legal choices of every step (a no-op step: only ``0``).
        step_of: int64 ``[D]``, the step at which each decision is made.
        state_size, observation_size: ``2 D + T`` and ``2 D + T + N``.
    """

    def __init__(self, codec: JointActionCodec) -> None:
        self.codec = codec
        n, d = len(codec.agents), codec.size
        self.n_agents = n
        self.horizon = max(codec.sizes)
        self.n_actions = max(codec.max_choices, 1)
        self.decision = np.full((n, self.horizon), -1, dtype=np.int64)
        for i, sl in enumerate(codec.slices):
            self.decision[i, : sl.stop - sl.start] = np.arange(sl.start, sl.stop)
        self.mask = np.zeros((n, self.horizon, self.n_actions), dtype=np.int8)
        legal = np.where(self.decision >= 0, codec.nvec[np.maximum(self.decision, 0)], 1)  # [N, T]
        self.mask[np.arange(self.n_actions) < legal[..., None]] = 1
        self.step_of = np.arange(d) - np.asarray(codec.offsets)[codec.agent_of]
        self._steps = np.eye(self.horizon, dtype=np.float32)
        self._who = np.eye(n, dtype=np.float32)
        self.state_size = 2 * d + self.horizon
        self.observation_size = self.state_size + n

    def states(self, rows: np.ndarray, k: int | np.ndarray) -> np.ndarray:
        """The global state (float32 ``[..., 2 D + T]``) of partial pipelines ``rows`` (``[..., D]``) before
        step ``k`` (an int, or an array broadcasting against ``rows.shape[:-1]``; ``k = T``: complete): for
        each decision whether it is made and its value scaled to ``[0, 1]``, then the step (one-hot, the last
        once complete)."""
        k = np.asarray(k)
        made = (self.step_of < k[..., None]).astype(np.float32)
        values = self.codec.scaled(np.asarray(rows)) * made  # the codec's one scaling
        made = np.broadcast_to(made, values.shape)
        step = np.broadcast_to(self._steps[np.minimum(k, self.horizon - 1)], (*values.shape[:-1], self.horizon))
        return np.concatenate([made, values.astype(np.float32), step], axis=-1)

    def observations(self, rows: np.ndarray, k: int | np.ndarray) -> np.ndarray:
        """Every agent's observation (float32 ``[..., N, 2 D + T + N]``): the state and the agent (one-hot)."""
        s = self.states(rows, k)
        lead = s.shape[:-1]
        return np.concatenate([np.broadcast_to(s[..., None, :], (*lead, self.n_agents, s.shape[-1])),
                               np.broadcast_to(self._who, (*lead, self.n_agents, self.n_agents))], axis=-1)

    def masks(self, k: int | np.ndarray) -> np.ndarray:
        """The action masks before step ``k`` (int8 ``[..., N, A]``; ``k = T``: those of the last step)."""
        k = np.minimum(np.asarray(k), self.horizon - 1)
        return np.moveaxis(self.mask[:, k], 0, -2)

    def apply(self, rows: np.ndarray, k: int, actions: np.ndarray) -> None:
        """Write the agents' step-``k`` actions (``[..., N]``, legal) into ``rows`` (``[..., D]``) in place."""
        dec = self.decision[:, k]
        live = dec >= 0
        rows[..., dec[live]] = np.asarray(actions)[..., live]

    def step_actions(self, rows: np.ndarray) -> np.ndarray:
        """The per-step actions of complete pipelines ``rows`` (``[..., D]``): int64 ``[..., T, N]``, the no-op
        ``0`` where an agent has no decision (the inverse of :meth:`apply` over the ``T`` steps)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = rows[..., np.maximum(self.decision, 0)]  # [..., N, T]
        return np.swapaxes(np.where(self.decision >= 0, out, 0), -1, -2)


class DecisionStepEnv(ParallelEnv):
    """One ``Discrete`` decision per agent per step over a wrapped :class:`AutoMLPipelineEnv`; see the module
    docstring.

    Args:
        env: the env whose pipelines and reward backend are used; if omitted one is built from ``kwargs``.
        pipelines_per_episode: complete pipelines per episode.
        **kwargs: arguments of :class:`AutoMLPipelineEnv` (e.g. ``reward="surrogate"``).
    """

    metadata: ClassVar[dict[str, Any]] = {"name": DECISIONS_ENV_ID, "render_modes": [], "is_parallelizable": True}

    def __init__(self, env: AutoMLPipelineEnv | None = None, pipelines_per_episode: int = 1,
                 **kwargs: Any) -> None:
        if env is not None and kwargs:
            raise ValueError(f"pass either an env or its arguments, not both (got env and {sorted(kwargs)})")
        if isinstance(pipelines_per_episode, bool) or not isinstance(pipelines_per_episode, (int, np.integer)) \
                or pipelines_per_episode < 1:
            raise ValueError(f"pipelines_per_episode must be a positive integer, got {pipelines_per_episode!r}")
        self.env = env if env is not None else AutoMLPipelineEnv(**kwargs)
        self.layout = layout = DecisionLayout(self.env.space.codec)
        self.codec = layout.codec
        self.pipelines_per_episode = int(pipelines_per_episode)
        self.render_mode = None
        self.possible_agents = list(layout.codec.agents)
        self.agents: list[str] = []
        self.horizon, self.n_actions = layout.horizon, layout.n_actions
        self.decision, self.mask = layout.decision, layout.mask
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        self._labels = [f"{m.name}.{d.name}" for m in self.env.space.modules for d in m.decisions]
        self.state_space = gymnasium.spaces.Box(0.0, 1.0, (layout.state_size,), np.float32)
        obs_box = gymnasium.spaces.Box(0.0, 1.0, (layout.observation_size,), np.float32)
        mask_box = gymnasium.spaces.Box(0, 1, (self.n_actions,), np.int8)
        self._obs_space = gymnasium.spaces.Dict({"observation": obs_box, "action_mask": mask_box})
        self._act_spaces = {a: _LegalDiscrete(self.n_actions, functools.partial(self._legal, i))
                            for i, a in enumerate(self.possible_agents)}
        self._np_random, _ = seeding.np_random(None)
        self._row = np.zeros(layout.codec.size, dtype=np.int64)
        self._k = 0
        self._done_pipelines = 0
        self._needs_reset = True

    # -- spaces ----------------------------------------------------------------------------------------
    def observation_space(self, agent: str) -> gymnasium.spaces.Dict:
        self._check_agent(agent)
        return self._obs_space

    def action_space(self, agent: str) -> gymnasium.spaces.Discrete:
        self._check_agent(agent)
        return self._act_spaces[agent]

    def _legal(self, i: int) -> np.ndarray:
        """Agent ``i``'s action mask now (of its current decision)."""
        return self.mask[i, min(self._k, self.horizon - 1)].copy()

    def _check_agent(self, agent: str) -> None:
        if agent not in self._index:
            raise ValueError(f"unknown agent {agent!r}; agents are {self.possible_agents}")

    def state(self) -> np.ndarray:
        return self.layout.states(self._row, self._k)

    def _observations(self) -> dict[str, dict[str, np.ndarray]]:
        obs = self.layout.observations(self._row, self._k)
        masks = self.layout.masks(self._k)
        return {agent: {"observation": obs[self._index[agent]], "action_mask": masks[self._index[agent]].copy()}
                for agent in self.agents}

    def _infos(self, result: BatchResult | None) -> dict[str, dict[str, Any]]:
        info = self.env._info(result, 0, self._done_pipelines)  # the wrapped env's one place infos are made
        info["decision"] = self._k
        return {a: dict(info) for a in self.agents}

    # -- episode loop ----------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self._np_random, _ = seeding.np_random(seed)
        self.agents = list(self.possible_agents)
        self._row[:] = 0
        self._k = 0
        self._done_pipelines = 0
        self._needs_reset = False
        return self._observations(), self._infos(None)

    def step(self, actions: Mapping[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        if not self.agents:
            raise RuntimeError("every agent is done; call reset() to start a new episode")
        missing = [a for a in self.agents if a not in actions]
        extra = [a for a in actions if a not in self._index]
        if missing or extra:
            raise ValueError(f"step() needs one action for each agent {self.agents}; missing {missing}, "
                             f"unknown {extra}")
        chosen = [self.check_action(agent, actions[agent]) for agent in self.possible_agents]
        self.layout.apply(self._row, self._k, np.array(chosen, dtype=np.int64))
        self._k += 1
        score, result = 0.0, None
        if self._k == self.horizon:
            seed = int(self._np_random.integers(2**31 - 1))
            # every decision was checked at its step (check_action): the row is valid
            result = self.env.evaluate(self._row[None, :].copy(), [seed], validate=False)
            score = float(result[0].score)
            self._done_pipelines += 1
        done = self._done_pipelines >= self.pipelines_per_episode
        infos = self._infos(result)
        if result is not None and not done:  # the next pipeline starts from scratch
            self._row[:] = 0
            self._k = 0
        obs = self._observations()
        agents = list(self.agents)
        rewards = dict.fromkeys(agents, score)
        terms = dict.fromkeys(agents, done)
        truncs = dict.fromkeys(agents, False)
        if done:
            self.agents = []
            self._needs_reset = True
        return obs, rewards, terms, truncs, infos

    def check_action(self, agent: str, action: Any) -> int:
        """The action as an ``int`` if it is legal for ``agent`` now, else ``ValueError`` saying why."""
        self._check_agent(agent)
        a = np.asarray(action)
        if a.shape not in ((), (1,)) or a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"agent {agent!r}: an action is one integer (a Discrete choice), got {action!r}")
        a = int(a.reshape(()))
        i = self._index[agent]
        k = min(self._k, self.horizon - 1)
        legal = int(self.mask[i, k].sum())
        if not 0 <= a < legal:
            dec = self.decision[i, k]
            what = "a no-op step (only 0 is legal)" if dec < 0 else \
                f"decision {self._labels[dec]} (legal: 0..{legal - 1})"
            raise ValueError(f"agent {agent!r}, step {k}: {a} is not a legal choice of {what}; "
                             "see the observation's action_mask")
        return a

    def close(self) -> None:
        self.env.close()


def decision_parallel_env(**kwargs: Any) -> DecisionStepEnv:
    """The decision-per-step ParallelEnv (arguments of :class:`DecisionStepEnv`)."""
    return DecisionStepEnv(**kwargs)


class DecisionStepAEC(parallel_to_aec_wrapper):
    """The AEC form of :class:`DecisionStepEnv`: the agents act in turn within each step, and an illegal action
    raises ``ValueError`` at that agent's own turn (PettingZoo's conversion would only find it at the last
    agent's)."""

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if not (self.terminations[agent] or self.truncations[agent]):
            self.env.check_action(agent, action)
        super().step(action)


def decision_aec_env(**kwargs: Any) -> DecisionStepAEC:
    """The AEC form (arguments of :class:`DecisionStepEnv`)."""
    return DecisionStepAEC(DecisionStepEnv(**kwargs))
