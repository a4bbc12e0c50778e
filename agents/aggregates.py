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
    marl_eval_json(...), check_marl_eval(data)           # the marl-eval raw-data file, and its check

Implemented on numpy and scipy (rliable was archived in 2025; marl-eval pins numpy<2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import numpy as np
from scipy import stats

__all__ = [
    "check_marl_eval",
    "interval",
    "iqm",
    "marl_eval_json",
    "optimality_gap",
    "performance_profile",
    "probability_of_improvement",
    "stratified_resample",
]


def _matrix(scores: Any) -> np.ndarray:
    """``scores`` as a float array: a ``[runs, tasks]`` matrix, or a stack ``[..., runs, tasks]`` of them
    (one per bootstrap draw; the statistics below then give one value per matrix)."""
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim < 2 or x.size == 0:
        raise ValueError(f"scores must be a non-empty [runs, tasks] matrix (or a stack [..., runs, tasks] of "
                         f"them), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("scores must be finite (a failed run is scored, not left out)")
    return x


def _out(v: Any) -> Any:
    """A statistic of one matrix as a ``float``; of a stack, the array."""
    return float(v) if np.ndim(v) == 0 else v


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(*x.shape[:-2], -1)


def iqm(scores: Any) -> float | np.ndarray:
    """Interquartile mean of all ``runs x tasks`` scores: the mean of the middle 50% (25% trimmed each
    side), robust to outlier runs yet more efficient than the median."""
    return _out(stats.trim_mean(_flat(_matrix(scores)), 0.25, axis=-1))


def optimality_gap(scores: Any, gamma: float = 1.0) -> float | np.ndarray:
    """Mean shortfall of the scores from ``gamma``: ``mean(max(gamma - x, 0))`` (lower is better); with
    scores ``1 - regret`` and ``gamma = 1`` it is the mean normalised regret."""
    return _out(np.maximum(gamma - _matrix(scores), 0.0).mean(axis=(-2, -1)))


def probability_of_improvement(x: Any, y: Any) -> float | np.ndarray:
    """``P(X > Y)``: for each task, the probability that a random run of ``x`` scores higher than a random
    run of ``y`` (ties count one half: the Mann-Whitney U statistic over ``N_x * N_y``), averaged over
    tasks. 0.5 means neither is better."""
    x, y = _matrix(x), _matrix(y)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must cover the same tasks, got {x.shape[-1]} and {y.shape[-1]} columns")
    u = stats.mannwhitneyu(x, y, alternative="two-sided", axis=-2).statistic  # one U per task (column)
    return _out(u.mean(axis=-1) / (x.shape[-2] * y.shape[-2]))


def performance_profile(scores: Any, taus: Sequence[float] | np.ndarray) -> np.ndarray:
    """The score distribution: for each threshold ``tau``, the fraction of all runs (every task) whose
    score exceeds it. A curve above another's is better at every threshold."""
    x = _flat(_matrix(scores))
    return (x[..., None, :] > np.asarray(taus, dtype=np.float64)[:, None]).mean(axis=-1)


def stratified_resample(rng: np.random.Generator, *matrices: np.ndarray,
                        reps: int | None = None) -> tuple[np.ndarray, ...]:
    """A stratified bootstrap draw of each ``[runs, tasks]`` matrix: its runs resampled with replacement
    independently within every task (column); with ``reps``, that many draws stacked ``[reps, runs, tasks]``."""
    out = []
    for x in matrices:
        n, m = x.shape
        rows = rng.integers(0, n, size=(n, m) if reps is None else (reps, n, m))
        out.append(np.take_along_axis(x if reps is None else x[None], rows, axis=-2))
    return tuple(out)


def interval(statistic: Callable[..., Any], *scores: Any, reps: int = 2000, level: float = 0.95,
             seed: int = 0, vectorized: bool | None = None) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Percentile interval of ``statistic(*scores)`` under the stratified bootstrap (``reps`` draws,
    seeded): e.g. ``interval(iqm, a)``, ``interval(probability_of_improvement, a, b)`` or
    ``interval(lambda s: performance_profile(s, taus), a, vectorized=True)`` (element-wise for array
    statistics).

    ``vectorized``: the statistic takes stacks ``[reps, runs, tasks]`` of all the draws at once and returns
    one value (or row) per draw, as this module's statistics do (the default for them: ``None``); else it is
    called once per draw. Both see the same draws, so they give the same interval.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if isinstance(reps, bool) or not isinstance(reps, (int, np.integer)) or reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps!r}")
    mats = [_matrix(s) for s in scores]
    if any(x.ndim != 2 for x in mats):
        raise ValueError(f"interval resamples [runs, tasks] matrices, got shapes {[x.shape for x in mats]}")
    if vectorized is None:
        vectorized = statistic in (iqm, optimality_gap, probability_of_improvement)
    draws = stratified_resample(np.random.default_rng(seed), *mats, reps=int(reps))
    if vectorized:
        values = np.asarray(statistic(*draws), dtype=np.float64)
        if values.shape[:1] != (reps,):
            raise ValueError(f"a vectorized statistic must return one value per draw ({reps}), got shape "
                             f"{values.shape}")
    else:
        values = np.array([statistic(*(d[r] for d in draws)) for r in range(reps)], dtype=np.float64)
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return (float(lo), float(hi)) if np.ndim(lo) == 0 else (lo, hi)


def marl_eval_json(env: str, runs: Mapping[str, Mapping[str, Sequence[Mapping[str, Sequence[float]]]]],
                   steps: Sequence[int]) -> dict[str, Any]:
    """The marl-eval raw-data structure ``{env: {task: {algorithm: {"run_i": {"step_k": {"step_count",
    metric: [value]}, "absolute_metrics": {metric: [value]}}}}}}`` (checked by :func:`check_marl_eval`).

    Args:
        env: the environment name (e.g. ``"nb201"``).
        runs: ``{task: {algorithm: [run, ...]}}`` with each run ``{metric: value after each evaluation}``
            (e.g. the best-so-far score); every algorithm needs the same tasks and runs, as marl-eval requires.
        steps: the evaluation counts to report (1-based, each at most the curves' length); ``step_count`` is
            the count, and ``absolute_metrics`` hold each metric at the last step.
    """
    steps = [int(s) for s in steps]
    if not steps or min(steps) < 1:
        raise ValueError(f"steps must be a non-empty list of evaluation counts >= 1, got {steps}")
    at = np.asarray(steps) - 1
    tasks: dict[str, Any] = {}
    for task, algos in runs.items():
        tasks[task] = {}
        for algo, runs_ in algos.items():
            tasks[task][algo] = {}
            for r, run in enumerate(runs_):
                values = {}
                for name, curve in run.items():
                    curve = np.asarray(curve, dtype=np.float64)
                    if max(steps) > len(curve):
                        raise ValueError(f"{task}/{algo} run {r}: {name} has {len(curve)} evaluations; steps go "
                                         f"to {max(steps)}")
                    values[name] = curve[at]
                out = {f"step_{k}": {"step_count": s, **{name: [float(v[k])] for name, v in values.items()}}
                       for k, s in enumerate(steps)}
                out["absolute_metrics"] = {name: [float(v[-1])] for name, v in values.items()}
                tasks[task][algo][f"run_{r}"] = out
    data = {env: tasks}
    check_marl_eval(data)
    return data


def check_marl_eval(data: Any) -> None:
    """Raise ``ValueError`` naming the first place where ``data`` is not marl-eval raw data: ``{env: {task:
    {algorithm: {run: {"step_<k>": {"step_count": int, metric: [numbers]}, "absolute_metrics": {metric:
    [numbers]}}}}}}``, with every algorithm of an env on the same tasks, every task's algorithms with the
    same runs, and every run with the same steps, step counts and metrics (what marl-eval's tools assume)."""
    def fail(where: str, what: str) -> NoReturn:
        raise ValueError(f"not marl-eval data at {where}: {what}")

    def numbers(where: str, v: Any) -> None:
        if not isinstance(v, list) or not v or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v):
            fail(where, f"a metric must be a non-empty list of finite numbers, got {v!r}")

    def mapping(where: str, v: Any) -> dict:
        if not isinstance(v, dict) or not v:
            fail(where, f"expected a non-empty object, got {type(v).__name__} {v!r:.60}")
        return v

    for env, tasks in mapping("the top level", data).items():
        shapes: dict[str, Any] = {}  # what the first run seen has: every run must match it
        algo_sets = {}
        for task, algos in mapping(env, tasks).items():
            algo_sets[task] = sorted(mapping(f"{env}/{task}", algos))
            run_sets = {}
            for algo, runs in algos.items():
                run_sets[algo] = sorted(mapping(f"{env}/{task}/{algo}", runs))
                for run, body in runs.items():
                    where = f"{env}/{task}/{algo}/{run}"
                    if "absolute_metrics" not in mapping(where, body):
                        fail(where, "no absolute_metrics")
                    steps = sorted((k for k in body if k != "absolute_metrics"), key=str)
                    for k in steps:
                        if not k.startswith("step_") or not k[5:].isdigit():
                            fail(where, f"key {k!r} is neither step_<k> nor absolute_metrics")
                        step = mapping(f"{where}/{k}", body[k])
                        if not isinstance(step.get("step_count"), int) or isinstance(step["step_count"], bool):
                            fail(f"{where}/{k}", f"step_count must be an integer, got {step.get('step_count')!r}")
                        for name, v in step.items():
                            if name != "step_count":
                                numbers(f"{where}/{k}/{name}", v)
                    for name, v in mapping(f"{where}/absolute_metrics", body["absolute_metrics"]).items():
                        numbers(f"{where}/absolute_metrics/{name}", v)
                    shape = {k: (body[k]["step_count"], sorted(body[k])) for k in steps}
                    shape["absolute_metrics"] = sorted(body["absolute_metrics"])
                    if not shapes:
                        shapes = dict(shape, first=where)
                    elif {k: v for k, v in shapes.items() if k != "first"} != shape:
                        fail(where, f"its steps, step counts or metrics differ from those of {shapes['first']}")
            if len({tuple(v) for v in run_sets.values()}) > 1:
                fail(f"{env}/{task}", f"every algorithm needs the same runs, got {run_sets}")
        per_algo = {}
        for task, algos in algo_sets.items():
            for a in algos:
                per_algo.setdefault(a, []).append(task)
        if len({tuple(v) for v in per_algo.values()}) > 1 or any(len(v) != len(algo_sets) for v in per_algo.values()):
            fail(env, f"every algorithm needs the same tasks, got {per_algo}")
