"""The multi-fidelity form of the search loop: a scheduler stops weak children early, on W simulated workers.

:func:`agents.base.run` with ``scheduler=`` (:mod:`agents.schedulers`) comes here. The env's evaluator must
declare fidelity levels (:mod:`ma2ml_env.rewards.fidelity`: the learning-curve tasks, a user's evaluator).

    from agents.schedulers import Hyperband
    env = ma2ml_env.learning_curve_env("7593", folder)
    result = run(make_algorithm("tpe"), env, budget=100, seed=0, batch_size=4, scheduler=Hyperband(), workers=4)

How it runs
    ``workers`` simulated workers share one clock. Whenever a worker is free the scheduler gives it a job:
    a new child (the next row the algorithm proposed) at the lowest rung, or a promotion that continues a
    child from its level. Every job started at one instant is evaluated in one evaluator call; its result
    arrives after the ``seconds`` it cost (the recorded training time on tables, the measured one when
    training), and results are handed to the scheduler in the order of their arrival times (ties: the
    order the jobs started). This is the simulator of tabulated benchmarks that syne-tune popularised: an
    algorithm's anytime curve is measured against simulated GPU-seconds (``Trial.clock``).

What the algorithm sees
    It proposes ``batch_size`` rows at a time, when a worker needs a new child and none of its proposals
    is left. Right before, it observes every child it proposed whose first result (at the level it was
    started at) has arrived and that it has not observed yet, in the order it proposed them, so no worker
    ever waits for the algorithm. An algorithm with an ``observe_levels(actions, scores, levels)`` method
    is also told every later result of a promoted child (``levels``: int64 fidelity level indices), and
    ``set_fidelity(fidelity)``, when it has it, is called after ``setup`` with the env's levels.

Budget
    ``budget`` is in full trainings: a job from level ``a`` to ``b`` uses ``(R_b - R_a) / R_top`` of one;
    ``budget_seconds`` (optional) stops on the simulated clock. No job starts once either is used up;
    the jobs running then finish and are recorded.

Durable
    A :class:`~agents.store.TrialStore` records every result at every level (``Trial.level``, ``start``,
    ``full``, ``clock``) the moment it is final. On resume the search is replayed from the start: the
    algorithm and scheduler are rebuilt from their seed, every job already in the store is served from
    it, and the first one that is not is evaluated; since all of it is deterministic given the stored
    results, the trials and the final answer are those of an uninterrupted run.
"""

from __future__ import annotations

import heapq
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.base import (
    Recorder,
    SearchAlgorithm,
    SearchResult,
    Trial,
    _proposed,
    action_spaces_of,
    evaluation_seed,
)
from agents.schedulers import Job, Scheduler
from ma2ml_env.codec import JointActionCodec
from ma2ml_env.rewards.base import EvalResult
from ma2ml_env.rewards.fidelity import Fidelity, fidelity_of

__all__ = ["check_fidelity_arguments", "fidelity_config", "search_fidelity"]


def check_fidelity_arguments(env: Any, scheduler: Any, workers: Any, budget_seconds: Any,
                             dedupe: bool = False) -> Fidelity:
    """The env's :class:`~ma2ml_env.Fidelity`, or ``ValueError``/``TypeError`` saying what is wrong with the
    scheduler, the workers or the time budget (before anything is recorded)."""
    if not isinstance(scheduler, Scheduler):
        raise TypeError(f"scheduler must be an agents.schedulers.Scheduler (SuccessiveHalving, Hyperband, ASHA), "
                        f"got {type(scheduler).__name__}")
    if dedupe:
        raise ValueError("dedupe is for full-fidelity searches; a multi-fidelity search continues children "
                         "instead of evaluating them again")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer (simulated parallel workers), got {workers!r}")
    if budget_seconds is not None and (isinstance(budget_seconds, bool) or not isinstance(
            budget_seconds, (int, float)) or not budget_seconds > 0):
        raise ValueError(f"budget_seconds must be a positive number of simulated seconds or None, got "
                         f"{budget_seconds!r}")
    fid = fidelity_of(env)
    if fid is None:
        raise ValueError("this env's evaluator declares no fidelity levels, so no child can stop early: use a "
                         "learning-curve task (ma2ml_env.learning_curve_env) or give your evaluator a "
                         "ma2ml_env.Fidelity, or run without a scheduler")
    return fid


