"""Regularised ("aging") evolution (Real et al. 2019) over the joint action, tournament selection, one
decision mutated per child by default."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np

from agents.common import AlgorithmConfig, ConfiguredSearch, load_rng, positive_int, rng_state

__all__ = ["EvolutionConfig", "RegularizedEvolution"]


@dataclass(frozen=True)
class EvolutionConfig(AlgorithmConfig):
    """Hyper-parameters of :class:`RegularizedEvolution` (defaults: the NAS-Bench-201 reference runs)."""

    population_size: int = 10
    """Joint actions kept alive; the first ``population_size`` proposals are uniform random."""

    tournament_size: int = 3
    """Members drawn (without replacement) per tournament; the best of them is the parent."""

    mutations: int = 1
    """Decisions of the parent changed per child, each to a different value drawn uniformly."""

    def check(self) -> None:
        positive_int("EvolutionConfig", "population_size", self.population_size)
        positive_int("EvolutionConfig", "tournament_size", self.tournament_size)
        positive_int("EvolutionConfig", "mutations", self.mutations)
        if self.tournament_size > self.population_size:
            raise ValueError(f"EvolutionConfig.tournament_size ({self.tournament_size}) must be <= "
                             f"population_size ({self.population_size})")


class RegularizedEvolution(ConfiguredSearch):
    """Regularised ("aging") evolution (Real et al. 2019) over the joint action.

    The population holds the ``population_size`` most recently observed joint actions. A child is the
    winner of a tournament of ``tournament_size`` random members with ``mutations`` of its decisions
    changed to another value; each observed child joins the population and the oldest member leaves.
    Until the population is full, proposals are uniform random. Decisions with a single choice are never
    mutated.

    Args:
        config: an :class:`EvolutionConfig`; or its fields as keyword arguments.
    """

    name = "evolution"
    config_class = EvolutionConfig

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        super().setup(action_spaces, seed)
        self.population: deque[tuple[np.ndarray, float]] = deque(maxlen=self.config.population_size)
        self.proposed = 0
        self._mutable = np.flatnonzero(self.codec.nvec > 1)

    def propose(self, n: int) -> np.ndarray:
        codec, cfg, rng = self.codec, self.config, self.rng
        out = np.empty((n, codec.size), dtype=np.int64)
        for i in range(n):
            if self.proposed < cfg.population_size or len(self.population) < cfg.tournament_size:
                x = codec.sample(rng, 1)[0]
            else:
                members = rng.choice(len(self.population), size=cfg.tournament_size, replace=False)
                x = max((self.population[int(i)] for i in members), key=lambda m: m[1])[0].copy()
                k = min(cfg.mutations, self._mutable.size)
                for d in rng.choice(self._mutable, size=k, replace=False):
                    shift = 1 + int(rng.integers(codec.nvec[d] - 1))  # a different value, uniformly
                    x[d] = (x[d] + shift) % codec.nvec[d]
            self.proposed += 1
            out[i] = x
        return out

    def observe(self, actions: np.ndarray, scores: np.ndarray) -> None:
        actions, scores = self.observed_batch(actions, scores)
        for a, sc in zip(actions, scores.tolist()):
            self.population.append((a.copy(), sc if math.isfinite(sc) else -math.inf))

    def state_dict(self) -> dict[str, Any]:
        return {"population": [(x.tolist(), s) for x, s in self.population], "proposed": self.proposed,
                "rng": rng_state(self.rng)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.population = deque(((np.array(x, dtype=np.int64), float(s)) for x, s in state["population"]),
                                maxlen=self.config.population_size)
        self.proposed = int(state["proposed"])
        self.rng = load_rng(state["rng"])
