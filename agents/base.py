"""The one interface every search algorithm implements, and the loop that runs any of them.

A search algorithm proposes a batch of joint actions (``{agent: action}`` dicts), is told the shared
reward of each, and repeats. The batch is what lets a backend evaluate pipelines in parallel.

    algo = RandomSearch()
    result = run(algo, ma2ml_env.parallel_env(reward="surrogate"), budget=200, seed=0, batch_size=8)
    print(result.best_score, result.best_pipeline)
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np

__all__ = [
    "SearchAlgorithm",
    "SearchResult",
    "Trial",
    "action_spaces_of",
    "evaluate_joint_actions",
    "run",
    "torch_threads",
]

JointAction = dict[str, np.ndarray]


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the process-wide setting (``None``:
    leave it). Thread start-up and contention dominate tiny torch computations on a few cores, and a
    fixed thread count makes their floating-point reductions, hence a search, the same on any machine."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)



class SearchAlgorithm:
    """Base class of search algorithms over a multi-agent joint action space.

    Life cycle: ``setup(action_spaces, seed)`` once, then rounds of ``propose(n)`` and
    ``observe(actions, scores)``. ``state_dict()``/``load_state_dict()`` capture everything needed to
    resume a search exactly (including RNG state).

    Attributes:
        name: the name the CLI and benchmark use.
    """

    name: str = "algorithm"

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        """Prepare for a search over ``action_spaces`` (``Discrete`` or ``MultiDiscrete`` per agent)."""
        for agent, space in action_spaces.items():
            if not isinstance(space, (gymnasium.spaces.Discrete, gymnasium.spaces.MultiDiscrete)):
                raise TypeError(
                    f"{type(self).__name__} supports Discrete and MultiDiscrete actions; agent {agent!r} has "
                    f"{type(space).__name__}"
                )
        self.action_spaces = dict(action_spaces)
        self.agents = tuple(action_spaces)
        self.seed = seed

    def propose(self, n: int) -> list[JointAction]:
        """Return ``n`` joint actions to evaluate next."""
        raise NotImplementedError

    def observe(self, actions: Sequence[JointAction], scores: Sequence[float]) -> None:
        """Learn from the shared rewards of previously proposed joint actions."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (picklable)."""
        raise NotImplementedError(f"{type(self).__name__} does not support checkpointing")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not support checkpointing")


@dataclass
class Trial:
    """One evaluated joint action."""

    index: int
    round: int
    actions: dict[str, list[int]]
    score: float
    status: str = "ok"
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchResult:
    """What :func:`run` returns: the full history and the best trial."""

    algorithm: str
    seed: int
    trials: list[Trial]
    wall_seconds: float
    best_pipeline: Any = None

    @property
    def scores(self) -> np.ndarray:
        return np.array([t.score for t in self.trials], dtype=float)

    @property
    def best_so_far(self) -> np.ndarray:
        return np.maximum.accumulate(self.scores) if self.trials else np.zeros(0)

    @property
    def best(self) -> Trial:
        if not self.trials:
            raise ValueError("the search evaluated no pipeline")
        return max(self.trials, key=lambda t: (t.score, -t.index))

    @property
    def best_score(self) -> float:
        return self.best.score


def action_spaces_of(env: Any) -> dict[str, gymnasium.Space]:
    """The per-agent action spaces of a PettingZoo ParallelEnv."""
    agents = list(getattr(env, "possible_agents", None) or env.agents)
    return {a: env.action_space(a) for a in agents}


def _to_lists(action: Mapping[str, Any]) -> dict[str, list[int]]:
    return {k: np.atleast_1d(np.asarray(v)).astype(int).tolist() for k, v in action.items()}


def evaluate_joint_actions(
    env: Any, actions: Sequence[JointAction], seeds: Sequence[int]
) -> list[tuple[float, str, float, dict[str, Any]]]:
    """Evaluate joint actions on ``env``: (score, status, seconds, info) each.

    Uses the env's batch ``evaluate`` when it has one (our env: parallel/distributed backends),
    otherwise plays one episode per joint action on any PettingZoo ParallelEnv and sums the shared reward.
    """
    base = getattr(env, "unwrapped", env)
    if hasattr(base, "evaluate") and callable(base.evaluate):
        results = base.evaluate(actions, seeds)
        return [(r.score, r.status, r.seconds, r.to_dict()) for r in results]
    out = []
    for a, s in zip(actions, seeds):
        t0 = time.perf_counter()
        env.reset(seed=int(s))
        total, done = 0.0, False
        while not done and env.agents:
            live = {k: v for k, v in a.items() if k in env.agents}
            _, rewards, terms, truncs, _ = env.step(live)
            total += float(np.mean(list(rewards.values()))) if rewards else 0.0
            done = all(terms.get(k, False) or truncs.get(k, False) for k in live)
        out.append((total, "ok", time.perf_counter() - t0, {}))
    return out


def run(
    algorithm: SearchAlgorithm,
    env: Any,
    budget: int,
    seed: int = 0,
    batch_size: int = 1,
    callback: Callable[[list[Trial]], None] | None = None,
    trials: Sequence[Trial] = (),
) -> SearchResult:
    """Run ``algorithm`` on ``env`` for ``budget`` evaluations.

    Args:
        algorithm: any :class:`SearchAlgorithm`.
        env: a PettingZoo ParallelEnv (ours or any with Discrete/MultiDiscrete actions).
        budget: number of evaluations.
        seed: seeds the algorithm and the evaluations (evaluation ``i`` uses seed ``seed * 1_000_003 + i``).
        batch_size: joint actions proposed and evaluated per round.
        callback: called with the new trials after every round (progress bars, stores, loggers).
        trials: trials already done (resume); the algorithm must already hold their state.

    Returns:
        The :class:`SearchResult` with every trial; ``best_pipeline`` is decoded when the env can.
    """
    if not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive integer number of evaluations, got {budget!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    history = list(trials)
    if not history:
        algorithm.setup(action_spaces_of(env), seed)
    t0 = time.perf_counter()
    rnd = (history[-1].round + 1) if history else 0
    while len(history) < budget:
        n = min(batch_size, budget - len(history))
        actions = algorithm.propose(n)
        if len(actions) != n:
            raise RuntimeError(f"{type(algorithm).__name__}.propose({n}) returned {len(actions)} actions")
        seeds = [seed * 1_000_003 + len(history) + i for i in range(n)]
        results = evaluate_joint_actions(env, actions, seeds)
        scores = [r[0] if math.isfinite(r[0]) else 0.0 for r in results]
        algorithm.observe(actions, scores)
        new = [
            Trial(len(history) + i, rnd, _to_lists(a), s, r[1], r[2], r[3])
            for i, (a, s, r) in enumerate(zip(actions, scores, results))
        ]
        history.extend(new)
        rnd += 1
        if callback is not None:
            callback(new)
    result = SearchResult(getattr(algorithm, "name", type(algorithm).__name__), seed, history,
                          time.perf_counter() - t0)
    base = getattr(env, "unwrapped", env)
    if hasattr(base, "decode") and history:
        result.best_pipeline = base.decode({k: np.array(v) for k, v in result.best.actions.items()})
    return result