def fidelity_config(scheduler: Scheduler, workers: int) -> dict[str, Any]:
    """What a multi-fidelity search adds to :func:`agents.base.search_config` (a resume must match it)."""
    return {"scheduler": scheduler.config(), "workers": workers}


@dataclass
class _Child:
    row: np.ndarray
    seed: int
    batch: int
    first: float | None = None            # the score at the level it was started at
    observed: bool = False                # the algorithm has observed ``first``


@dataclass
class _Batch:
    rows: np.ndarray
    children: list[int] = field(default_factory=list)
    observed: bool = False


def search_fidelity(algorithm: SearchAlgorithm, env: Any, budget: int, seed: int, batch_size: int,
                    callback: Callable[[list[Trial]], None] | None, rec: Recorder, scheduler: Scheduler,
                    workers: int, budget_seconds: float | None) -> SearchResult:
    """The loop (module docstring), between ``rec.begin`` and ``rec.end``."""
    fid = fidelity_of(env)
    assert fid is not None
    spaces = action_spaces_of(env)
    codec = JointActionCodec(spaces)
    algorithm.setup(spaces, seed)
    if callable(getattr(algorithm, "set_fidelity", None)):  # an algorithm that learns from every level
        algorithm.set_fidelity(fid)
    scheduler.bind(fid)
    stored = {t.index: t for t in rec.trials()}
    stored_rounds = {r.round: r for r in rec.rounds()}
    if callable(getattr(callback, "resume", None)):
        callback.resume([])
    res = np.asarray(fid.levels, dtype=np.float64)
    base = getattr(env, "unwrapped", env)
    children: list[_Child] = []
    batches: list[_Batch] = []
    queue: list[int] = []                 # proposed children not started yet
    running: list[tuple[float, int, Job, int, Trial]] = []  # (arrival, job index, job, child, trial)
    trials: list[Trial] = []
    used, clock, next_job_index = 0.0, 0.0, 0
    free = workers
    t0 = time.perf_counter()

    def out_of_budget() -> bool:
        return used >= budget - 1e-9 or (budget_seconds is not None and clock >= budget_seconds)

    def take_child() -> int:
        if not queue:
            _observe_arrived(algorithm, children, batches, rec, stored_rounds)
            rnd = len(batches)
            rows = _proposed(algorithm, codec, batch_size)
            if rnd in stored_rounds and not np.array_equal(stored_rounds[rnd].proposals, rows):
                warnings.warn(f"{type(algorithm).__name__} proposed other actions when replaying round {rnd}: it is "
                              "not deterministic given its seed, so the resumed search differs from an "
                              "uninterrupted one", RuntimeWarning, stacklevel=4)
            if rnd not in stored_rounds:
                rec.save_proposals(rnd, len(children), rows, None)
            batches.append(_Batch(rows))
            for r in rows:
                children.append(_Child(r, evaluation_seed(seed, len(children)), rnd))
                batches[-1].children.append(len(children) - 1)
                queue.append(len(children) - 1)
        return queue.pop(0)

    while True:
        # 1. give every free worker a job; the jobs started now are evaluated together
        started: list[tuple[int, Job, int]] = []
        while free and not out_of_budget():
            job = scheduler.next_job(True)
            if job is None:
                break
            if job.row is not None:  # the scheduler's own choice (validated here, where it enters)
                row = codec.validate_batch(np.asarray(job.row, dtype=np.int64)[None])[0]
                children.append(_Child(row, evaluation_seed(seed, len(children)), -1))
                child = len(children) - 1
            else:
                child = take_child() if job.child < 0 else job.child
            used += (res[job.level] - (res[job.start] if job.start >= 0 else 0.0)) / res[-1]
            started.append((next_job_index, job, child))
            next_job_index += 1
            free -= 1
        if started:
            results = _evaluate_jobs(base, started, children, stored)
            for (index, job, child), r in zip(started, results):
                c = children[child]
                t = Trial(index, c.batch, tuple(int(v) for v in c.row), r, c.seed, codec.key(c.row),
                          level=job.level, start=job.start, full=job.level == fid.top,
                          clock=clock + float(r.seconds))
                if index not in stored:
                    rec.add_trial(t)  # final now: committed before the simulated clock reaches it
                heapq.heappush(running, (t.clock, index, job, child, t))
        if not running:
            break
        # 2. the next results to arrive (all those of the same instant, in the order their jobs started)
        clock = running[0][0]
        arrived = []
        while running and running[0][0] == clock:
            arrived.append(heapq.heappop(running))
        for _, _, job, child, t in arrived:
            free += 1
            _deliver(t, job, child, children, algorithm, scheduler)
            trials.append(t)
        if callback is not None:
            callback([a[-1] for a in arrived])
    trials.sort(key=lambda t: t.index)
    result = SearchResult(getattr(algorithm, "name", type(algorithm).__name__), seed, trials,
                          time.perf_counter() - t0)
    if hasattr(base, "space") and trials:
        result.best_pipeline = base.space.build(np.asarray(result.best.action, dtype=np.int64))
    return result


