"""The ``"ray"`` backend: Ray worker actors on a cluster or a local Ray instance, one pipeline per call.

Backends: :mod:`ma2ml_env.rewards.parallel` is the public entry (``BACKENDS``, ``wrap_evaluator``);
:mod:`~ma2ml_env.rewards.wrapper` is the base class of the backend wrappers;
:mod:`~ma2ml_env.rewards.scheduling` is the one loop they share; this module gives it Ray actors as slots
(start, call, wait on the object refs, kill and replace); :mod:`~ma2ml_env.rewards.serial` and
:mod:`~ma2ml_env.rewards.local_pool` give it an in-process slot and worker processes;
:mod:`~ma2ml_env.rewards.retry` decides which failed attempts are retried.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ma2ml_env.rewards.base import Evaluator
from ma2ml_env.rewards.devices import pin_cuda_device
from ma2ml_env.rewards.retry import FAILURE_KINDS, Outcome, attempt, describe
from ma2ml_env.rewards.scheduling import READY, Event, Lost, Slot, start_slots
from ma2ml_env.rewards.wrapper import BackendWrapper, check_workers

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ma2ml_env.rewards.retry import Task
    from ma2ml_env.space import SearchSpace

__all__ = ["MAX_TEMP_DIR", "RAY_INSTALL", "RayEvaluator"]

RAY_INSTALL = 'pip install "ma2ml[ray]"'
#: The longest ``temp_dir`` Ray's unix socket paths leave room for (``<temp_dir>/session_<date>_<pid>/sockets/
#: plasma_store`` must stay under 107 bytes).
MAX_TEMP_DIR = 48


def _check_temp_dir(temp_dir: str | os.PathLike) -> str:
    path = os.path.abspath(os.fspath(temp_dir))
    if len(path.encode()) > MAX_TEMP_DIR:
        raise ValueError(f"temp_dir {path!r} is {len(path.encode())} bytes long; Ray's unix sockets inside it "
                         f"need it at most {MAX_TEMP_DIR}: pick a shorter folder")
    return path


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
        if os.environ.get("CUDA_VISIBLE_DEVICES"):  # Ray gave this actor its GPU(s)
            pin_cuda_device(self.evaluator)

    def ready(self) -> int:
        return os.getpid()

    def evaluate(self, row: np.ndarray, seed: int, level: int | None = None, start: int = -1) -> Outcome:
        return attempt(self.evaluator, row, seed, level, start)


class _RaySlot(Slot):
    """A Ray actor as a slot: the actor and the object ref of its call in flight (start-up or evaluation)."""

    __slots__ = ("actor", "pending")

    def __init__(self, actor: Any, startup_timeout: float) -> None:
        super().__init__(startup_timeout)
        self.actor = actor
        self.pending: Any = actor.ready.remote()


class RayEvaluator(BackendWrapper):
    """Evaluate a round's pipelines on Ray: a cluster (``address="auto"`` / ``"ray://head:10001"``) or a
    local Ray instance.

    Ray is imported on first use (``pip install "ma2ml[ray]"``). ``workers`` Ray actors are started, each
    with ``num_cpus_per_trial`` CPUs and ``num_gpus_per_trial`` GPUs (Ray sets ``CUDA_VISIBLE_DEVICES``, and
    the actor's copy of a CUDA evaluator gets ``device`` = ``cuda:0``, as in the local backend), each
    holding one copy of the bound evaluator (put in the object store once), so a backend's cached data
    (the dataset on the GPU) is loaded once per worker; each row is one call on an idle actor, one attempt
    (:func:`~ma2ml_env.rewards.retry.attempt`). Actors, rather than one task per pipeline, make the
    time limit count from the start of the evaluation (not from a queue or a worker start-up) and let a
    hung evaluation be stopped by killing its actor.

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
        max_retries, retry_on: see :class:`~ma2ml_env.rewards.retry.RetryPolicy`. Ray's own restarts are
            off: a worker lost to a crash, a node failure or Ray's memory monitor counts as a
            ``"crash"``/``"oom"`` attempt here.
        startup_timeout: seconds a worker may take to be scheduled and load the evaluator (a cluster without
            the requested resources raises ``RuntimeError`` after it).
        temp_dir: the folder for the session files (logs, sockets, object spilling) of a local Ray instance
            this backend starts (``ray.init(_temp_dir=...)``); required then, so that a search writes nothing
            outside the folders its user named (Ray's default is a ``ray`` folder in the temp directory).
            Ray puts unix sockets inside it, whose paths may not exceed 107 bytes: keep it to at most
            :data:`MAX_TEMP_DIR` characters (e.g. ``/scratch/me/ray``). Not used when connecting to a running
            instance or a cluster.
    """

    backend = "ray"
    slot_label = "Ray workers"

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
        temp_dir: str | os.PathLike | None = None,
        inner_kwargs: Mapping[str, Any] | None = None,
        **inner_kw: Any,
    ) -> None:
        super().__init__(inner, max_retries=max_retries, retry_on=retry_on, time_limit=time_limit,
                         inner_kwargs={**dict(inner_kwargs or {}), **inner_kw})
        check_workers(workers)
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
        self.temp_dir = None if temp_dir is None else _check_temp_dir(temp_dir)
        self._ref: Any = None
        self._actor_cls: Any = None
        self._slots: list[_RaySlot] = []
        self._started_ray = False
        #: worker actors started over this evaluator's life (replacements included)
        self.workers_started = 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_ref=None, _actor_cls=None, _slots=[], _started_ray=False)
        return state

    def bind(self, space: SearchSpace) -> None:
        super().bind(space)
        self._kill_actors()
        self._ref = None

    def start(self) -> None:
        """Start the worker actors now and wait until each has loaded the evaluator."""
        start_slots(self, name=self.name)

    def close(self) -> None:
        self._kill_actors()
        if self._started_ray:
            ray = _import_ray()
            if ray.is_initialized():
                ray.shutdown()
            self._started_ray = False
        self._ref = self._actor_cls = None
        super().close()

    # -- Ray ---------------------------------------------------------------------------------------------
    def _connect(self) -> Any:
        ray = _import_ray()
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, **self.init_kwargs}
            if self.runtime_env is not None:
                kw["runtime_env"] = self.runtime_env
            if self.address is not None:
                kw["address"] = self.address
            else:  # a local instance of our own: its files go where the user said
                if self.temp_dir is None and "_temp_dir" not in kw:
                    raise ValueError(
                        "backend='ray' is about to start a local Ray instance, which writes its session files "
                        "(logs, sockets) into a folder: pass backend_kwargs={'temp_dir': <short folder of "
                        f"yours>}} (at most {MAX_TEMP_DIR} characters), or address= of a running Ray cluster")
                kw.setdefault("_temp_dir", self.temp_dir)
                if self.workers is not None and "num_cpus" not in kw:
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

    # -- the slots of the scheduling loop --------------------------------------------------------------------
    def _open_slots(self) -> list[_RaySlot]:
        ray = self._connect()
        if not self._slots:
            self._slots = [self._new_slot() for _ in range(self._capacity(ray))]
        return self._slots

    def _submit(self, slot: _RaySlot, task: Task) -> None:
        slot.pending = slot.actor.evaluate.remote(task.row, task.seed, task.level, task.start)

    def _collect(self, busy: Sequence[_RaySlot], timeout: float | None) -> list[Event]:
        ray = _import_ray()
        from ray import exceptions as rex

        done = set(ray.wait([s.pending for s in busy], num_returns=1, timeout=timeout)[0]) if busy else set()
        events: list[Event] = []
        for s in busy:
            event: Event = None
            if s.pending in done:
                ref, s.pending = s.pending, None
                try:
                    value = ray.get(ref)
                except rex.OutOfMemoryError as exc:
                    event = Lost("oom", describe(exc)[0])
                except rex.RayError as exc:  # the actor died: crash, node failure, killed...
                    event = Lost("crash", describe(exc)[0])
                else:
                    event = value if s.ready else READY
            events.append(event)
        return events

    def _replace_slot(self, slot: _RaySlot) -> _RaySlot:
        with contextlib.suppress(Exception):
            _import_ray().kill(slot.actor, no_restart=True)
        return self._new_slot()

    def _startup_expired(self, slot: Slot) -> str:
        ray = _import_ray()
        resources = ray.cluster_resources()
        self._kill_actors()
        raise RuntimeError(
            f"{self.name}: Ray could not start a worker with {self.num_cpus_per_trial} CPU(s) and "
            f"{self.num_gpus_per_trial} GPU(s) within {self.startup_timeout:g}s; "
            f"cluster resources: {resources}")

    def _stop_slots(self) -> None:
        self._kill_actors()
