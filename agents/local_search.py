"""Local search over one-decision neighbours (White, Nolen & Savani, "Exploring the loss landscape in
neural architecture search", UAI 2021), behind the :class:`~agents.base.SearchAlgorithm` interface.

    algo = LocalSearch()                                  # or make_algorithm("local-search")
    run(algo, ma2ml_env.benchmark_env("nb201/cifar10"), budget=200, seed=0, batch_size=8)

The joint action is flattened into decisions (one categorical per ``Discrete`` agent or ``MultiDiscrete``
entry); the neighbours of a configuration are all configurations that differ from it in exactly one
decision. The search starts from the best of ``n_initial`` uniform random configurations, evaluates the
incumbent's unevaluated neighbours in random order and moves to a better neighbour as soon as one is
observed (first improvement; ``best_improvement=True`` evaluates the whole neighbourhood first and moves
to its best). At a local optimum (every neighbour evaluated, none better) it restarts from a fresh random
configuration; the best configuration so far is kept by the search loop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np

from agents.common import AlgorithmConfig, ConfiguredSearch, load_rng, positive_int, rng_state

__all__ = ["LocalSearch", "LocalSearchConfig"]

Config = tuple[int, ...]  # a configuration: its flat decision indices (0-based)


@dataclass(frozen=True)
class LocalSearchConfig(AlgorithmConfig):
    """Hyper-parameters of :class:`LocalSearch` (defaults: White et al. 2021)."""

    n_initial: int = 10
    """Uniform random configurations evaluated first; the best of them is the first incumbent."""

    best_improvement: bool = False
    """``False``: move to a better neighbour as soon as one is observed (first improvement). ``True``:
    evaluate the incumbent's whole neighbourhood, then move to its best neighbour if that is better."""

    def check(self) -> None:
        positive_int("LocalSearchConfig", "n_initial", self.n_initial)


class _Neighbourhood:
    """A centre configuration and its one-decision neighbours in a random order, with a cursor: the
    neighbours before it have been handed out (proposed, or skipped because already evaluated)."""

    def __init__(self, centre: Config, order: list[Config], cursor: int = 0) -> None:
        self.centre, self.order, self.cursor = centre, order, cursor

    @classmethod
    def around(cls, centre: Config, nvec: np.ndarray, rng: np.random.Generator) -> _Neighbourhood:
        nbrs = [(*centre[:d], v, *centre[d + 1:]) for d, n in enumerate(nvec) for v in range(int(n))
                if v != centre[d]]
        return cls(centre, [nbrs[int(i)] for i in rng.permutation(len(nbrs))])

    def next_unseen(self, seen: Any) -> Config | None:
        """The next neighbour for which ``seen(x)`` is false (``None`` when none is left)."""
        while self.cursor < len(self.order):
            x = self.order[self.cursor]
            self.cursor += 1
            if not seen(x):
                return x
        return None

    def to_state(self) -> tuple[Config, list[Config], int]:
        return self.centre, list(self.order), self.cursor

    @classmethod
    def from_state(cls, state: Sequence[Any] | None) -> _Neighbourhood | None:
        if state is None:
            return None
        centre, order, cursor = state
        return cls(tuple(int(v) for v in centre), [tuple(int(v) for v in x) for x in order], int(cursor))


