"""The ``"local"`` backend: persistent worker processes on this machine, one pipeline per task.

Backends: :mod:`ma2ml_env.rewards.parallel` is the public entry (``BACKENDS``, ``wrap_evaluator``);
:mod:`~ma2ml_env.rewards.wrapper` is the base class of the backend wrappers;
:mod:`~ma2ml_env.rewards.scheduling` is the one loop they share; this module gives it worker processes as
slots (start, hand a task over a pipe, receive, kill and replace); :mod:`~ma2ml_env.rewards.serial` and
:mod:`~ma2ml_env.rewards.ray_pool` give it an in-process slot and Ray actors;
:mod:`~ma2ml_env.rewards.retry` decides which failed attempts are retried and
:mod:`~ma2ml_env.rewards.devices` which GPU each worker gets.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
import weakref
from collections.abc import Collection, Mapping, Sequence
from multiprocessing.connection import wait as _wait_ready
from typing import TYPE_CHECKING, Any

from ma2ml_env.rewards.base import Evaluator
from ma2ml_env.rewards.devices import pin_cuda_device, visible_gpus
from ma2ml_env.rewards.retry import FAILURE_KINDS, Outcome, attempt, describe
from ma2ml_env.rewards.scheduling import READY, Event, Lost, Slot, start_slots
from ma2ml_env.rewards.wrapper import BackendWrapper, check_workers

if TYPE_CHECKING:  # pragma: no cover
    from ma2ml_env.rewards.retry import Task
    from ma2ml_env.space import SearchSpace

__all__ = ["LocalPoolEvaluator"]


# -- inside a worker process -------------------------------------------------------------------------
def _watch_parent(ppid: int) -> None:
    """Exit when the parent process is gone (it was killed: ``kill -9`` leaves no chance to stop us)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != ppid:
            os._exit(0)


def _worker_main(conn: Any, environ: Mapping[str, str], ppid: int) -> None:
    """Body of a local worker: receive the pickled evaluator once, then evaluate one joint action per message.

    Messages to the parent: ``("ready", pid)``, ``("fatal", message, traceback)`` (the evaluator could not
    be loaded) and ``("done", Outcome)`` per task."""
    os.environ.update(environ)
    threading.Thread(target=_watch_parent, args=(ppid,), daemon=True).start()
    try:
        evaluator = pickle.loads(conn.recv_bytes())
        if environ.get("CUDA_VISIBLE_DEVICES") is not None:
            pin_cuda_device(evaluator)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("fatal", *describe(exc, lines=20)))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        outcome = attempt(evaluator, *msg)  # row, seed, level, start
        try:
            conn.send(("done", outcome))
        except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
            message, tb = describe(exc)
            conn.send(("done", Outcome.failed("error", message, outcome.seconds, tb)))


# -- in the parent ----------------------------------------------------------------------------------
class _Worker(Slot):
    """A worker process as a slot: its process, its end of the pipe, its environment and slot number."""

    __slots__ = ("conn", "environ", "index", "proc")

    def __init__(self, index: int, proc: Any, conn: Any, environ: dict[str, str],
                 startup_timeout: float) -> None:
        super().__init__(startup_timeout)
        self.index, self.proc, self.conn, self.environ = index, proc, conn, environ


def _stop_workers(workers: list[_Worker]) -> None:
    for w in workers:
        with contextlib.suppress(OSError, ValueError):
            w.conn.send(None)
    deadline = time.monotonic() + 2.0
    for w in workers:
        w.proc.join(max(0.0, deadline - time.monotonic()))
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join(1.0)
        w.conn.close()
    workers.clear()


def _death_message(w: _Worker) -> str:
    w.proc.join(1.0)
    code = w.proc.exitcode
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        hint = " (killed: kill -9 or the out-of-memory killer)" if -code == signal.SIGKILL else ""
        return f"worker process died from signal {name}{hint}"
    return f"worker process exited with code {code}"


