"""The serial backend with retries: the inner evaluator in this process, one pipeline at a time.

Backends: :mod:`ma2ml_env.rewards.parallel` is the public entry (``BACKENDS``, ``wrap_evaluator``);
:mod:`~ma2ml_env.rewards.wrapper` is the base class of the backend wrappers;
:mod:`~ma2ml_env.rewards.scheduling` is the one loop they share; this module gives it a single in-process
slot; :mod:`~ma2ml_env.rewards.local_pool` and :mod:`~ma2ml_env.rewards.ray_pool` give it worker processes
and Ray actors; :mod:`~ma2ml_env.rewards.retry` decides which failed attempts are retried.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ma2ml_env.rewards.base import Evaluator
from ma2ml_env.rewards.retry import Outcome, attempt
from ma2ml_env.rewards.scheduling import Event, Slot
from ma2ml_env.rewards.wrapper import BackendWrapper

if TYPE_CHECKING:  # pragma: no cover
    from ma2ml_env.rewards.retry import Task

__all__ = ["SerialEvaluator"]


class SerialEvaluator(BackendWrapper):
    """The inner evaluator in this process, one pipeline at a time, with retries and streaming.

    Each pipeline is evaluated through :func:`~ma2ml_env.rewards.base.evaluate_guarded`: an exception or a
    malformed result is a failed attempt (``"oom"`` for out-of-memory exceptions, else ``"error"``),
    retried per ``retry_on`` and then an ``"error"``/``"oom"`` result. It cannot survive a crash of this
    process nor stop a hung evaluation: use :class:`~ma2ml_env.rewards.local_pool.LocalPoolEvaluator`
    (``workers=1``) for that isolation.
    """

    backend = "serial"
    slot_label = "in-process evaluations"

    def __init__(self, inner: Evaluator | str, *, max_retries: int = 2,
                 retry_on: Collection[str] = ("oom", "error"), inner_kwargs: Mapping[str, Any] | None = None,
                 **inner_kw: Any) -> None:
        super().__init__(inner, max_retries=max_retries, retry_on=retry_on,
                         inner_kwargs={**dict(inner_kwargs or {}), **inner_kw})
        self._done: Outcome | None = None

    # -- the one slot: the attempt runs when it is submitted -------------------------------------------------
    def _open_slots(self) -> list[Slot]:
        slot = Slot(math.inf)
        slot.ready = True
        return [slot]

    def _submit(self, slot: Slot, task: Task) -> None:
        self._done = attempt(self.inner, task.row, task.seed, task.level, task.start)

    def _collect(self, busy: Sequence[Slot], timeout: float | None) -> list[Event]:
        done, self._done = self._done, None
        return [done] if busy else []

    def _replace_slot(self, slot: Slot) -> Slot:  # pragma: no cover - an in-process slot is never lost
        raise AssertionError("the in-process slot cannot be lost")

    def _startup_expired(self, slot: Slot) -> str:  # pragma: no cover - it starts ready
        raise AssertionError("the in-process slot starts ready")

    def _stop_slots(self) -> None:
        self._done = None
