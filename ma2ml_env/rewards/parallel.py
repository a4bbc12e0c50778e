"""Parallel and distributed evaluation: evaluator wrappers that run a round's pipelines concurrently.

A search round proposes ``K`` pipelines and the env hands them to its evaluator in one
``evaluate(pipelines, seeds)`` call. The wrappers here evaluate them concurrently, one pipeline per task,
each with its own seed, so the results are the same as a serial evaluation of the same pipelines and seeds:

==================  ======================================================================================
backend             what runs each pipeline
==================  ======================================================================================
``"serial"``        the evaluator itself, in the calling process (the default; no wrapper unless retries are
                    asked for: :class:`SerialEvaluator`)
``"local"``         :class:`LocalPoolEvaluator`: persistent worker processes (``spawn``) on this machine; on a
                    CUDA evaluator one worker per GPU, each pinned with ``CUDA_VISIBLE_DEVICES``
``"ray"``           :class:`RayEvaluator`: Ray worker actors on an existing cluster
                    (``address="auto"`` / ``"ray://head:10001"``) or on a local Ray instance
==================  ======================================================================================

Select one through the env (``ma2ml_env.parallel_env(reward="train", backend="local", workers=4)``), with
:func:`wrap_evaluator`, or by passing a wrapper instance as ``reward``.

Fault tolerance (the wrappers' job, on top of the evaluator's own statuses): an exception escaping the
evaluator, a worker process that dies (``os._exit``, a segfault, ``kill -9``, the kernel's OOM killer), a
pipeline that runs past ``time_limit`` (the worker is killed and replaced) and an out-of-memory error
(``MemoryError``, ``torch.cuda.OutOfMemoryError``, an ``"out of memory"`` ``RuntimeError``, Ray's
``OutOfMemoryError``, or a result with status ``"oom"``) each count as a failed attempt. A failed attempt is
retried with the same pipeline and seed up to ``max_retries`` times when its kind is in ``retry_on``; after
that the pipeline gets a failed :class:`EvalResult` (status ``error``/``timeout``/``oom``, score
``failure_score``, ``info["failures"]`` lists every attempt) and the search goes on.

Streaming: a wrapper calls ``on_result(i, result)`` (when set) the moment pipeline ``i`` of the batch is
final, so a durable search (:func:`agents.store.run_durable`) commits each result as it completes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from multiprocessing.connection import wait as _wait_ready
from typing import TYPE_CHECKING, Any

from ma2ml_env.rewards.base import EvalResult, Evaluator, make_evaluator

if TYPE_CHECKING:  # pragma: no cover
    from ma2ml_env.pipeline import Pipeline, SearchSpace

__all__ = [
    "BACKENDS",
    "FAILURE_KINDS",
    "LocalPoolEvaluator",
    "RayEvaluator",
    "SerialEvaluator",
    "failure_kind",
    "wrap_evaluator",
]

#: Kinds of failed attempts the wrappers detect, and the status a pipeline gets when it runs out of retries.
FAILURE_KINDS = {"crash": "error", "timeout": "timeout", "oom": "oom", "error": "error"}

RAY_INSTALL = 'pip install "ma2ml[ray]"'


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


def _describe(exc: BaseException, lines: int = 8) -> tuple[str, str]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).strip()
    return f"{type(exc).__name__}: {exc}", "\n".join(tb.splitlines()[-lines:])


def _evaluate_one(evaluator: Evaluator, pipeline: Pipeline, seed: int) -> tuple:
    """Run one pipeline; never raises. ``("result", EvalResult)`` or ``("raised", kind, message, tb)``."""
    try:
        out = evaluator.evaluate([pipeline], [int(seed)])
        if len(out) != 1 or not isinstance(out[0], EvalResult):
            raise TypeError(f"evaluator {evaluator.name!r} returned {out!r} for one pipeline; expected one EvalResult")
        return ("result", out[0])
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        return ("raised", failure_kind(exc), *_describe(exc))


class _Task:
    __slots__ = ("attempts", "failures", "index", "pipeline", "seed")

    def __init__(self, index: int, pipeline: Pipeline, seed: int) -> None:
        self.index, self.pipeline, self.seed = index, pipeline, int(seed)
        self.attempts = 0
        self.failures: list[dict[str, Any]] = []


def _check_workers(workers: int | None) -> None:
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")


class _RetryingEvaluator(Evaluator):
    """Shared logic of the wrappers: the inner evaluator, retries, failed results, streaming.

    Args:
        inner: an :class:`Evaluator` or a registered reward name (built with ``inner_kwargs``).
        max_retries: extra attempts of a pipeline whose attempt failed with a kind in ``retry_on``.
        retry_on: failure kinds that are retried: ``"crash"`` (worker died), ``"timeout"`` (``time_limit``
            passed), ``"oom"`` (out-of-memory exception or status), ``"error"`` (exception escaping the
            evaluator). Statuses the evaluator returns itself (``diverged``, its own ``timeout``/``error``)
            are outcomes, not retried, except ``"oom"``.
        time_limit: seconds one attempt may run (``None``: no limit; not enforceable in-process).
    """

    backend = "?"
    on_result: Callable[[int, EvalResult], None] | None = None

    def __init__(
        self,
        inner: Evaluator | str,
        *,
        max_retries: int = 2,
        retry_on: Collection[str] = tuple(FAILURE_KINDS),
        time_limit: float | None = None,
        inner_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        bad = set(retry_on) - set(FAILURE_KINDS)
        if bad:
            raise ValueError(f"retry_on has unknown failure kinds {sorted(bad)}; use some of {list(FAILURE_KINDS)}")
        if time_limit is not None and not (isinstance(time_limit, (int, float)) and time_limit > 0):
            raise ValueError(f"time_limit must be > 0 seconds or None, got {time_limit!r}")
        self.inner = make_evaluator(inner, **dict(inner_kwargs or {}))
        if isinstance(self.inner, _RetryingEvaluator):
            raise TypeError(f"{type(self).__name__} cannot wrap another parallel wrapper ({type(self.inner).__name__})")
        self.max_retries = max_retries
        self.retry_on = frozenset(retry_on)
        self.time_limit = None if time_limit is None else float(time_limit)
        self.name = f"{self.backend}[{self.inner.name}]"
        self.failure_score = float(getattr(self.inner, "failure_score", 0.0))
        self.on_result = None

    def bind(self, space: SearchSpace) -> None:
        self.inner.bind(space)
        self.space = space

    def evaluate(self, pipelines: Sequence[Pipeline], seeds: Sequence[int]) -> list[EvalResult]:
        if len(pipelines) != len(seeds):
            raise ValueError(f"got {len(seeds)} seeds for {len(pipelines)} pipelines; pass one seed per pipeline")
        results: list[EvalResult | None] = [None] * len(pipelines)
        if not pipelines:
            return []
        tasks = deque(_Task(i, p, s) for i, (p, s) in enumerate(zip(pipelines, seeds)))

        def finish(task: _Task, result: EvalResult) -> None:
            results[task.index] = result
            if self.on_result is not None:
                self.on_result(task.index, result)

        self._run(tasks, finish)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:  # pragma: no cover - a bug in a backend loop
            raise RuntimeError(f"{self.name}: no result for pipelines {missing}")
        return results  # type: ignore[return-value]

    def _run(self, tasks: deque[_Task], finish: Callable[[_Task, EvalResult], None]) -> None:
        raise NotImplementedError

    # -- outcome of one attempt: final (finish) or retry (True) ------------------------------------------
    def _outcome(self, task: _Task, outcome: tuple, finish: Callable[[_Task, EvalResult], None],
                 seconds: float = math.nan) -> bool:
        """Handle ``("result", r)`` / ``("raised", kind, msg, tb)`` / ``("failed", kind, msg)``; return
        whether the task must be retried."""
        task.attempts += 1
        if outcome[0] == "result":
            r: EvalResult = outcome[1]
            if r.status == "oom" and "oom" in self.retry_on and task.attempts <= self.max_retries:
                task.failures.append({"kind": "oom", "message": str(r.info.get("error", "status oom"))})
                return True
            if task.failures:
                r = dataclasses.replace(r, info={**r.info, "attempts": task.attempts, "failures": task.failures})
            finish(task, r)
            return False
        kind, message = outcome[1], outcome[2]
        failure = {"kind": kind, "message": message}
        if len(outcome) > 3 and outcome[3]:
            failure["traceback"] = outcome[3]
        task.failures.append(failure)
        if kind in self.retry_on and task.attempts <= self.max_retries:
            return True
        finish(task, EvalResult(
            score=self.failure_score, status=FAILURE_KINDS[kind],
            seconds=0.0 if math.isnan(seconds) else seconds,
            info={"error": message, "failure": kind, "attempts": task.attempts, "failures": task.failures,
                  "backend": self.backend},
        ))
        return False

    def close(self) -> None:
        self.inner.close()


class SerialEvaluator(_RetryingEvaluator):
    """The inner evaluator in this process, one pipeline at a time, with retries and streaming.

    Catches exceptions (retried per ``retry_on``); cannot survive a crash of this process nor stop a hung
    evaluation: use :class:`LocalPoolEvaluator` (``workers=1``) for that isolation.
    """

    backend = "serial"

    def __init__(self, inner: Evaluator | str, *, max_retries: int = 2,
                 retry_on: Collection[str] = ("oom", "error"), inner_kwargs: Mapping[str, Any] | None = None,
                 **inner_kw: Any) -> None:
        super().__init__(inner, max_retries=max_retries, retry_on=retry_on,
                         inner_kwargs={**dict(inner_kwargs or {}), **inner_kw})

    def _run(self, tasks: deque[_Task], finish: Callable[[_Task, EvalResult], None]) -> None:
        while tasks:
            task = tasks.popleft()
            t0 = time.perf_counter()
            if self._outcome(task, _evaluate_one(self.inner, task.pipeline, task.seed), finish,
                             time.perf_counter() - t0):
                tasks.appendleft(task)


# ======================================================================================================
# Local worker processes
# ======================================================================================================
def _watch_parent(ppid: int) -> None:
    """Exit when the parent process is gone (it was killed: ``kill -9`` leaves no chance to stop us)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != ppid:
            os._exit(0)