def _deliver(t: Trial, job: Job, child: int, children: list[_Child], algorithm: SearchAlgorithm,
             scheduler: Scheduler) -> None:
    """Hand one arrived result to the scheduler, and a promoted child's to an algorithm that learns from
    every level (see "What the algorithm sees")."""
    c, score = children[child], float(t.result.score)
    scheduler.on_result(job, child, score)
    if c.batch < 0:  # the scheduler's own child
        return
    if c.first is None:
        c.first = score
    elif callable(getattr(algorithm, "observe_levels", None)):
        algorithm.observe_levels(c.row[None], np.array([score]), np.array([job.level], dtype=np.int64))


def _observe_arrived(algorithm: SearchAlgorithm, children: list[_Child], batches: list[_Batch], rec: Recorder,
                     stored_rounds: dict[int, Any]) -> None:
    """Before the algorithm proposes: it observes every child of its batches whose first result has arrived
    and that it has not observed yet (in the order it proposed them); a round is recorded as observed
    when all of its children are."""
    todo = [i for b in batches if not b.observed for i in b.children
            if children[i].first is not None and not children[i].observed]
    if not todo:
        return
    algorithm.observe(np.stack([children[i].row for i in todo]),
                      np.array([children[i].first for i in todo], dtype=np.float64))
    for i in todo:
        children[i].observed = True
    for rnd, b in enumerate(batches):
        if not b.observed and all(children[i].observed for i in b.children):
            b.observed = True
            if rnd not in stored_rounds or not stored_rounds[rnd].observed:
                rec.save_observed(rnd, None)


def _evaluate_jobs(base: Any, started: list[tuple[int, Job, int]], children: list[_Child],
                   stored: dict[int, Trial]) -> list[EvalResult]:
    """The results of the jobs started at one instant: from the store when it has them (checked to be the
    same job), the others in one evaluator call."""
    out: list[EvalResult | None] = [None] * len(started)
    todo = []
    for k, (index, job, child) in enumerate(started):
        t = stored.get(index)
        if t is None:
            todo.append(k)
            continue
        if t.action != tuple(int(v) for v in children[child].row) or t.level != job.level or t.start != job.start:
            raise RuntimeError(f"the stored trial {index} is not the job the resumed search replays (stored level "
                               f"{t.level} of {list(t.action)}, now level {job.level} of "
                               f"{children[child].row.tolist()}): the store holds a different search")
        out[k] = t.result
    if todo:
        rows = np.stack([children[started[k][2]].row for k in todo])
        seeds = np.array([children[started[k][2]].seed for k in todo], dtype=np.int64)
        levels = np.array([started[k][1].level for k in todo], dtype=np.int64)
        start = np.array([started[k][1].start for k in todo], dtype=np.int64)
        batch = base.evaluate(rows, seeds, validate=False, levels=levels, start=start)
        for k, r in zip(todo, batch):
            out[k] = r
    return out  # type: ignore[return-value]
