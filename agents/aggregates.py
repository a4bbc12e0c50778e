"""Aggregate search results across tasks the way the MARL literature reports them.

Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical Precipice" (NeurIPS 2021),
as used by marl-eval (Gorsane et al. 2022): scores of ``N`` runs on ``M`` tasks, normalised so that
higher is better and 1 is the best possible (here: ``1 - normalised regret``), aggregated over all runs
and tasks, with intervals from a *stratified* bootstrap (runs resampled with replacement within each task,
so every task keeps its weight).

    scores = {"ma2ml": array [N, M], "tpe": array [N, M]}
    iqm(scores["ma2ml"])                                 # interquartile mean of the N*M scores
    interval(iqm, scores["ma2ml"], seed=0)               # (low, high): 95% stratified-bootstrap interval
    probability_of_improvement(scores["ma2ml"], scores["tpe"])   # P(X > Y), averaged over tasks
    performance_profile(scores["ma2ml"], taus)           # fraction of runs with score > tau, per tau
    marl_eval_json(...)                                  # the marl-eval raw-data file

Implemented on numpy and scipy (rliable was archived in 2025; marl-eval pins numpy<2).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "interval",
    "iqm",
    "marl_eval_json",
    "optimality_gap",
    "performance_profile",
    "probability_of_improvement",
    "stratified_resample",
]


def _matrix(scores: Any) -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"scores must be a non-empty [runs, tasks] matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("scores must be finite (a failed run is scored, not left out)")
    return x


def iqm(scores: Any) -> float:
    """Interquartile mean of all ``runs x tasks`` scores: the mean of the middle 50% (25% trimmed each
    side), robust to outlier runs yet more efficient than the median."""
    return float(stats.trim_mean(_matrix(scores).ravel(), 0.25))


def optimality_gap(scores: Any, gamma: float = 1.0) -> float:
    """Mean shortfall of the scores from ``gamma``: ``mean(max(gamma - x, 0))`` (lower is better); with
    scores ``1 - regret`` and ``gamma = 1`` it is the mean normalised regret."""
    return float(np.maximum(gamma - _matrix(scores), 0.0).mean())


def probability_of_improvement(x: Any, y: Any) -> float:
    """``P(X > Y)``: for each task, the probability that a random run of ``x`` scores higher than a random
    run of ``y`` (ties count one half: the Mann-Whitney U statistic over ``N_x * N_y``), averaged over
    tasks. 0.5 means neither is better."""
    x, y = _matrix(x), _matrix(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must cover the same tasks, got {x.shape[1]} and {y.shape[1]} columns")
    u = [stats.mannwhitneyu(x[:, m], y[:, m], alternative="two-sided").statistic for m in range(x.shape[1])]
    return float(np.mean(u) / (x.shape[0] * y.shape[0]))


def performance_profile(scores: Any, taus: Sequence[float] | np.ndarray) -> np.ndarray:
    """The score distribution: for each threshold ``tau``, the fraction of all runs (every task) whose
    score exceeds it. A curve above another's is better at every threshold."""
    x = _matrix(scores).ravel()
    return (x[None, :] > np.asarray(taus, dtype=np.float64)[:, None]).mean(axis=1)


def stratified_resample(rng: np.random.Generator, *matrices: np.ndarray) -> tuple[np.ndarray, ...]:
    """One stratified bootstrap draw of each ``[runs, tasks]`` matrix: its runs resampled with replacement
    independently within every task (column)."""
    out = []
    for x in matrices:
        n, m = x.shape
        rows = rng.integers(0, n, size=(n, m))
        out.append(np.take_along_axis(x, rows, axis=0))
    return tuple(out)


def interval(statistic: Callable[..., Any], *scores: Any, reps: int = 2000, level: float = 0.95,
             seed: int = 0) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Percentile interval of ``statistic(*scores)`` under the stratified bootstrap (``reps`` draws,
    seeded): e.g. ``interval(iqm, a)``, ``interval(probability_of_improvement, a, b)`` or
    ``interval(lambda s: performance_profile(s, taus), a)`` (element-wise for array statistics)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps}")
    mats = [_matrix(s) for s in scores]
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(*stratified_resample(rng, *mats)) for _ in range(reps)], dtype=np.float64)
    lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return (float(lo), float(hi)) if np.ndim(lo) == 0 else (lo, hi)


def marl_eval_json(env: str, curves: Mapping[str, Mapping[str, Sequence[Sequence[float]]]],
                   steps: Sequence[int], metrics: Mapping[str, Callable[[np.ndarray], np.ndarray]],
                   ) -> dict[str, Any]:
    """The marl-eval raw-data structure ``{env: {task: {algorithm: {"run_i": {"step_k": {"step_count",
    metric: [value]}, "absolute_metrics": {metric: [value]}}}}}}``.

    Args:
        env: the environment name (e.g. ``"ma2ml"``).
        curves: ``{task: {algorithm: [best-so-far score curve of each run]}}``; every algorithm needs the
            same tasks and runs, as marl-eval requires.
        steps: the evaluation counts to report (1-based, each at most the curves' length).
        metrics: ``{name: f}`` with ``f`` mapping a run's best-so-far curve values at ``steps`` to the
            metric's values (e.g. ``lambda v: v`` for the score, ``lambda v: (opt - v) / span`` for regret).
            ``absolute_metrics`` hold each metric at the last step.
    """
    tasks: dict[str, Any] = {}
    for task, algos in curves.items():
        runs = {len(v) for v in algos.values()}
        if len(runs) != 1:
            raise ValueError(f"task {task!r}: every algorithm needs the same number of runs, got "
                             f"{ {a: len(v) for a, v in algos.items()} }")
        tasks[task] = {}
        for algo, runs_ in algos.items():
            tasks[task][algo] = {}
            for r, curve in enumerate(runs_):
                curve = np.asarray(curve, dtype=np.float64)
                if max(steps) > len(curve):
                    raise ValueError(f"{task}/{algo} run {r} has {len(curve)} evaluations; steps go to "
                                     f"{max(steps)}")
                at = curve[np.asarray(steps) - 1]
                values = {name: np.asarray(f(at), dtype=np.float64) for name, f in metrics.items()}
                run = {f"step_{k}": {"step_count": int(s), **{name: [float(v[k])] for name, v in values.items()}}
                       for k, s in enumerate(steps)}
                run["absolute_metrics"] = {name: [float(v[-1])] for name, v in values.items()}
                tasks[task][algo][f"run_{r}"] = run
    return {env: tasks}
