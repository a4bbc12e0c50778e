"""Search logging: TensorBoard scalars and a progress bar with ETA, as a :func:`agents.base.run` callback.

    from agents.tracking import SearchLogger
    with SearchLogger(algo, budget=200, tensorboard="runs/ma2ml-s0") as log:
        result = run(algo, env, budget=200, batch_size=8, callback=log)     # or run_durable(...)
    # tensorboard --logdir runs

Logged (``step`` = trials done, so curves of different batch sizes line up):

=========================  ===========================================================================
tag                        value
=========================  ===========================================================================
``search/score``           each trial's reward
``search/best_so_far``     the best reward so far
``search/failures``        failed evaluations so far (status other than ``ok``/``over_budget``)
``round/seconds``          wall time of the round (propose + evaluate + observe)
``round/mean_score``       mean reward of the round
``round/trials_per_s``     evaluation throughput of the round
``status/<status>``        trials so far with each status
``policy/entropy/<agent>`` entropy (nats) of each agent's policy, when the algorithm has ``probabilities()``
``algo/<name>[/<agent>]``  every entry of ``algorithm.metrics()`` when the algorithm has it: a number, or a
                           dict of numbers (e.g. per-agent advantage / credit), e.g. ``critic_loss``
=========================  ===========================================================================

``torch.utils.tensorboard`` (and the ``tensorboard`` package: ``pip install "ma2ml[tensorboard]"``) and tqdm
are imported only when used.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agents.base import Trial
from ma2ml_env import SUCCESS_STATUSES

__all__ = ["SearchLogger", "check_tensorboard"]



def check_tensorboard() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or an ImportError that says what to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # tensorboard missing (torch's module imports it)
        raise ImportError(f'TensorBoard logging needs tensorboard: pip install "ma2ml[tensorboard]" ({exc})') from exc
    return SummaryWriter


def _make_writer(logdir: str | os.PathLike) -> Any:
    return check_tensorboard()(log_dir=str(logdir))


def _scalars(value: Any, prefix: str) -> dict[str, float]:
    """Flatten a metric (number, array, or mapping of those) into scalar tags."""
    if isinstance(value, Mapping):
        out: dict[str, float] = {}
        for k, v in value.items():
            out.update(_scalars(v, f"{prefix}/{k}"))
        return out
    try:
        arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=float)
    except (TypeError, ValueError):
        return {}
    if arr.ndim == 0:
        return {prefix: float(arr)} if math.isfinite(float(arr)) else {}
    return {f"{prefix}/{i}": float(x) for i, x in enumerate(arr.ravel()) if math.isfinite(float(x))}


class SearchLogger:
    """A :func:`agents.base.run` / :func:`agents.store.run_durable` callback that logs the search.

    Args:
        algorithm: the search algorithm (read for ``metrics()`` and ``probabilities()`` after each round).
        budget: total evaluations (the progress bar's total and ETA).
        tensorboard: a TensorBoard log folder (``None``: no TensorBoard).
        progress: show a tqdm progress bar (trials, rate, ETA, best score).
        desc: progress-bar label (default: the algorithm's name).
    """

    def __init__(self, algorithm: Any = None, budget: int | None = None, tensorboard: str | os.PathLike | None = None,
                 progress: bool = True, desc: str | None = None) -> None:
        self.algorithm = algorithm
        self.budget = budget
        self.writer = _make_writer(tensorboard) if tensorboard is not None else None
        self.progress = progress
        self.desc = desc if desc is not None else getattr(algorithm, "name", None)
        self.done = 0
        self.best = -math.inf
        self.statuses: Counter[str] = Counter()
        self._bar: Any = None
        self._last = time.perf_counter()

    def _ensure_bar(self) -> None:
        if self.progress and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.budget, initial=self.done, desc=self.desc, unit="trial", dynamic_ncols=True)

    def resume(self, trials: Sequence[Trial]) -> None:
        """Account for trials already done (a resumed search); nothing is re-logged to TensorBoard."""
        for t in trials:
            self.best = max(self.best, t.score)
            self.statuses[t.status] += 1
        self.done += len(trials)
        self._ensure_bar()
        self._last = time.perf_counter()

    def __call__(self, trials: Sequence[Trial]) -> None:
        now = time.perf_counter()
        seconds, self._last = now - self._last, now
        self._ensure_bar()
        w = self.writer
        for t in trials:
            self.done += 1
            self.best = max(self.best, t.score)
            self.statuses[t.status] += 1
            if w is not None:
                w.add_scalar("search/score", t.score, self.done)
                w.add_scalar("search/best_so_far", self.best, self.done)
        failures = sum(n for s, n in self.statuses.items() if s not in SUCCESS_STATUSES)
        if w is not None and trials:
            step = self.done
            w.add_scalar("search/failures", failures, step)
            w.add_scalar("round/seconds", seconds, step)
            w.add_scalar("round/mean_score", float(np.mean([t.score for t in trials])), step)
            w.add_scalar("round/trials_per_s", len(trials) / max(seconds, 1e-9), step)
            for s, n in self.statuses.items():
                w.add_scalar(f"status/{s}", n, step)
            for tag, v in self.algorithm_scalars().items():
                w.add_scalar(tag, v, step)
        if self._bar is not None:
            self._bar.set_postfix(best=f"{self.best:.4f}", failed=failures, refresh=False)
            self._bar.update(len(trials))

    def algorithm_scalars(self) -> dict[str, float]:
        """Scalars read from the algorithm: ``policy/entropy/<agent>`` and ``algo/<metric>``."""
        algo, out = self.algorithm, {}
        if algo is None:
            return out
        probs = getattr(algo, "probabilities", None)
        if callable(probs):
            with contextlib.suppress(Exception):  # logging must never stop a search
                for agent, dists in probs().items():
                    ent = 0.0
                    for p in dists:
                        p = np.asarray(p, dtype=float)
                        p = p[p > 0]
                        ent -= float((p * np.log(p)).sum())
                    out[f"policy/entropy/{agent}"] = ent
        metrics = getattr(algo, "metrics", None)
        if callable(metrics):
            with contextlib.suppress(Exception):  # logging must never stop a search
                out.update(_scalars(metrics() or {}, "algo"))
        return out

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None

    def __enter__(self) -> SearchLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
