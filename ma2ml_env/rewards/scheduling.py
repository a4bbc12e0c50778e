"""The scheduling loop every evaluation backend runs: tasks to idle slots, results back, dead slots replaced.

Backends: :mod:`ma2ml_env.rewards.parallel` is the public entry (``BACKENDS``, ``wrap_evaluator``);
:mod:`~ma2ml_env.rewards.wrapper` is the base class of the backend wrappers; this module is the one loop
they share (:func:`run_tasks`) and the slot abstraction it drives (:class:`Slot`, :class:`SlotPool`);
:mod:`~ma2ml_env.rewards.serial` (one in-process slot), :mod:`~ma2ml_env.rewards.local_pool` (worker
processes) and :mod:`~ma2ml_env.rewards.ray_pool` (Ray actors) implement the slots;
:mod:`~ma2ml_env.rewards.retry` decides what a failed attempt becomes.

A slot evaluates one task at a time. The loop:

1. hands the next task to every ready, idle slot (its deadline becomes ``now + time_limit``);
2. waits, until the nearest deadline at most, for events of the busy slots (:meth:`SlotPool._collect`):
   :data:`READY` (the slot has started), an :class:`~ma2ml_env.rewards.retry.Outcome` (its attempt is
   over: a result, or an exception the evaluator raised) or :class:`Lost` (its worker died);
3. settles each finished attempt with the :class:`~ma2ml_env.rewards.retry.RetryPolicy` (final: reported;
   retry: back to the front of the queue); a lost slot, a slot past ``time_limit`` (``"timeout"``) and a
   slot that did not start in time (:meth:`SlotPool._startup_expired`) are replaced and their task's
   attempt fails; slots that keep dying at start-up abort the batch with ``RuntimeError``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ma2ml_env.rewards.retry import Outcome

if TYPE_CHECKING:  # pragma: no cover
    from ma2ml_env.rewards.base import EvalResult
    from ma2ml_env.rewards.retry import RetryPolicy, Task

__all__ = ["READY", "Event", "Lost", "Slot", "SlotPool", "run_tasks", "start_slots"]

#: Event of a slot that has started and can take a task.
READY = "ready"

#: Slots that may die at start-up in a row before the batch is aborted.
MAX_STARTUP_FAILURES = 3


@dataclass(frozen=True)
class Lost:
    """Event of a slot whose worker is gone (died, killed, lost with its node): its attempt fails with
    ``kind`` (``"crash"`` or ``"oom"``) and the slot is replaced."""

    kind: str
    message: str


#: What :meth:`SlotPool._collect` reports for one busy slot (``None``: nothing yet).
Event = str | Outcome | Lost | None


class Slot:
    """One worker as the loop sees it. ``task``: the task it evaluates (``None``: idle); ``ready``: it has
    started; ``started``/``deadline``: when its start-up or current attempt began and must end."""

    __slots__ = ("deadline", "ready", "started", "task")

    def __init__(self, startup_timeout: float) -> None:
        self.ready = False
        self.task: Task | None = None
        self.started = time.perf_counter()
        self.deadline = self.started + startup_timeout

    @property
    def busy(self) -> bool:
        """Starting up or evaluating: the loop waits for an event of it."""
        return not self.ready or self.task is not None


class SlotPool:
    """The slots of one backend, as :func:`run_tasks` drives them; each backend implements these."""

    #: The workers, as named in error messages ("worker processes", "Ray workers"...).
    slot_label = "workers"

    def _open_slots(self) -> list[Slot]:
        """The pool's slots, started if need be. The loop writes replacements into this same list."""
        raise NotImplementedError

    def _submit(self, slot: Slot, task: Task) -> None:
        """Start evaluating ``task`` (its pipeline with its seed) on the ready, idle ``slot``."""
        raise NotImplementedError

    def _collect(self, busy: Sequence[Slot], timeout: float | None) -> list[Event]:
        """Wait up to ``timeout`` seconds (``None``: until something happens) for events of the ``busy``
        slots; one event (or ``None``) per slot, in order. May raise when a worker cannot load the
        evaluator at all."""
        raise NotImplementedError

    def _replace_slot(self, slot: Slot) -> Slot:
        """Stop ``slot``'s worker (dead, hung or never started) and start a new one in its place."""
        raise NotImplementedError

    def _startup_expired(self, slot: Slot) -> str:
        """``slot`` did not start within the start-up timeout: the message of its failed start (or raise,
        for a backend where that means it never will)."""
        raise NotImplementedError

    def _stop_slots(self) -> None:
        """Stop every worker (before an error is raised)."""
        raise NotImplementedError


def run_tasks(pool: SlotPool, tasks: deque[Task], policy: RetryPolicy,
              finish: Callable[[int, EvalResult], None], *, time_limit: float | None, name: str) -> None:
    """Evaluate every task on the pool's slots, calling ``finish(task.index, result)`` once per task when
    its result is final (in completion order). See the module docstring for the steps."""
    slots = pool._open_slots()
    startup_failures = 0

    def settle(task: Task, outcome: Outcome) -> None:
        final = policy.settle(task, outcome)
        if final is None:
            tasks.appendleft(task)  # retried first, with the same seed
        else:
            finish(task.index, final)

    while tasks or any(s.task is not None for s in slots):
        now = time.perf_counter()
        for s in slots:
            if s.ready and s.task is None and tasks:
                s.task = tasks.popleft()
                s.started = now
                s.deadline = now + time_limit if time_limit is not None else math.inf
                pool._submit(s, s.task)
        busy = [s for s in slots if s.busy]
        timeout = max(0.0, min(s.deadline for s in busy) - now) if busy else 0.0
        events = pool._collect(busy, None if math.isinf(timeout) else timeout)
        now = time.perf_counter()
        for s, event in zip(busy, events):
            if event is READY:
                s.ready, startup_failures = True, 0
                continue
            if isinstance(event, Outcome):  # the attempt is over; the slot is idle again
                task, s.task = s.task, None
                if task is not None:
                    settle(task, event)
                continue
            if event is None:
                if now < s.deadline:
                    continue
                if s.ready:
                    event = Lost("timeout", f"evaluation ran past time_limit={time_limit:g}s; worker killed")
                else:
                    event = Lost("crash", pool._startup_expired(s))
            task, s.task = s.task, None
            slots[slots.index(s)] = pool._replace_slot(s)
            if task is not None:
                settle(task, Outcome.failed(event.kind, event.message, now - s.started))
                continue
            startup_failures += 1
            if startup_failures > MAX_STARTUP_FAILURES:
                pool._stop_slots()
                raise RuntimeError(f"{name}: {pool.slot_label} keep dying at start-up ({event.message})")


def start_slots(pool: SlotPool, *, name: str) -> None:
    """Start the pool's slots and wait until each is ready; ``RuntimeError`` when one cannot start."""
    slots = pool._open_slots()
    while not all(s.ready for s in slots):
        waiting = [s for s in slots if not s.ready]
        timeout = max(0.0, min(s.deadline for s in waiting) - time.perf_counter())
        for s, event in zip(waiting, pool._collect(waiting, timeout)):
            if event is READY:
                s.ready = True
                continue
            if event is None and time.perf_counter() < s.deadline:
                continue
            message = event.message if isinstance(event, Lost) else pool._startup_expired(s)
            pool._stop_slots()
            raise RuntimeError(f"{name}: a worker could not start or load the evaluator: {message}")