def _worker_main(conn: Any, environ: Mapping[str, str], ppid: int) -> None:
    """Body of a local worker: receive the pickled evaluator once, then evaluate one pipeline per message."""
    os.environ.update(environ)
    threading.Thread(target=_watch_parent, args=(ppid,), daemon=True).start()
    try:
        evaluator = pickle.loads(conn.recv_bytes())
        if environ.get("CUDA_VISIBLE_DEVICES") is not None:
            _pin_cuda_device(evaluator)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("fatal", *_describe(exc, lines=20)))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        task_id, pipeline, seed = msg
        t0 = time.perf_counter()
        out = _evaluate_one(evaluator, pipeline, seed)
        try:
            conn.send((task_id, time.perf_counter() - t0, out))
        except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
            conn.send((task_id, time.perf_counter() - t0, ("raised", "error", *_describe(exc))))


def _pin_cuda_device(evaluator: Any) -> None:
    """With ``CUDA_VISIBLE_DEVICES`` set to one GPU, an evaluator that names ``cuda:i`` must use ``cuda:0``."""
    dev = getattr(evaluator, "device", None)
    if dev is None or "cuda" not in str(dev):
        return
    if isinstance(dev, str):
        evaluator.device = "cuda"
    else:
        evaluator.device = type(dev)("cuda", 0)


