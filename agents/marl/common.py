"""What the MARL-library learners share: one pipeline is one episode of the decision-per-step view
(:class:`ma2ml_env.stepwise.DecisionLayout`), rolled out for ``n`` pipelines at once, and the episodes of
observed pipelines as one TorchRL ``TensorDict`` in the layout TorchRL's multi-agent losses read (the
``"agents"`` group, a ``"next"`` entry, the shared score as the terminal reward).

Every torch computation of a learner runs inside :meth:`DecisionStepLearner.torch_context`: a fixed number
of torch threads (the same result at any thread count) and the learner's own copy of torch's global random
state (TorchRL's modules draw from the global generator: weight initialisation, action sampling,
epsilon-greedy, replay sampling), swapped in and out, so a search is seeded, checkpointable and does not
disturb (nor depend on) the caller's torch random state.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import gymnasium
import numpy as np

from agents.base import torch_threads
from agents.common import AlgorithmConfig, ConfiguredSearch, in_range, positive_int, require
from ma2ml_env.stepwise import DecisionLayout

__all__ = ["AGENTS", "DecisionStepConfig", "DecisionStepLearner", "quiet"]

#: the TorchRL group of every agent (parameters are shared across the group; the agent id is observed)
AGENTS = "agents"


@contextlib.contextmanager
def quiet(logger: str) -> Iterator[None]:
    """The block with ``logger``'s messages below WARNING dropped (its level restored afterwards)."""
    log = logging.getLogger(logger)
    before = log.level
    log.setLevel(max(before, logging.WARNING))
    try:
        yield
    finally:
        log.setLevel(before)


@dataclasses.dataclass(frozen=True)
class DecisionStepConfig(AlgorithmConfig):
    """Fields every learner on the decision-per-step view has."""

    hidden: int = 64
    """Width of the hidden layers of every network (TorchRL ``MultiAgentMLP``)."""

    depth: int = 2
    """Hidden layers of every network."""

    lr: float = 3e-3
    """Adam learning rate."""

    max_grad_norm: float = 1.0
    """Gradient norm clipping of every update."""

    torch_threads: int | None = 1
    """Torch intra-op threads while the learner computes (restored afterwards; ``None``: torch's setting).
    One thread gives the same search at any thread count and is fastest for these small networks."""

    def check(self) -> None:
        own = type(self).__name__
        positive_int(own, "hidden", self.hidden)
        positive_int(own, "depth", self.depth)
        in_range(own, "lr", self.lr, 0.0, float("inf"), lo_open=True, hi_open=True)
        in_range(own, "max_grad_norm", self.max_grad_norm, 0.0, float("inf"), lo_open=True, hi_open=True)
        if self.torch_threads is not None:
            positive_int(own, "torch_threads", self.torch_threads)


