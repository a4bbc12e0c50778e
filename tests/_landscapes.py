"""Small score landscapes over tiny joint spaces, a loop that feeds a search algorithm from one (no env
needed, so what the algorithm saw is known exactly), and a config check: for the local-search and GP
tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import gymnasium
import numpy as np
import pytest

from agents.base import SearchAlgorithm
from agents.registry import make_algorithm
from ma2ml_env.codec import JointActionCodec

Config = tuple[int, ...]

#: two agents, three decisions of four choices (64 configurations): one MultiDiscrete, one Discrete
SMALL = {"a": gymnasium.spaces.MultiDiscrete([4, 4]), "b": gymnasium.spaces.Discrete(4)}


def hill_and_needle(x: Config) -> float:
    """On :data:`SMALL`: ``0.5 - 0.1 * (decisions that are not 0)``, except 1 at (3, 3, 3): every climb
    ends at (0, 0, 0), a strict local optimum, unless it passes next to the needle."""
    return 1.0 if x == (3, 3, 3) else 0.5 - 0.1 * sum(v != 0 for v in x)


def rugged(x: Config) -> float:
    """A pseudo-random score in [0, 1) per configuration (any space): many local optima."""
    return float(np.random.default_rng(list(x)).random())


def additive(spaces: Mapping[str, gymnasium.Space], seed: int = 0) -> tuple[Callable[[Config], float], float]:
    """A random additive score (one random table row per decision) and its maximum."""
    nvec = JointActionCodec(spaces).nvec
    table = np.random.default_rng(seed).random((nvec.size, int(nvec.max())))
    table[np.arange(table.shape[1])[None, :] >= nvec[:, None]] = 0.0
    return (lambda x: float(table[np.arange(nvec.size), list(x)].sum())), float(table.max(axis=1).sum())


def drive(algo: SearchAlgorithm, spaces: Mapping[str, gymnasium.Space], score: Callable[[Config], float],
          budget: int, batch: int, seed: int = 0, setup: bool = True,
          after: Callable[[SearchAlgorithm], None] | None = None) -> list[tuple[Config, float]]:
    """Rounds of ``propose(batch)`` / ``observe`` scored by ``score`` of the flat decision indices, for
    ``budget`` evaluations; ``after(algo)`` runs after every round. Returns ``(config, score)`` in order."""
    codec = JointActionCodec(spaces)
    if setup:
        algo.setup(spaces, seed)
    out: list[tuple[Config, float]] = []
    while len(out) < budget:
        n = min(batch, budget - len(out))
        acts = algo.propose(n)
        assert isinstance(acts, np.ndarray) and acts.dtype == np.int64 and acts.shape == (n, codec.size)
        codec.validate_batch(acts)  # every value in range
        xs = [tuple(row) for row in acts.tolist()]
        scores = [score(x) for x in xs]
        algo.observe(acts, np.array(scores, dtype=np.float64))
        out.extend(zip(xs, scores))
        if after is not None:
            after(algo)
    return out


def assert_rejected(config_cls: type, name: str, kwargs: Mapping[str, object], match: str) -> None:
    """``config_cls(**kwargs)`` and ``make_algorithm(name, **kwargs)`` both raise ``ValueError(match)``."""
    with pytest.raises(ValueError, match=match):
        config_cls(**kwargs)
    with pytest.raises(ValueError, match=match):
        make_algorithm(name, **kwargs)