def _visible_gpus(evaluator: Evaluator) -> list[str]:
    """GPU ids to pin workers to: only when the evaluator trains on CUDA (its ``device`` attribute)."""
    if "cuda" not in str(getattr(evaluator, "device", "")):
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    if importlib.util.find_spec("torch") is None:
        return []
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


class _Worker:
    __slots__ = ("conn", "deadline", "environ", "proc", "ready", "slot", "started", "task")

    def __init__(self, slot: int, proc: Any, conn: Any, environ: dict[str, str], startup_timeout: float) -> None:
        self.slot, self.proc, self.conn, self.environ = slot, proc, conn, environ
        self.ready = False
        self.task: _Task | None = None
        self.started = time.perf_counter()
        self.deadline = self.started + startup_timeout


def _stop_workers(workers: list[_Worker]) -> None:
    for w in workers:
        try:
            w.conn.send(None)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + 2.0
    for w in workers:
        w.proc.join(max(0.0, deadline - time.monotonic()))
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join(1.0)
        w.conn.close()
    workers.clear()


class LocalPoolEvaluator(_RetryingEvaluator):
    """Evaluate a round's pipelines concurrently in persistent local worker processes.

    Each worker is a ``spawn``-ed process holding its own copy of the (bound) inner evaluator, so data a
    backend caches (e.g. the training set on the GPU) is loaded once per worker. Pipelines are handed out one
    at a time to idle workers; each result is final the moment it arrives (``on_result``).

    Args:
        inner: an :class:`Evaluator` or a registered reward name (``inner_kwargs`` / extra keyword arguments
            configure it).
        workers: number of worker processes. Default: one per GPU when the evaluator trains on CUDA (its
            ``device`` attribute), else ``os.cpu_count()``.
        devices: GPU ids to pin workers to, round-robin, with ``CUDA_VISIBLE_DEVICES`` (inside a worker its
            GPU is ``cuda:0``); ``"auto"``: every visible GPU when the evaluator trains on CUDA, else none;
            ``None``: no pinning.
        threads_per_worker: ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` of each worker (``"auto"``:
            ``cpu_count // workers``, so CPU-trained children do not oversubscribe the cores; ``None``: inherit).
            Variables the user set already are kept.
        time_limit: seconds one evaluation may take in a worker; past it the worker is killed and replaced and
            the attempt fails with kind ``"timeout"``.
        max_retries, retry_on: see :class:`_RetryingEvaluator` (default: retry every failure kind twice).
        startup_timeout: seconds a new worker may take to import and load the evaluator.
        start_method: ``multiprocessing`` start method (``"spawn"``: safe with CUDA and threads).
    """

    backend = "local"

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
        _check_workers(workers)
        if devices == "auto":
            gpus = _visible_gpus(self.inner)
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
        if threads_per_worker is not None and (not isinstance(threads_per_worker, int) or threads_per_worker < 1):
            raise ValueError(f"threads_per_worker must be a positive integer, 'auto' or None, got {threads_per_worker!r}")
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
        state.update(_pool=[], _payload=None, _finalizer=None, on_result=None)
        return state

    def bind(self, space: SearchSpace) -> None:
        super().bind(space)
        self._payload = None
        self._shutdown()  # workers hold the previous binding

    # -- worker management -----------------------------------------------------------------------------------
    def _environ(self, slot: int) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.devices:
            env["CUDA_VISIBLE_DEVICES"] = self.devices[slot % len(self.devices)]
        if self.threads_per_worker is not None:
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                if var not in os.environ:
                    env[var] = str(self.threads_per_worker)
        return env

    def _spawn(self, slot: int) -> _Worker:
        if self._payload is None:
            self._payload = pickle.dumps(self.inner, protocol=pickle.HIGHEST_PROTOCOL)
        ctx = mp.get_context(self.start_method)
        parent, child = ctx.Pipe(duplex=True)
        environ = self._environ(slot)
        proc = ctx.Process(target=_worker_main, args=(child, environ, os.getpid()), daemon=True,
                           name=f"ma2ml-eval-{slot}")
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
        return _Worker(slot, proc, parent, environ, self.startup_timeout)

    def _ensure_pool(self) -> None:
        if not hasattr(self, "space"):
            raise RuntimeError(f"{type(self).__name__}.bind(space) must be called before evaluate()")
        if not self._pool:
            self._pool = [self._spawn(i) for i in range(self.workers)]
            self._finalizer = weakref.finalize(self, _stop_workers, self._pool)

    def start(self) -> None:
        """Start the workers now and wait until each has loaded the evaluator (otherwise they start on the
        first :meth:`evaluate`, which hands pipelines to whichever worker is ready first)."""
        self._ensure_pool()
        while not all(w.ready for w in self._pool):
            waiting = [w for w in self._pool if not w.ready]
            timeout = max(0.0, min(w.deadline for w in waiting) - time.perf_counter())
            ready = set(_wait_ready([h for w in waiting for h in (w.conn, w.proc.sentinel)], timeout))
            for w in waiting:
                msg = None
                if w.conn in ready:
                    with contextlib.suppress(EOFError, OSError):
                        msg = w.conn.recv()
                if msg is not None and msg[0] == "ready":
                    w.ready = True
                elif msg is not None or w.proc.sentinel in ready or time.perf_counter() >= w.deadline:
                    detail = f": {msg[1]}\n{msg[2]}" if msg is not None and msg[0] == "fatal" else ""
                    self._shutdown()
                    raise RuntimeError(f"{self.name}: a worker could not start or load the evaluator{detail}")

    def _replace(self, w: _Worker) -> None:
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(5.0)
        w.conn.close()
        self._pool[self._pool.index(w)] = self._spawn(w.slot)

    def _shutdown(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # stops the workers once
            self._finalizer = None
        self._pool = []

    def close(self) -> None:
        self._shutdown()
        super().close()

    # -- the scheduling loop -------------------------------------------------------------------------------------
    def _run(self, tasks: deque[_Task], finish: Callable[[_Task, EvalResult], None]) -> None:
        self._ensure_pool()
        startup_failures = 0
        while tasks or any(w.task is not None for w in self._pool):
            now = time.perf_counter()
            for w in self._pool:
                if w.ready and w.task is None and tasks:
                    task = w.task = tasks.popleft()
                    w.started = now
                    w.deadline = now + self.time_limit if self.time_limit is not None else math.inf
                    try:
                        w.conn.send((task.index, task.pipeline, task.seed))
                    except (OSError, ValueError):
                        pass  # the worker died: its sentinel says so below
            waiting = [w for w in self._pool if w.task is not None or not w.ready]
            timeout = max(0.0, min(w.deadline for w in waiting) - now) if waiting else 0.0
            ready = set(_wait_ready([h for w in waiting for h in (w.conn, w.proc.sentinel)],
                                    None if math.isinf(timeout) else timeout))
            now = time.perf_counter()
            for w in waiting:
                failure: tuple | None = None
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        msg = None
                    if msg is None:
                        failure = ("crash", self._death_message(w))
                    elif msg[0] == "ready":
                        w.ready, startup_failures = True, 0
                        continue
                    elif msg[0] == "fatal":
                        self._shutdown()
                        raise RuntimeError(f"{self.name}: a worker could not load the evaluator: {msg[1]}\n{msg[2]}")
                    else:
                        _, seconds, outcome = msg
                        task, w.task = w.task, None
                        if self._outcome(task, outcome, finish, seconds):
                            tasks.appendleft(task)
                        continue
                elif w.proc.sentinel in ready:
                    failure = ("crash", self._death_message(w))
                elif now >= w.deadline:
                    if w.ready:
                        failure = ("timeout", f"evaluation ran past time_limit={self.time_limit:g}s; worker killed")
                    else:
                        failure = ("crash", f"worker did not start within {self.startup_timeout:g}s")
                if failure is None:
                    continue
                task, w.task = w.task, None
                if task is None:  # died while starting
                    startup_failures += 1
                    if startup_failures > 3:
                        self._shutdown()
                        raise RuntimeError(f"{self.name}: worker processes keep dying at start-up ({failure[1]})")
                self._replace(w)
                if task is not None and self._outcome(task, ("failed", *failure), finish, now - w.started):
                    tasks.appendleft(task)

    @staticmethod
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


# ======================================================================================================
# Ray
# ======================================================================================================
def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"the Ray backend needs Ray: {RAY_INSTALL}") from exc
    return ray


