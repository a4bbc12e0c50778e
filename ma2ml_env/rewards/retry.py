"""Failed attempts of the evaluation backends: what kind of failure an attempt was, and the retry policy.

Backends: :mod:`ma2ml_env.rewards.parallel` is the public entry (``BACKENDS``, ``wrap_evaluator``);
:mod:`~ma2ml_env.rewards.wrapper` is the base class of the backend wrappers (inner evaluator, streaming,
``config``); :mod:`~ma2ml_env.rewards.scheduling` is the one loop that hands tasks to worker slots;
:mod:`~ma2ml_env.rewards.serial`, :mod:`~ma2ml_env.rewards.local_pool` and
:mod:`~ma2ml_env.rewards.ray_pool` provide its slots (in-process, worker processes, Ray actors); this
module runs one attempt (:func:`attempt`) and decides whether a failed one is retried
(:class:`RetryPolicy`).

Kinds of failed attempts: ``"error"`` (the evaluator raised or returned something malformed, see
:func:`~ma2ml_env.rewards.base.evaluate_guarded`), ``"oom"`` (an out-of-memory exception or a result with
status ``"oom"``), ``"crash"`` (the worker died) and ``"timeout"`` (``time_limit`` passed).
"""

from __future__ import annotations

import dataclasses
import math
import time
import traceback
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from ma2ml_env.rewards.base import EvalResult, Evaluator

__all__ = ["FAILURE_KINDS", "Outcome", "RetryPolicy", "Task", "attempt", "describe", "failure_kind"]

#: Kinds of failed attempts the wrappers detect, and the status a pipeline gets when it runs out of retries.
FAILURE_KINDS = {"crash": "error", "timeout": "timeout", "oom": "oom", "error": "error"}


def failure_kind(exc: BaseException) -> str:
    """``"oom"`` for out-of-memory exceptions (host or device, recognised without importing torch),
    ``"error"`` for anything else."""
    if isinstance(exc, MemoryError):
        return "oom"
    names = {c.__name__ for c in type(exc).__mro__}
    if "OutOfMemoryError" in names:  # torch.cuda.OutOfMemoryError, ray.exceptions.OutOfMemoryError
        return "oom"
    msg = str(exc).lower()
    if isinstance(exc, RuntimeError) and ("out of memory" in msg or "cannot allocate memory" in msg):
        return "oom"
    return "error"


def describe(exc: BaseException, lines: int = 8) -> tuple[str, str]:
    """``("Type: message", the last lines of the traceback)``."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).strip()
    return f"{type(exc).__name__}: {exc}", "\n".join(tb.splitlines()[-lines:])


@dataclass(frozen=True)
class Outcome:
    """One attempt at one pipeline: the result the evaluator gave (``result``), or a failed attempt of
    ``kind`` (one of :data:`FAILURE_KINDS`) with its message and traceback. ``seconds``: its wall time."""

    result: EvalResult | None = None
    kind: str = ""
    message: str = ""
    traceback: str = ""
    seconds: float = math.nan

    @classmethod
    def failed(cls, kind: str, message: str, seconds: float = math.nan, tb: str = "") -> Outcome:
        return cls(kind=kind, message=message, traceback=tb, seconds=seconds)


def attempt(evaluator: Evaluator, row: np.ndarray, seed: int, level: int | None = None, start: int = -1) -> Outcome:
    """Evaluate one flat joint action with its seed (at fidelity ``level``, continuing from ``start``, when
    a level is given: :mod:`~ma2ml_env.rewards.fidelity`); never raises for a failure of the evaluator. An
    exception or a malformed result (:func:`~ma2ml_env.rewards.base.evaluate_guarded`'s rules) is a failed
    attempt: kind ``"oom"`` for out-of-memory exceptions (:func:`failure_kind`), else ``"error"``."""
    t0 = time.perf_counter()
    try:
        row = np.asarray(row, dtype=np.int64)
        result = (evaluator._evaluate_row(row, int(seed)) if level is None else
                  evaluator._evaluate_row(row, int(seed), int(level), int(start)))
    except Exception as exc:  # noqa: BLE001 - user code: any failure is an outcome
        message, tb = describe(exc)
        return Outcome.failed(failure_kind(exc), message, time.perf_counter() - t0, tb)
    return Outcome(result, seconds=time.perf_counter() - t0)


class Task:
    """One row of a batch: its position, its flat joint action, its seed, its fidelity request (``level``:
    ``None`` for none; ``start``: the level it continues from, ``-1`` fresh) and the attempts made so far."""

    __slots__ = ("attempts", "failures", "index", "level", "row", "seed", "start")

    def __init__(self, index: int, row: np.ndarray, seed: int, level: int | None = None, start: int = -1) -> None:
        self.index, self.row, self.seed = index, row, int(seed)
        self.level, self.start = (None if level is None else int(level)), int(start)
        self.attempts = 0
        self.failures: list[dict[str, Any]] = []


class RetryPolicy:
    """Which failed attempts are retried, and the result of a pipeline that runs out of retries.

    Args:
        max_retries: extra attempts of a pipeline whose attempt failed with a kind in ``retry_on``.
        retry_on: failure kinds that are retried: ``"crash"`` (worker died), ``"timeout"`` (``time_limit``
            passed), ``"oom"`` (out-of-memory exception or status), ``"error"`` (exception escaping the
            evaluator, or a malformed result). Statuses the evaluator returns itself (``diverged``, its own
            ``timeout``/``error``) are outcomes, not retried, except ``"oom"``.
        failure_score: the score of a pipeline that failed every attempt.
        backend: the backend's name, recorded in a failed result's ``info``.
    """

    def __init__(self, max_retries: int = 2, retry_on: Collection[str] = tuple(FAILURE_KINDS), *,
                 failure_score: float = 0.0, backend: str = "?") -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        bad = set(retry_on) - set(FAILURE_KINDS)
        if bad:
            raise ValueError(f"retry_on has unknown failure kinds {sorted(bad)}; "
                             f"use some of {list(FAILURE_KINDS)}")
        self.max_retries = max_retries
        self.retry_on = frozenset(retry_on)
        self.failure_score = float(failure_score)
        self.backend = backend

    def _again(self, task: Task, kind: str) -> bool:
        return kind in self.retry_on and task.attempts <= self.max_retries

    def settle(self, task: Task, outcome: Outcome) -> EvalResult | None:
        """Count the attempt; ``None`` when the task must be tried again, else its final result (the
        evaluator's, with ``attempts``/``failures`` in ``info`` after failed attempts, or a failed one)."""
        task.attempts += 1
        r = outcome.result
        if r is not None:
            if r.status == "oom" and self._again(task, "oom"):
                task.failures.append({"kind": "oom", "message": str(r.info.get("error", "status oom"))})
                return None
            if task.failures:
                info = {**r.info, "attempts": task.attempts, "failures": task.failures}
                r = dataclasses.replace(r, info=info)
            return r
        failure = {"kind": outcome.kind, "message": outcome.message}
        if outcome.traceback:
            failure["traceback"] = outcome.traceback
        task.failures.append(failure)
        if self._again(task, outcome.kind):
            return None
        return EvalResult(
            score=self.failure_score, status=FAILURE_KINDS[outcome.kind],
            seconds=0.0 if math.isnan(outcome.seconds) else outcome.seconds,
            info={"error": outcome.message, "failure": outcome.kind, "attempts": task.attempts,
                  "failures": task.failures, "backend": self.backend},
        )