class LocalPoolEvaluator(BackendWrapper):
    """Evaluate a round's pipelines concurrently in persistent local worker processes.

    Each worker is a ``spawn``-ed process holding its own copy of the (bound) inner evaluator, so data a
    backend caches (e.g. the training set on the GPU) is loaded once per worker. Rows (flat joint actions)
    are handed out one at a time to idle workers; each result is final the moment it arrives
    (:meth:`~ma2ml_env.rewards.wrapper.BackendWrapper.evaluate` calls ``on_result`` then). A worker
    evaluates each row as one attempt (:func:`~ma2ml_env.rewards.retry.attempt`), so an exception or a
    malformed result is a failed ``"error"``/``"oom"`` attempt; a worker that dies is a ``"crash"`` and one
    past ``time_limit`` a ``"timeout"``: both are killed and replaced.

    Devices: the pool reads only the inner evaluator's declared
    :attr:`~ma2ml_env.rewards.base.Evaluator.device`. When it is a CUDA device (``"cuda"``, ``"cuda:1"``,
    a ``torch.device``) the workers are pinned round-robin to the GPUs of ``devices``, one GPU each, with
    ``CUDA_VISIBLE_DEVICES``, and each worker's copy of the evaluator gets ``device`` = ``cuda:0`` (its only
    visible GPU; a string stays a string). ``None`` or a CPU device: no pinning.

    Args:
        inner: an :class:`Evaluator` or a registered reward name (``inner_kwargs`` / extra keyword arguments
            configure it).
        workers: number of worker processes. Default: one per GPU when the evaluator computes on CUDA (its
            ``device``), else ``os.cpu_count()``.
        devices: GPU ids to pin workers to, round-robin, with ``CUDA_VISIBLE_DEVICES``; ``"auto"``: every
            visible GPU when the evaluator computes on CUDA, else none; ``None``: no pinning.
        threads_per_worker: ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` of each worker (``"auto"``:
            ``cpu_count // workers``, so CPU-trained children do not oversubscribe the cores; ``None``:
            inherit). Variables the user set already are kept.
        time_limit: seconds one evaluation may take in a worker; past it the worker is killed and replaced and
            the attempt fails with kind ``"timeout"``.
        max_retries, retry_on: see :class:`~ma2ml_env.rewards.retry.RetryPolicy` (default: retry every
            failure kind twice).
        startup_timeout: seconds a new worker may take to import and load the evaluator.
        start_method: ``multiprocessing`` start method (``"spawn"``: safe with CUDA and threads).
    """

    backend = "local"
    slot_label = "worker processes"

    def __init__(
        self,
        inner: Evaluator | str,
        workers: int | None = None,
        *,
        devices: Sequence[int | str] | str | None = "auto",
        threads_per_worker: int | str | None = "auto",
        time_limit: float | None = None,
        max_retries: int = 2,
        retry_on: Collection[str] = tuple(FAILURE_KINDS),
        startup_timeout: float = 300.0,
        start_method: str = "spawn",
        inner_kwargs: Mapping[str, Any] | None = None,
        **inner_kw: Any,
    ) -> None:
        super().__init__(inner, max_retries=max_retries, retry_on=retry_on, time_limit=time_limit,
                         inner_kwargs={**dict(inner_kwargs or {}), **inner_kw})
        check_workers(workers)
        if devices == "auto":
            gpus = visible_gpus(self.inner)
        elif devices is None:
            gpus = []
        elif isinstance(devices, str):
            raise ValueError(f"devices must be 'auto', None or a list of GPU ids, got {devices!r}")
        else:
            gpus = [str(d) for d in devices]
        self.devices = gpus
        self.workers = workers if workers is not None else (len(gpus) or os.cpu_count() or 1)
        if threads_per_worker == "auto":
            threads_per_worker = max(1, (os.cpu_count() or 1) // self.workers)
        if threads_per_worker is not None and (
                not isinstance(threads_per_worker, int) or threads_per_worker < 1):
            raise ValueError("threads_per_worker must be a positive integer, 'auto' or None, "
                             f"got {threads_per_worker!r}")
        self.threads_per_worker = threads_per_worker
        self.startup_timeout = float(startup_timeout)
        self.start_method = start_method
        self._pool: list[_Worker] = []
        self._payload: bytes | None = None
        self._finalizer: Any = None
        #: worker processes started over this evaluator's life (restarts after crashes and timeouts included)
        self.workers_started = 0

    # -- pickling: configuration only, never processes ----------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_pool=[], _payload=None, _finalizer=None)
        return state

    def bind(self, space: SearchSpace) -> None:
        super().bind(space)
        self._payload = None
        self._shutdown()  # workers hold the previous binding

    def start(self) -> None:
        """Start the workers now and wait until each has loaded the evaluator (otherwise they start on the
        first :meth:`evaluate`, which hands pipelines to whichever worker is ready first)."""
        start_slots(self, name=self.name)

    def close(self) -> None:
        self._shutdown()
        super().close()

    # -- worker processes -----------------------------------------------------------------------------------
    def _environ(self, index: int) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.devices:
            env["CUDA_VISIBLE_DEVICES"] = self.devices[index % len(self.devices)]
        if self.threads_per_worker is not None:
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                if var not in os.environ:
                    env[var] = str(self.threads_per_worker)
        return env

    def _spawn(self, index: int) -> _Worker:
        if self._payload is None:
            self._payload = pickle.dumps(self.inner, protocol=pickle.HIGHEST_PROTOCOL)
        ctx = mp.get_context(self.start_method)
        parent, child = ctx.Pipe(duplex=True)
        environ = self._environ(index)
        proc = ctx.Process(target=_worker_main, args=(child, environ, os.getpid()), daemon=True,
                           name=f"ma2ml-eval-{index}")
        # CUDA_VISIBLE_DEVICES must be set before the child's interpreter starts anything CUDA: the
        # spawned interpreter inherits os.environ at start, and _worker_main sets it again first thing.
        saved = {k: os.environ.get(k) for k in environ}
        os.environ.update(environ)
        try:
            proc.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        child.close()
        parent.send_bytes(self._payload)
        self.workers_started += 1
        return _Worker(index, proc, parent, environ, self.startup_timeout)

    def _shutdown(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # stops the workers once
            self._finalizer = None
        self._pool = []

    # -- the slots of the scheduling loop --------------------------------------------------------------------
    def _open_slots(self) -> list[_Worker]:
        if not hasattr(self, "space"):
            raise RuntimeError(f"{type(self).__name__}.bind(space) must be called before evaluate()")
        if not self._pool:
            self._pool = [self._spawn(i) for i in range(self.workers)]
            self._finalizer = weakref.finalize(self, _stop_workers, self._pool)
        return self._pool

    def _submit(self, slot: _Worker, task: Task) -> None:
        with contextlib.suppress(OSError, ValueError):  # the worker died: its sentinel says so
            slot.conn.send((task.row, task.seed, task.level, task.start))

    def _collect(self, busy: Sequence[_Worker], timeout: float | None) -> list[Event]:
        ready = set(_wait_ready([h for w in busy for h in (w.conn, w.proc.sentinel)], timeout))
        events: list[Event] = []
        for w in busy:
            event: Event = None
            if w.conn in ready:
                try:
                    msg = w.conn.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is None:
                    event = Lost("crash", _death_message(w))
                elif msg[0] == "ready":
                    event = READY
                elif msg[0] == "fatal":
                    self._shutdown()
                    raise RuntimeError(f"{self.name}: a worker could not load the evaluator: "
                                       f"{msg[1]}\n{msg[2]}")
                else:
                    event = msg[1]
            elif w.proc.sentinel in ready:
                event = Lost("crash", _death_message(w))
            events.append(event)
        return events

    def _replace_slot(self, slot: _Worker) -> _Worker:
        if slot.proc.is_alive():
            slot.proc.kill()
        slot.proc.join(5.0)
        slot.conn.close()
        return self._spawn(slot.index)

    def _startup_expired(self, slot: Slot) -> str:
        return f"worker did not start within {self.startup_timeout:g}s"

    def _stop_slots(self) -> None:
        self._shutdown()