class LocalSearch(ConfiguredSearch):
    """Local search with random restarts (White et al. 2021) over the flat joint action.

    Proposals come, in this order of preference, from: the ``n_initial`` uniform random configurations;
    the incumbent's unevaluated neighbours in random order; and, when a batch asks for more than that
    (the incumbent is not known yet, or all its neighbours are proposed but not all observed), the next
    restart point (a fresh random configuration, drawn ahead) and then its neighbours, and last fresh
    random configurations. A configuration already evaluated or pending is never proposed again while an
    unevaluated one exists. The next restart point's neighbourhood, partly evaluated as batch filler,
    is where the search continues at a local optimum.

    In observe, as soon as some evaluated neighbour of the incumbent beats it (first improvement: the
    best of them; ``best_improvement``: only once the whole neighbourhood is evaluated) it becomes the
    incumbent; when every neighbour is evaluated and none is better, the search restarts. A non-finite
    score counts as ``-inf``.

    Args:
        config: a :class:`LocalSearchConfig`; or its fields as keyword arguments.
    """

    name = "local-search"
    config_class = LocalSearchConfig

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        super().setup(action_spaces, seed)
        self.evaluated: dict[Config, float] = {}  # every observed configuration and its (first) score
        self.pending: set[Config] = set()  # proposed, not yet observed
        self.initial: list[Config] = []  # the initial random configurations proposed so far
        self.climb: _Neighbourhood | None = None  # the incumbent (its centre) and its neighbours
        self.restart: _Neighbourhood | None = None  # the next restart point, drawn ahead for batch filling
        self.moves = 0
        self.restarts = 0

    # -- the incumbent ------------------------------------------------------------------------------------
    @property
    def incumbent(self) -> Config | None:
        """The configuration whose neighbours are being evaluated (``None`` during the initial phase)."""
        return None if self.climb is None else self.climb.centre

    def _seen(self, x: Config) -> bool:
        return x in self.evaluated or x in self.pending

    def _fresh(self) -> Config:
        """A uniform random configuration not yet evaluated or pending (any one when none is left)."""
        lay = self.codec
        x = tuple(lay.sample(self.rng, 1)[0].tolist())
        for _ in range(64):
            if not self._seen(x):
                return x
            x = tuple(lay.sample(self.rng, 1)[0].tolist())
        # 64 draws all seen: the space is nearly used up, hence small enough to list what is left
        size = math.prod(int(n) for n in lay.nvec)
        if size > 1_000_000:
            return x
        radix = np.concatenate([[1], np.cumprod(lay.nvec[:0:-1])])[::-1]
        every = (np.arange(size)[:, None] // radix) % lay.nvec
        left = [r for r, y in enumerate(map(tuple, every.tolist())) if not self._seen(y)]
        return tuple(every[left[int(self.rng.integers(len(left)))]].tolist()) if left else x

    # -- propose ------------------------------------------------------------------------------------------
    def _next(self) -> Config:
        if len(self.initial) < self.config.n_initial:
            x = self._fresh()
            self.initial.append(x)
            return x
        if self.climb is not None:
            if not self._seen(self.climb.centre):  # a restart point drawn at restart time
                return self.climb.centre
            x = self.climb.next_unseen(self._seen)
            if x is not None:
                return x
        # batch filler: the next restart point, then its neighbours, then fresh random configurations
        if self.restart is None:
            centre = self._fresh()
            self.restart = _Neighbourhood.around(centre, self.codec.nvec, self.rng)
            if not self._seen(centre):
                return centre
        x = self.restart.next_unseen(self._seen)
        return x if x is not None else self._fresh()

    def propose(self, n: int) -> np.ndarray:
        out = np.empty((n, self.codec.size), dtype=np.int64)
        for i in range(n):
            x = self._next()
            self.pending.add(x)
            out[i] = x
        return out

    # -- observe ------------------------------------------------------------------------------------------
    def observe(self, actions: np.ndarray, scores: np.ndarray) -> None:
        actions, scores = self.observed_batch(actions, scores)
        for x, sc in zip(map(tuple, actions.tolist()), scores.tolist()):
            self.pending.discard(x)
            self.evaluated.setdefault(x, sc if math.isfinite(sc) else -math.inf)
        self._update()

    def _move_to(self, centre: Config) -> None:
        self.climb = _Neighbourhood.around(centre, self.codec.nvec, self.rng)

    def _update(self) -> None:
        """Move or restart while what has been observed decides it (at most one restart per call)."""
        if self.climb is None:
            done = all(x in self.evaluated for x in self.initial)
            if len(self.initial) < self.config.n_initial or not done:
                return
            self._move_to(max(self.initial, key=self.evaluated.__getitem__))  # first best on ties
        restarted = False
        while self.climb.centre in self.evaluated:
            score = self.evaluated[self.climb.centre]
            known = [(self.evaluated[x], x) for x in self.climb.order if x in self.evaluated]
            complete = len(known) == len(self.climb.order)
            best = max(known, key=lambda k: k[0], default=None)  # the first best in the random order
            if best is not None and best[0] > score and (complete or not self.config.best_improvement):
                self._move_to(best[1])
                self.moves += 1
            elif complete and not restarted:  # a local optimum
                restarted = True
                self.restarts += 1
                if self.restart is None:
                    self._move_to(self._fresh())
                else:
                    self.climb, self.restart = self.restart, None
            else:
                return

    # -- checkpoints --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "evaluated": list(self.evaluated.items()),
            "pending": sorted(self.pending),
            "initial": list(self.initial),
            "climb": None if self.climb is None else self.climb.to_state(),
            "restart": None if self.restart is None else self.restart.to_state(),
            "moves": self.moves,
            "restarts": self.restarts,
            "rng": rng_state(self.rng),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        def conf(x: Sequence[int]) -> Config:
            return tuple(int(v) for v in x)

        self.evaluated = {conf(x): float(s) for x, s in state["evaluated"]}
        self.pending = {conf(x) for x in state["pending"]}
        self.initial = [conf(x) for x in state["initial"]]
        self.climb = _Neighbourhood.from_state(state["climb"])
        self.restart = _Neighbourhood.from_state(state["restart"])
        self.moves = int(state["moves"])
        self.restarts = int(state["restarts"])
        self.rng = load_rng(state["rng"])
