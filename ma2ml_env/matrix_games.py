"""Cooperative one-step matrix games: the climbing game and the penalty game (Claus & Boutilier, 1998).

Two agents each pick one of three actions at the same time and both receive the same payoff
``payoff[a_0, a_1]``; the episode then ends. These games are the classic tests of coordination under
*relative overgeneralisation*: the optimal joint action is surrounded by heavy miscoordination
penalties, so an agent that averages over its partner's exploratory actions is pulled to a safe,
sub-optimal action. They are tiny (9 joint actions), so a search algorithm's final policy can be
checked against the known optimum in milliseconds.

Climbing game (optimum ``(0, 0)`` = 11; ``(1, 1)`` = 7 and ``(2, 2)`` = 5 are the traps)::

            a_1=0   a_1=1   a_1=2
    a_0=0     11     -30      0
    a_0=1    -30       7      6
    a_0=2      0       0      5

Penalty game with penalty ``k <= 0`` (optima ``(0, 0)`` and ``(2, 2)`` = 10; ``(1, 1)`` = 2 is safe)::

            a_1=0   a_1=1   a_1=2
    a_0=0     10       0      k
    a_0=1      0       2      0
    a_0=2      k       0     10

Agents: ``agent_0``, ``agent_1`` (PettingZoo's ``[a-z]+_[0-9]+`` naming).

Action space: ``Discrete(3)`` per agent.

Observation: a constant ``Box(0, 1, (1,), float32)`` holding ``[1.0]`` (the game has no state);
``state()`` returns the same vector.

Reward: the shared payoff of the joint action, divided by ``max |payoff|`` when ``normalize=True``
(rewards then lie in ``[-1, 1]``), raw otherwise. Returned as Python ``float``.

Termination: every agent terminates after its single step; ``agents`` is then empty.

Arguments: ``payoff`` (3x3 array), ``normalize`` (bool), ``name`` (str), ``render_mode`` (``None`` only).

Version history: v0 — initial release.

Example::

    env = matrix_game("climbing")
    env.reset(seed=0)
    _, rewards, *_ = env.step({"agent_0": 0, "agent_1": 0})   # rewards == {"agent_0": 1.0, "agent_1": 1.0}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import gymnasium
import numpy as np
from pettingzoo import ParallelEnv

__all__ = ["CLIMBING", "MATRIX_GAMES", "MatrixGameEnv", "matrix_game", "penalty_payoff"]

#: The climbing game payoff (Claus & Boutilier 1998, table 3).
CLIMBING = np.array([[11.0, -30.0, 0.0], [-30.0, 7.0, 6.0], [0.0, 0.0, 5.0]])


def penalty_payoff(k: float = -100.0) -> np.ndarray:
    """The penalty game payoff with miscoordination penalty ``k`` (Claus & Boutilier 1998, table 4)."""
    if not k <= 0:
        raise ValueError(f"the penalty k must be <= 0 (a miscoordination penalty), got {k}")
    return np.array([[10.0, 0.0, k], [0.0, 2.0, 0.0], [k, 0.0, 10.0]])


class MatrixGameEnv(ParallelEnv):
    """A one-step, two-agent cooperative matrix game as a PettingZoo ``ParallelEnv`` (see module docstring).

    Args:
        payoff: the shared payoff matrix, shape ``[n_0, n_1]``.
        normalize: divide rewards by ``max |payoff|``.
        name: the game's name (used in ``metadata``).
        render_mode: only ``None`` is supported.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "name": "matrix_game_v0",
        "render_modes": [],
        "is_parallelizable": True,
    }

    def __init__(
        self,
        payoff: Any = CLIMBING,
        normalize: bool = False,
        name: str = "matrix_game",
        render_mode: str | None = None,
    ) -> None:
        payoff = np.asarray(payoff, dtype=np.float64)
        if payoff.ndim != 2 or min(payoff.shape) < 1:
            raise ValueError(
                f"payoff must be a 2-D matrix [n_0, n_1] with n_i >= 1, got shape {payoff.shape}"
            )
        if not np.all(np.isfinite(payoff)):
            raise ValueError("payoff must be finite")
        if render_mode is not None:
            raise ValueError(f"matrix games have no rendering; render_mode must be None, got {render_mode!r}")
        self.payoff = payoff
        self.normalize = bool(normalize)
        scale = float(np.max(np.abs(payoff))) if self.normalize else 1.0
        self._scale = scale if scale > 0 else 1.0
        self.name = name
        self.metadata = {**type(self).metadata, "name": f"{name}_v0"}
        self.render_mode = render_mode
        self.possible_agents = ["agent_0", "agent_1"]
        self.agents: list[str] = []
        self._action_spaces = {
            a: gymnasium.spaces.Discrete(int(n)) for a, n in zip(self.possible_agents, payoff.shape)
        }
        self._obs_space = gymnasium.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.state_space = self._obs_space
        self._obs = np.ones(1, dtype=np.float32)

    def config(self) -> dict[str, Any]:
        """What determines the rewards, JSON-serialisable (as :meth:`ma2ml_env.AutoMLPipelineEnv.config`):
        the game's name, its payoff matrix and ``normalize``. A matrix game has no evaluator: the payoff
        table is the reward."""
        return {"env": f"{self.name}_v0", "payoff": self.payoff.tolist(), "normalize": self.normalize,
                "reward": {"class": f"{type(self).__module__}.{type(self).__qualname__}.payoff"}}

    # PettingZoo asks that these return the same object every call: they return cached instances.
    def observation_space(self, agent: str) -> gymnasium.Space:
        return self._obs_space

    def action_space(self, agent: str) -> gymnasium.Space:
        return self._action_spaces[agent]

    def reward(self, a0: int, a1: int) -> float:
        """The (possibly normalised) shared reward of a joint action."""
        return float(self.payoff[int(a0), int(a1)] / self._scale)

    def optimum(self) -> tuple[float, tuple[int, int]]:
        """``(best reward, a best joint action)``, in the env's reward units."""
        i, j = np.unravel_index(int(np.argmax(self.payoff)), self.payoff.shape)
        return self.reward(i, j), (int(i), int(j))

    def optimal_actions(self) -> list[tuple[int, int]]:
        """Every joint action attaining the maximum payoff."""
        best = self.payoff.max()
        return [(int(i), int(j)) for i, j in zip(*np.nonzero(self.payoff == best))]

    def reset(
        self, seed: int | None = None, options: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        # The game is deterministic; ``seed`` is accepted for API conformance.
        self.agents = list(self.possible_agents)
        return {a: self._obs.copy() for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: Mapping[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"every live agent must act; missing actions for {missing}")
        acts = []
        for a in self.possible_agents:
            x = np.asarray(actions[a]).reshape(-1)
            if x.size != 1 or not self._action_spaces[a].contains(np.int64(x[0])):
                raise ValueError(
                    f"action of {a!r} must be an integer in [0, {self._action_spaces[a].n}), "
                    f"got {actions[a]!r}"
                )
            acts.append(int(x[0]))
        r = self.reward(*acts)
        agents = self.agents
        obs = {a: self._obs.copy() for a in agents}
        rewards = dict.fromkeys(agents, r)
        terms = dict.fromkeys(agents, True)
        truncs = dict.fromkeys(agents, False)
        infos = {a: {} for a in agents}
        self.agents = []
        return obs, rewards, terms, truncs, infos

    def state(self) -> np.ndarray:
        return self._obs.copy()

    def render(self) -> None:
        return None

    def close(self) -> None:
        return None


def _climbing(normalize: bool = False) -> MatrixGameEnv:
    return MatrixGameEnv(CLIMBING, normalize=normalize, name="climbing_game")


def _penalty(k: float = -100.0, normalize: bool = False) -> MatrixGameEnv:
    return MatrixGameEnv(penalty_payoff(k), normalize=normalize, name="penalty_game")


#: name -> factory of the games :func:`matrix_game` knows.
MATRIX_GAMES = {"climbing": _climbing, "penalty": _penalty}


def matrix_game(name: str, **kwargs: Any) -> MatrixGameEnv:
    """Build a matrix game by name: ``"climbing"`` or ``"penalty"`` (keyword ``k``, default -100).

    Keyword arguments (``normalize``, ``k``) go to the game's factory.
    """
    try:
        factory = MATRIX_GAMES[name]
    except KeyError:
        raise ValueError(f"unknown matrix game {name!r}; known games: {sorted(MATRIX_GAMES)}") from None
    return factory(**kwargs)