class _RayWorkerBody:
    """Body of a Ray worker actor: holds one unpickled copy of the evaluator (data it caches persists)."""

    def __init__(self, boxed_ref: list) -> None:
        import ray

        self.evaluator = ray.get(boxed_ref[0])
        if os.environ.get("CUDA_VISIBLE_DEVICES"):
            _pin_cuda_device(self.evaluator)

    def ready(self) -> int:
        return os.getpid()

    def evaluate(self, pipeline: Pipeline, seed: int) -> tuple[tuple, float]:
        t0 = time.perf_counter()
        out = _evaluate_one(self.evaluator, pipeline, seed)
        return out, time.perf_counter() - t0


class _RaySlot:
    __slots__ = ("actor", "deadline", "pending", "ready", "started", "task")

    def __init__(self, actor: Any, startup_timeout: float) -> None:
        self.actor = actor
        self.pending = actor.ready.remote()
        self.ready = False
        self.task: _Task | None = None
        self.started = time.perf_counter()
        self.deadline = self.started + startup_timeout


class RayEvaluator(_RetryingEvaluator):
    """Evaluate a round's pipelines on Ray: a cluster (``address="auto"`` / ``"ray://head:10001"``) or a
    local Ray instance.

    Ray is imported on first use (``pip install "ma2ml[ray]"``). ``workers`` Ray actors are started, each
    with ``num_cpus_per_trial`` CPUs and ``num_gpus_per_trial`` GPUs (Ray sets ``CUDA_VISIBLE_DEVICES``), each
    holding one copy of the bound evaluator (put in the object store once), so a backend's cached data
    (the dataset on the GPU) is loaded once per worker; each pipeline is one call on an idle actor. Actors,
    rather than one task per pipeline, make the time limit count from the start of the evaluation (not from
    a queue or a worker start-up) and let a hung evaluation be stopped by killing its actor.

    Args:
        inner: an :class:`Evaluator` or a registered reward name.
        workers: Ray actors, i.e. concurrent evaluations (``None``: as many as the cluster's CPUs/GPUs hold
            at ``num_cpus_per_trial``/``num_gpus_per_trial``).
        address: ``None``: the running Ray instance if any, else a new local one (``workers`` x
            ``num_cpus_per_trial`` CPUs when ``workers`` is given); ``"auto"``: the cluster this machine
            belongs to; ``"ray://head:10001"``: a remote cluster through Ray Client.
        num_cpus_per_trial, num_gpus_per_trial, memory_per_trial, resources: Ray resources of each worker.
        runtime_env: Ray runtime environment (e.g. ``{"pip": ["ma2ml"]}`` or ``{"working_dir": "."}``) when
            the cluster's nodes do not have ma2ml installed.
        init_kwargs: more ``ray.init`` keyword arguments.
        time_limit: seconds one evaluation may take; past it the actor is killed and replaced and the attempt
            fails with kind ``"timeout"``.
        max_retries, retry_on: see :class:`_RetryingEvaluator`. Ray's own restarts are off: a worker lost to
            a crash, a node failure or Ray's memory monitor counts as a ``"crash"``/``"oom"`` attempt here.
        startup_timeout: seconds a worker may take to be scheduled and load the evaluator (a cluster without
            the requested resources raises ``RuntimeError`` after it).
    """

    backend = "ray"

    def __init__(
        self,
        inner: Evaluator | str,
        workers: int | None = None,
        *,
        address: str | None = None,
        num_cpus_per_trial: float = 1,
        num_gpus_per_trial: float = 0,
        memory_per_trial: int | None = None,
        resources: Mapping[str, float] | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
        time_limit: float | None = None,
        max_retries: int = 2,
        retry_on: Collection[str] = tuple(FAILURE_KINDS),
        startup_timeout: float = 300.0,
        inner_kwargs: Mapping[str, Any] | None = None,
        **inner_kw: Any,
    ) -> None:
        super().__init__(inner, max_retries=max_retries, retry_on=retry_on, time_limit=time_limit,
                         inner_kwargs={**dict(inner_kwargs or {}), **inner_kw})
        _check_workers(workers)
        if not num_cpus_per_trial >= 0 or not num_gpus_per_trial >= 0:
            raise ValueError("num_cpus_per_trial and num_gpus_per_trial must be >= 0")
        self.workers = workers
        self.address = address
        self.num_cpus_per_trial = num_cpus_per_trial
        self.num_gpus_per_trial = num_gpus_per_trial
        self.memory_per_trial = memory_per_trial
        self.resources = dict(resources or {})
        self.runtime_env = dict(runtime_env) if runtime_env else None
        self.init_kwargs = dict(init_kwargs or {})
        self.startup_timeout = float(startup_timeout)
        self._ref: Any = None
        self._actor_cls: Any = None
        self._slots: list[_RaySlot] = []
        self._started_ray = False
        #: worker actors started over this evaluator's life (replacements included)
        self.workers_started = 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_ref=None, _actor_cls=None, _slots=[], _started_ray=False, on_result=None)
        return state

    def bind(self, space: SearchSpace) -> None:
        super().bind(space)
        self._kill_actors()
        self._ref = None

    def _connect(self) -> Any:
        ray = _import_ray()
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, **self.init_kwargs}
            if self.runtime_env is not None:
                kw["runtime_env"] = self.runtime_env
            if self.address is not None:
                kw["address"] = self.address
            elif self.workers is not None and "num_cpus" not in kw:
                kw["num_cpus"] = max(1, math.ceil(self.workers * max(self.num_cpus_per_trial, 1)))
            ray.init(**kw)
            self._started_ray = self.address is None
        if self._actor_cls is None:
            opts: dict[str, Any] = {"num_cpus": self.num_cpus_per_trial, "num_gpus": self.num_gpus_per_trial,
                                    "max_restarts": 0, "max_task_retries": 0}
            if self.memory_per_trial:
                opts["memory"] = self.memory_per_trial
            if self.resources:
                opts["resources"] = self.resources
            self._actor_cls = ray.remote(**opts)(_RayWorkerBody)
        if self._ref is None:
            if not hasattr(self, "space"):
                raise RuntimeError(f"{type(self).__name__}.bind(space) must be called before evaluate()")
            self._ref = ray.put(self.inner)
        return ray

    def _capacity(self, ray: Any) -> int:
        if self.workers is not None:
            return self.workers
        res = ray.cluster_resources()
        caps = []
        if self.num_cpus_per_trial > 0:
            caps.append(int(res.get("CPU", 1) // self.num_cpus_per_trial))
        if self.num_gpus_per_trial > 0:
            caps.append(int(res.get("GPU", 0) // self.num_gpus_per_trial))
        return max(1, min(caps) if caps else 1)

    def _new_slot(self) -> _RaySlot:
        self.workers_started += 1
        return _RaySlot(self._actor_cls.remote([self._ref]), self.startup_timeout)

    def _kill_actors(self) -> None:
        if self._slots:
            ray = _import_ray()
            for slot in self._slots:
                with contextlib.suppress(Exception):
                    ray.kill(slot.actor, no_restart=True)
        self._slots = []

    def _run(self, tasks: deque[_Task], finish: Callable[[_Task, EvalResult], None]) -> None:
        ray = self._connect()
        from ray import exceptions as rex

        if not self._slots:
            self._slots = [self._new_slot() for _ in range(self._capacity(ray))]
        startup_failures = 0
        while tasks or any(sl.task is not None for sl in self._slots):
            now = time.perf_counter()
            for sl in self._slots:
                if sl.ready and sl.task is None and tasks:
                    sl.task = tasks.popleft()
                    sl.started = now
                    sl.deadline = now + self.time_limit if self.time_limit is not None else math.inf
                    sl.pending = sl.actor.evaluate.remote(sl.task.pipeline, sl.task.seed)
            waiting = [sl for sl in self._slots if sl.pending is not None]
            timeout = max(0.0, min(sl.deadline for sl in waiting) - now) if waiting else 0.0
            done, _ = ray.wait([sl.pending for sl in waiting], num_returns=1,
                               timeout=None if math.isinf(timeout) else timeout)
            done_ids = set(done)
            now = time.perf_counter()
            for i, sl in enumerate(list(self._slots)):
                if sl.pending is None:
                    continue
                failure: tuple | None = None
                if sl.pending in done_ids:
                    try:
                        value = ray.get(sl.pending)
                    except rex.OutOfMemoryError as exc:
                        failure = ("oom", _describe(exc)[0])
                    except rex.RayError as exc:  # the actor died: crash, node failure, killed...
                        failure = ("crash", _describe(exc)[0])
                    sl.pending = None
                    if failure is None:
                        if not sl.ready:
                            sl.ready, startup_failures = True, 0
                            continue
                        (outcome, seconds), task, sl.task = value, sl.task, None
                        if self._outcome(task, tuple(outcome), finish, seconds):
                            tasks.appendleft(task)
                        continue
                elif now >= sl.deadline:
                    if sl.ready:
                        failure = ("timeout", f"evaluation ran past time_limit={self.time_limit:g}s; worker killed")
                    else:
                        self._kill_actors()
                        raise RuntimeError(
                            f"{self.name}: Ray could not start a worker with {self.num_cpus_per_trial} CPU(s) and "
                            f"{self.num_gpus_per_trial} GPU(s) within {self.startup_timeout:g}s; cluster resources: "
                            f"{ray.cluster_resources()}")
                if failure is None:
                    continue
                task, sl.task = sl.task, None
                with contextlib.suppress(Exception):
                    ray.kill(sl.actor, no_restart=True)
                self._slots[i] = self._new_slot()
                if task is None:
                    startup_failures += 1
                    if startup_failures > 3:
                        self._kill_actors()
                        raise RuntimeError(f"{self.name}: Ray workers keep dying at start-up ({failure[1]})")
                elif self._outcome(task, ("failed", *failure), finish, now - sl.started):
                    tasks.appendleft(task)

    def close(self) -> None:
        self._kill_actors()
        if self._started_ray:
            ray = _import_ray()
            if ray.is_initialized():
                ray.shutdown()
            self._started_ray = False
        self._ref = self._actor_cls = None
        super().close()


# ======================================================================================================
# Selection by name
# ======================================================================================================
#: Backends by name (``backend=`` of the env and the CLI's ``--backend``).
BACKENDS: dict[str, type[_RetryingEvaluator]] = {
    "serial": SerialEvaluator,
    "local": LocalPoolEvaluator,
    "ray": RayEvaluator,
}


def wrap_evaluator(evaluator: Evaluator, backend: str = "serial", workers: int | None = None,
                   **options: Any) -> Evaluator:
    """Put ``evaluator`` behind a parallel backend.

    Args:
        evaluator: the reward backend.
        backend: ``"serial"`` (returned unchanged unless ``options`` ask for retries), ``"local"`` or ``"ray"``.
        workers: concurrent evaluations (``"local"``: worker processes; ``"ray"``: tasks in flight).
        **options: keyword arguments of :class:`LocalPoolEvaluator` / :class:`RayEvaluator` /
            :class:`SerialEvaluator` (``time_limit``, ``max_retries``, ``address``, ``num_gpus_per_trial``...).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown evaluation backend {backend!r}; use one of {list(BACKENDS)}")
    if isinstance(evaluator, _RetryingEvaluator):
        if backend == "serial" and workers is None and not options:
            return evaluator
        raise ValueError(f"the evaluator is already a {evaluator.backend!r} backend wrapper; wrap the plain evaluator")
    if backend == "serial":
        if workers not in (None, 1):
            raise ValueError(f"backend='serial' evaluates one pipeline at a time (workers={workers}); "
                             "use backend='local' or 'ray' for concurrent evaluation")
        return SerialEvaluator(evaluator, **options) if options else evaluator
    return BACKENDS[backend](evaluator, workers, **options)
