"""The base class of the evaluation backends: an inner evaluator run through the shared scheduling loop.

Backends: :mod:`ma2ml_env.rewards.parallel` is the public entry (``BACKENDS``, ``wrap_evaluator``); this
module is what every backend wrapper shares (:class:`BackendWrapper`: the inner evaluator, the retry
policy, streaming results, ``config``); :mod:`~ma2ml_env.rewards.scheduling` is the one loop that hands
tasks to slots; :mod:`~ma2ml_env.rewards.serial`, :mod:`~ma2ml_env.rewards.local_pool` and
:mod:`~ma2ml_env.rewards.ray_pool` implement the slots; :mod:`~ma2ml_env.rewards.retry` classifies failed
attempts and decides which are retried.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ma2ml_env.rewards.base import BatchResult, EvalResult, Evaluator, make_evaluator
from ma2ml_env.rewards.fidelity import fidelity_request
from ma2ml_env.rewards.retry import FAILURE_KINDS, RetryPolicy, Task
from ma2ml_env.rewards.scheduling import SlotPool, run_tasks

if TYPE_CHECKING:  # pragma: no cover
    from ma2ml_env.space import SearchSpace

__all__ = ["BackendWrapper", "check_workers"]


def check_workers(workers: int | None) -> None:
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")


class BackendWrapper(Evaluator, SlotPool):
    """What the backends share: the inner evaluator, retries and failed results, streaming, ``config``.

    A subclass implements the :class:`~ma2ml_env.rewards.scheduling.SlotPool` methods (its slots);
    :meth:`evaluate` runs the batch (one task per row) through :func:`~ma2ml_env.rewards.scheduling.run_tasks`.

    Args:
        inner: an :class:`Evaluator` or a registered reward name (built with ``inner_kwargs``).
        max_retries, retry_on: see :class:`~ma2ml_env.rewards.retry.RetryPolicy`.
        time_limit: seconds one attempt may run (``None``: no limit; not enforceable in-process).

    :meth:`config` is the inner evaluator's: the backend, workers, retries and time limits are execution
    settings, not part of what determines a reward. ``failure_score`` and ``wall_clock_seconds`` are the
    inner's; ``deterministic`` is the inner's unless a ``time_limit`` can cut an evaluation short.
    """

    backend = "?"

    def __init__(
        self,
        inner: Evaluator | str,
        *,
        max_retries: int = 2,
        retry_on: Collection[str] = tuple(FAILURE_KINDS),
        time_limit: float | None = None,
        inner_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.policy = RetryPolicy(max_retries, retry_on, backend=self.backend)
        if time_limit is not None and not (isinstance(time_limit, (int, float)) and time_limit > 0):
            raise ValueError(f"time_limit must be > 0 seconds or None, got {time_limit!r}")
        self.inner = make_evaluator(inner, **dict(inner_kwargs or {}))
        if isinstance(self.inner, BackendWrapper):
            raise TypeError(f"{type(self).__name__} cannot wrap another parallel wrapper "
                            f"({type(self.inner).__name__})")
        self.time_limit = None if time_limit is None else float(time_limit)
        self.name = f"{self.backend}[{self.inner.name}]"
        self.failure_score = self.policy.failure_score = float(self.inner.failure_score)
        # a time limit makes the outcome depend on the wall clock
        self.deterministic = bool(self.inner.deterministic) and self.time_limit is None
        self.wall_clock_seconds = bool(self.inner.wall_clock_seconds)

    @property
    def max_retries(self) -> int:
        return self.policy.max_retries

    @property
    def retry_on(self) -> frozenset[str]:
        return self.policy.retry_on

    def config(self) -> dict[str, Any]:
        """The inner evaluator's :meth:`~ma2ml_env.rewards.base.Evaluator.config`, unchanged."""
        return self.inner.config()

    def bind(self, space: SearchSpace) -> None:
        self.inner.bind(space)
        self.space = space

    @property
    def fidelity(self) -> Any:
        return self.inner.fidelity

    def evaluate(self, actions: np.ndarray, seeds: np.ndarray,
                 on_result: Callable[[int, EvalResult], None] | None = None, *,
                 levels: np.ndarray | None = None, start: np.ndarray | None = None) -> BatchResult:
        """Evaluate the rows on this backend's slots, calling ``on_result(i, result)`` as soon as row ``i``'s
        result is final (after its retries); the batch returned is in input order. ``levels``/``start``
        (:mod:`~ma2ml_env.rewards.fidelity`) are checked here and each row's travels with its task to the
        worker (a training backend's saved states live in the worker that made them, or in its
        ``state_dir``)."""
        if len(actions) != len(seeds):
            raise ValueError(f"got {len(seeds)} seeds for {len(actions)} joint actions; "
                             "pass one seed per joint action")
        lv = st = None
        if (levels is not None or start is not None) and self.fidelity is not None:
            lv, st = (a.tolist() for a in fidelity_request(self.fidelity, len(actions), levels, start))
        elif levels is not None or start is not None:  # checked: the one level of an evaluator without any
            fidelity_request(None, len(actions), levels, start)
        results: list[EvalResult | None] = [None] * len(actions)

        def finish(index: int, result: EvalResult) -> None:
            results[index] = result
            if on_result is not None:
                on_result(index, result)

        if len(actions):
            tasks = deque(Task(i, row, s, None if lv is None else lv[i], -1 if st is None else st[i])
                          for i, (row, s) in enumerate(zip(actions, np.asarray(seeds).tolist())))
            run_tasks(self, tasks, self.policy, finish, time_limit=self.time_limit, name=self.name)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:  # pragma: no cover - a bug in a backend's slots
            raise RuntimeError(f"{self.name}: no result for rows {missing}")
        return BatchResult.from_results(results)  # type: ignore[arg-type]

    def close(self) -> None:
        self.inner.close()