class DecisionStepLearner(ConfiguredSearch):
    """Base of the learners on the decision-per-step view. A subclass builds its TorchRL modules in
    :meth:`build` (inside :meth:`torch_context`), acts in :meth:`act` and learns in :meth:`learn`, and lists
    in ``_STATEFUL`` its attributes with ``state_dict``/``load_state_dict`` (modules, optimisers, buffers).

    Attributes:
        layout: the :class:`~ma2ml_env.stepwise.DecisionLayout` of the action spaces.
        scores: every score observed, in order (rewards are standardised over them).
    """

    _STATEFUL: tuple[str, ...] = ()

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        require("torchrl", "torchrl")
        import torch

        super().setup(action_spaces, seed)
        self.layout = DecisionLayout(self.codec)
        self._rng_state = torch.Generator().manual_seed(int(seed)).get_state()
        self.scores: list[float] = []
        with self.torch_context():
            self.build()

    @contextlib.contextmanager
    def torch_context(self) -> Iterator[None]:
        """The learner's thread count and its own torch global random state for the block (module
        docstring)."""
        import torch

        with torch_threads(self.config.torch_threads), torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng_state)
            yield
            self._rng_state = torch.get_rng_state()

    # -- what a subclass provides --------------------------------------------------------------------------
    def build(self) -> None:
        raise NotImplementedError

    def act(self, td: Any) -> Any:
        """The agents' actions (int64 ``[B, N]``) for the observations of one step, ``td`` (batch ``[B]``)."""
        raise NotImplementedError

    def learn(self, rows: np.ndarray, scores: np.ndarray) -> None:
        """Learn from the round's pipelines (``int64 [B, D]``) and their scores (``float64 [B]``; they are
        in :attr:`scores` already); :meth:`episodes` and :meth:`transitions` give their episodes."""
        raise NotImplementedError

    # -- the search interface ------------------------------------------------------------------------------
    def propose(self, n: int) -> np.ndarray:
        """Roll out ``n`` episodes of the view at once; their complete pipelines, ``int64 [n, D]``."""
        lay = self.layout
        rows = np.zeros((n, self.codec.size), dtype=np.int64)
        with self.torch_context():
            for k in range(lay.horizon):
                td = self._step_td(rows, k)
                lay.apply(rows, k, self.act(td).numpy())
        return rows

    def observe(self, actions: np.ndarray, scores: np.ndarray) -> None:
        """The shared score of each proposed pipeline is the terminal reward of its episode; then the
        subclass's update (:meth:`learn`)."""
        rows, r = self.observed_batch(actions, scores)
        if not len(r):
            return
        if not np.all(np.isfinite(r)):
            raise ValueError("scores must be finite (the search loop maps failures to a defined score)")
        self.scores.extend(r.tolist())
        with self.torch_context():
            self.learn(rows, r)

    def rewards(self, scores: Any) -> Any:
        """Scores standardised over every score observed so far (the rewards the learners see)."""
        s = np.asarray(self.scores)
        std = float(s.std()) if s.size > 1 else 0.0
        return (scores - float(s.mean())) / (std if std > 1e-12 else 1.0)

    # -- TensorDicts -----------------------------------------------------------------------------------------
    def _obs(self, rows: np.ndarray, k: Any, batch: tuple[int, ...]) -> Any:
        import torch
        from tensordict import TensorDict

        lay = self.layout
        return TensorDict({
            (AGENTS, "observation"): torch.from_numpy(lay.observations(rows, k)),
            (AGENTS, "action_mask"): torch.from_numpy(np.broadcast_to(
                lay.masks(k), (*batch, lay.n_agents, lay.n_actions)).astype(bool)),
            "state": torch.from_numpy(lay.states(rows, k)),
        }, batch_size=batch)

    def _step_td(self, rows: np.ndarray, k: int) -> Any:
        return self._obs(rows, k, (rows.shape[0],))

    def episodes(self, rows: np.ndarray, scores: np.ndarray) -> Any:
        """Every step of the episodes of complete pipelines ``rows`` ``[B, D]`` with their ``scores``
        (:meth:`transitions` at steps ``0..T-1``): batch ``[B, T]``."""
        steps = np.broadcast_to(np.arange(self.layout.horizon), (rows.shape[0], self.layout.horizon))
        return self.transitions(rows, scores, steps)

    def transitions(self, rows: np.ndarray, scores: Any, steps: np.ndarray) -> Any:
        """Steps ``steps`` (int ``[B, K]``) of the episodes of complete pipelines ``rows`` ``[B, D]`` with
        their ``scores`` ``[B]``: a ``TensorDict`` of batch ``[B, K]`` with ``(agents, observation |
        action_mask | action)`` and ``state``, and under ``next`` the next step's observations, the reward (0,
        or at the last step the score standardised over every score observed so far; global and per agent)
        and ``done``/``terminated`` (the last step). Built from the rows alone, so a replay buffer keeps only
        rows and scores, and old episodes follow the current standardisation."""
        import torch

        lay = self.layout
        b, k = steps.shape
        rows3 = rows[:, None, :]
        td = self._obs(rows3, steps, (b, k))
        td[AGENTS, "action"] = torch.from_numpy(np.take_along_axis(lay.step_actions(rows), steps[..., None], 1))
        nxt = self._obs(rows3, steps + 1, (b, k))
        last = torch.from_numpy(steps == lay.horizon - 1)[..., None]
        reward = torch.as_tensor(self.rewards(np.asarray(scores, dtype=np.float64)), dtype=torch.float32)
        nxt["reward"] = torch.where(last, reward[:, None, None], 0.0)
        nxt["done"], nxt["terminated"] = last, last.clone()
        per_agent = (b, k, lay.n_agents, 1)
        nxt[AGENTS, "reward"] = nxt["reward"].unsqueeze(-2).expand(per_agent).clone()
        nxt[AGENTS, "done"] = last.unsqueeze(-2).expand(per_agent).clone()
        nxt[AGENTS, "terminated"] = nxt[AGENTS, "done"].clone()
        td["next"] = nxt
        return td

    def clip_step(self, loss: Any, params: Any, optimiser: Any) -> None:
        """One optimiser step on ``loss`` with the gradient norm clipped to ``max_grad_norm``."""
        import torch

        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        optimiser.step()

    # -- checkpointing ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything the next proposals depend on (independent copies): the modules, optimisers and buffers
        in ``_STATEFUL``, the torch and NumPy random states and the observed scores."""
        return copy.deepcopy({
            "config": dataclasses.asdict(self.config), "action_spaces": self.action_spaces, "seed": self.seed,
            **{k: getattr(self, k).state_dict() for k in self._STATEFUL}, "torch_rng": self._rng_state,
            "np_rng": self.rng.bit_generator.state, "scores": self.scores})

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (no :meth:`setup` needed before: the state holds the spaces)."""
        state = copy.deepcopy(dict(state))
        self.config = self.config_class(**state["config"])
        self.setup(state["action_spaces"], state["seed"])
        for k in self._STATEFUL:
            getattr(self, k).load_state_dict(state[k])
        self._rng_state = state["torch_rng"]
        self.rng.bit_generator.state = state["np_rng"]
        self.scores = list(state["scores"])
