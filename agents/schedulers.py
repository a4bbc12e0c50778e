"""Early-stopping schedulers: successive halving, Hyperband and ASHA, over any search algorithm.

A scheduler decides what a free worker does next: start a new child (a joint action the search algorithm
proposes) at the lowest rung, or promote a child that earned it to the next rung, where it continues from
where it was (:mod:`ma2ml_env.rewards.fidelity`). It sees only results; which children are started is the
algorithm's business, so every scheduler composes with every registered algorithm (random search under
Hyperband is Hyperband; TPE under it is a BOHB-like search; MA2ML under it is MA2ML with early stopping).
:func:`agents.base.run` drives it (``run(algo, env, budget, scheduler=Hyperband())``, see
:mod:`agents.multifidelity`).

Rungs are fidelity levels spaced by ``eta``: from the full training ``R`` down through ``R / eta``,
``R / eta**2``, ... (each mapped to the nearest level the evaluator declares, in log scale) while not
below ``min_level``.

* :class:`SuccessiveHalving` (Jamieson & Talwalkar 2016; Li et al. 2018 for the rung rule): brackets of
  ``eta ** (rungs - 1)`` children started at the lowest rung; once a rung is complete its best ``1 / eta``
  continue to the next. Synchronous: a rung waits for its last result. When every open bracket waits, a
  free worker opens a new bracket.
* :class:`Hyperband` (Li et al., JMLR 2018): successive halving with brackets that start at each rung in
  turn (``s = s_max, ..., 0``: ``ceil((s_max + 1) / (s + 1)) * eta ** s`` children from rung ``s_max - s``),
  hedging against low fidelities that mislead.
* :class:`FullTraining`: no early stopping (a full-fidelity search on the same simulated clock).
* :class:`ASHA` (Li et al., MLSys 2020): asynchronous; a free worker promotes the best child of the highest
  rung that has one in its top ``1 / eta`` not yet promoted, else starts a new child. No worker ever waits.

Schedulers are deterministic (ties broken by the order of the results) and their whole state is their
results, so a search under one resumes exactly by replaying them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ma2ml_env.rewards.fidelity import Fidelity

__all__ = [
    "ASHA", "SCHEDULERS", "FullTraining", "Hyperband", "Job", "Scheduler", "SuccessiveHalving", "make_scheduler",
    "nearest_level", "rung_levels",
]


@dataclass(frozen=True)
class Job:
    """What a worker does: child ``child`` (``-1``: a new one) from level ``start`` (``-1``: fresh) to
    level ``level`` (indices into the evaluator's fidelity levels); ``bracket`` is the scheduler's own tag.
    A scheduler that chooses new children itself (a peer library's own sampler) gives the new child's
    joint action as ``row`` (a tuple in the codec's layout); otherwise the search algorithm proposes it."""

    child: int
    level: int
    start: int = -1
    bracket: int = 0
    row: tuple[int, ...] | None = None


def nearest_level(fidelity: Fidelity, resource: float) -> int:
    """The index of the level whose resource is nearest to ``resource`` in log scale (ties: the lower)."""
    levels = fidelity.levels
    return min(range(len(levels)), key=lambda j: abs(math.log(levels[j]) - math.log(resource)))


def rung_levels(fidelity: Fidelity, eta: float, min_level: float | None = None) -> tuple[int, ...]:
    """The rung level indices, lowest first, always ending at the full training (see the module docstring)."""
    levels = fidelity.levels
    lo = levels[0] if min_level is None else float(min_level)
    if lo > levels[-1]:
        raise ValueError(f"min_level {min_level} is above the full training ({levels[-1]} {fidelity.unit})")
    rungs: list[int] = []
    r = float(levels[-1])
    while r >= lo * (1 - 1e-9):
        i = nearest_level(fidelity, r)
        if levels[i] >= lo * (1 - 1e-9) and i not in rungs:
            rungs.append(i)
        r /= eta
    return tuple(sorted(rungs))


class Scheduler:
    """Base class: :meth:`bind` once with the evaluator's fidelity, then :meth:`next_job` whenever a worker
    is free and :meth:`on_result` for every result, in the order the results arrive.

    Args:
        eta: the reduction factor (keep the best ``1 / eta`` of a rung; rungs ``eta`` apart).
        min_level: the lowest rung's resource (e.g. epochs; default: the lowest level the evaluator has).
    """

    name = "scheduler"

    def __init__(self, eta: float = 3, min_level: float | None = None) -> None:
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta > 1 or not math.isfinite(eta):
            raise ValueError(f"eta must be a number > 1 (the reduction factor, e.g. 3), got {eta!r}")
        if min_level is not None and (isinstance(min_level, bool) or not isinstance(min_level, (int, float))
                                      or not min_level > 0):
            raise ValueError(f"min_level must be a positive resource (e.g. epochs) or None, got {min_level!r}")
        self.eta, self.min_level = eta, min_level

    def bind(self, fidelity: Fidelity) -> None:
        self.fidelity = fidelity
        self.rungs = rung_levels(fidelity, self.eta, self.min_level)

    def next_job(self, can_start: bool) -> Job | None:
        """The next job for a free worker, or ``None`` when there is none now (a result must come first).
        With ``can_start`` False no new child may be started (the algorithm has no proposal ready)."""
        raise NotImplementedError

    def on_result(self, job: Job, child: int, score: float) -> None:
        """Child ``child`` reached ``job.level`` with ``score`` (a new child has been given its id)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "eta": self.eta, "min_level": self.min_level}


class _Bracket:
    """One synchronous successive-halving bracket: ``n`` children from rung ``first``, ``1 / eta`` kept per rung."""

    def __init__(self, tag: int, rungs: Sequence[int], n: int, eta: float) -> None:
        self.tag, self.rungs, self.eta = tag, tuple(rungs), eta
        self.sizes = [max(1, math.floor(n / eta ** k)) for k in range(len(self.rungs))]
        self.rung = 0                      # the rung being run
        self.started = 0                   # jobs started in that rung
        self.results: list[tuple[float, int, int]] = []  # (score, arrival, child) of that rung
        self.queue: list[int] = []         # children promoted into that rung, not yet started
        self.arrivals = 0

    def next_job(self, can_start: bool) -> Job | None:
        if self.rung >= len(self.rungs) or self.started >= self.sizes[self.rung]:
            return None
        level = self.rungs[self.rung]
        if self.rung == 0:
            if not can_start:
                return None
            self.started += 1
            return Job(-1, level, -1, self.tag)
        self.started += 1
        return Job(self.queue.pop(0), level, self.rungs[self.rung - 1], self.tag)

    def on_result(self, child: int, score: float) -> None:
        self.arrivals += 1
        self.results.append((score, self.arrivals, child))
        if len(self.results) == self.sizes[self.rung] and self.rung + 1 < len(self.rungs):
            best = sorted(self.results, key=lambda t: (-t[0], t[1]))[: self.sizes[self.rung + 1]]
            self.rung, self.started, self.results = self.rung + 1, 0, []
            self.queue = [c for _, _, c in best]
        elif len(self.results) == self.sizes[self.rung]:
            self.rung = len(self.rungs)  # done

    @property
    def done(self) -> bool:
        return self.rung >= len(self.rungs)


class SuccessiveHalving(Scheduler):
    """Synchronous successive halving (module docstring); every bracket starts at the lowest rung."""

    name = "sh"

    def bind(self, fidelity: Fidelity) -> None:
        super().bind(fidelity)
        self.brackets: list[_Bracket] = []
        self._opened = 0
        self._owner: dict[int, _Bracket] = {}

    def _new_bracket(self) -> _Bracket:
        s_max = len(self.rungs) - 1
        b = _Bracket(self._opened, self.rungs, round(self.eta ** s_max), self.eta)
        self._opened += 1
        return b

    def next_job(self, can_start: bool) -> Job | None:
        for b in self.brackets:
            job = b.next_job(can_start)
            if job is not None:
                return job
        if not can_start:
            return None
        b = self._new_bracket()
        self.brackets.append(b)
        return b.next_job(can_start)

    def on_result(self, job: Job, child: int, score: float) -> None:
        b = next(b for b in self.brackets if b.tag == job.bracket)
        b.on_result(child, score)
        self.brackets = [b for b in self.brackets if not b.done]


class Hyperband(SuccessiveHalving):
    """Hyperband (module docstring): brackets ``s = s_max, ..., 0`` in turn, then again."""

    name = "hyperband"

    def _new_bracket(self) -> _Bracket:
        s_max = len(self.rungs) - 1
        s = s_max - self._opened % (s_max + 1)
        n = math.ceil((s_max + 1) / (s + 1) * self.eta ** s)
        b = _Bracket(self._opened, self.rungs[s_max - s:], n, self.eta)
        self._opened += 1
        return b


class ASHA(Scheduler):
    """Asynchronous successive halving (module docstring)."""

    name = "asha"

    def bind(self, fidelity: Fidelity) -> None:
        super().bind(fidelity)
        self._results: list[list[tuple[float, int, int]]] = [[] for _ in self.rungs]  # (score, arrival, child)
        self._promoted: list[set[int]] = [set() for _ in self.rungs]
        self._arrivals = 0

    def next_job(self, can_start: bool) -> Job | None:
        for k in range(len(self.rungs) - 2, -1, -1):
            done = self._results[k]
            keep = math.floor(len(done) / self.eta)
            for _, _, child in sorted(done, key=lambda t: (-t[0], t[1]))[:keep]:
                if child not in self._promoted[k]:
                    self._promoted[k].add(child)
                    return Job(child, self.rungs[k + 1], self.rungs[k])
        return Job(-1, self.rungs[0]) if can_start else None

    def on_result(self, job: Job, child: int, score: float) -> None:
        self._arrivals += 1
        self._results[self.rungs.index(job.level)].append((score, self._arrivals, child))


class FullTraining(Scheduler):
    """No early stopping: every child is trained to the full level. What measures a full-fidelity search on
    the same simulated clock (and the same ``workers``) as the schedulers that stop children early."""

    name = "full"

    def bind(self, fidelity: Fidelity) -> None:
        super().bind(fidelity)
        self.rungs = (fidelity.top,)

    def next_job(self, can_start: bool) -> Job | None:
        return Job(-1, self.fidelity.top) if can_start else None

    def on_result(self, job: Job, child: int, score: float) -> None:
        pass


#: The schedulers by the names the CLI takes.
SCHEDULERS = {"asha": ASHA, "full": FullTraining, "hyperband": Hyperband, "sh": SuccessiveHalving}


def make_scheduler(name: str, **kwargs: Any) -> Scheduler:
    """A scheduler by name (:data:`SCHEDULERS`) with its arguments (``eta``, ``min_level``)."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; use one of {sorted(SCHEDULERS)}")
    return SCHEDULERS[name](**kwargs)
