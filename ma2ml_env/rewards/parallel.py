"""Parallel and distributed evaluation: evaluator wrappers that run a round's pipelines concurrently.

A search round proposes ``K`` joint actions and the env hands them to its evaluator in one
``evaluate(actions, seeds, on_result)`` call (int64 ``[K, D]``). The wrappers here evaluate them
concurrently, one row per task, each with its own seed, so each result is the one the evaluator gives that
row alone:

==================  ====================================================================================
backend             what runs each pipeline
==================  ====================================================================================
``"serial"``        the evaluator itself, in the calling process (the default; no wrapper unless retries
                    are asked for: :class:`SerialEvaluator`)
``"local"``         :class:`LocalPoolEvaluator`: persistent worker processes (``spawn``) on this machine;
                    on a CUDA evaluator one worker per GPU, each pinned with ``CUDA_VISIBLE_DEVICES``
``"ray"``           :class:`RayEvaluator`: Ray worker actors on an existing cluster
                    (``address="auto"`` / ``"ray://head:10001"``) or on a local Ray instance
==================  ====================================================================================

Select one through the env (``ma2ml_env.parallel_env(reward="train", backend="local", workers=4)``), with
:func:`wrap_evaluator`, or by passing a wrapper instance as ``reward``.

Fault tolerance (the wrappers' job, on top of the evaluator's own statuses): every row is one attempt
(:func:`~ma2ml_env.rewards.retry.attempt`), so an exception of the evaluator or a malformed result (an
``EvalResult`` or ``BatchResult`` with a NaN score included) is a failed ``"error"`` attempt; a worker process
that dies (``os._exit``, a segfault, ``kill -9``, the kernel's OOM killer), a pipeline that runs past
``time_limit`` (the worker is killed and replaced) and an out-of-memory error (``MemoryError``,
``torch.cuda.OutOfMemoryError``, an ``"out of memory"`` ``RuntimeError``, Ray's ``OutOfMemoryError``, or
a result with status ``"oom"``) each count as a failed attempt too. A failed attempt is retried with the
same pipeline and seed up to ``max_retries`` times when its kind is in ``retry_on``; after that the
pipeline gets a failed :class:`~ma2ml_env.rewards.base.EvalResult` (status ``error``/``timeout``/``oom``,
score ``failure_score``, ``info["failures"]`` lists every attempt) and the search goes on.

Streaming: a wrapper's :meth:`~ma2ml_env.rewards.base.Evaluator.evaluate` calls ``on_result(i, result)``
the moment row ``i`` of the batch is final (as its worker finishes), so a durable search commits each
result as it completes. A wrapper's own set-up errors (Ray missing, no ``temp_dir`` for a Ray instance it
would start, a worker that cannot load the evaluator) are raised to the caller; everything the evaluator
does is a result.

Rewards: a wrapper's :meth:`~ma2ml_env.rewards.base.Evaluator.config` is its inner evaluator's, unchanged
(backend, workers, retries and time limits are execution settings), so a durable search can resume under
another backend.

Backends: this module is the public entry (:data:`BACKENDS`, :func:`wrap_evaluator` and the wrappers,
re-exported); :mod:`~ma2ml_env.rewards.wrapper` is their base class (inner evaluator, streaming,
``config``); :mod:`~ma2ml_env.rewards.scheduling` is the one scheduling loop they all run (tasks to idle
slots, results back, dead or hung slots replaced, time limits); :mod:`~ma2ml_env.rewards.serial`,
:mod:`~ma2ml_env.rewards.local_pool` and :mod:`~ma2ml_env.rewards.ray_pool` implement its slots (one
in-process slot, worker processes, Ray actors); :mod:`~ma2ml_env.rewards.retry` classifies failed
attempts and holds the retry policy; :mod:`~ma2ml_env.rewards.devices` pins workers to GPUs.
"""

from __future__ import annotations

from typing import Any

from ma2ml_env.rewards.base import Evaluator
from ma2ml_env.rewards.local_pool import LocalPoolEvaluator
from ma2ml_env.rewards.ray_pool import RAY_INSTALL, RayEvaluator
from ma2ml_env.rewards.retry import FAILURE_KINDS, failure_kind
from ma2ml_env.rewards.serial import SerialEvaluator
from ma2ml_env.rewards.wrapper import BackendWrapper

__all__ = [
    "BACKENDS",
    "FAILURE_KINDS",
    "RAY_INSTALL",
    "BackendWrapper",
    "LocalPoolEvaluator",
    "RayEvaluator",
    "SerialEvaluator",
    "failure_kind",
    "wrap_evaluator",
]

#: Backends by name (``backend=`` of the env and the CLI's ``--backend``).
BACKENDS: dict[str, type[BackendWrapper]] = {
    "serial": SerialEvaluator,
    "local": LocalPoolEvaluator,
    "ray": RayEvaluator,
}


def wrap_evaluator(evaluator: Evaluator, backend: str = "serial", workers: int | None = None,
                   **options: Any) -> Evaluator:
    """Put ``evaluator`` behind a parallel backend.

    Args:
        evaluator: the reward backend.
        backend: ``"serial"`` (returned unchanged unless ``options`` ask for retries), ``"local"`` or
            ``"ray"``.
        workers: concurrent evaluations (``"local"``: worker processes; ``"ray"``: tasks in flight).
        **options: keyword arguments of :class:`LocalPoolEvaluator` / :class:`RayEvaluator` /
            :class:`SerialEvaluator` (``time_limit``, ``max_retries``, ``address``,
            ``num_gpus_per_trial``...).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown evaluation backend {backend!r}; use one of {list(BACKENDS)}")
    if isinstance(evaluator, BackendWrapper):
        if backend == "serial" and workers is None and not options:
            return evaluator
        raise ValueError(f"the evaluator is already a {evaluator.backend!r} backend wrapper; "
                         "wrap the plain evaluator")
    if backend == "serial":
        if workers not in (None, 1):
            raise ValueError(f"backend='serial' evaluates one pipeline at a time (workers={workers}); "
                             "use backend='local' or 'ray' for concurrent evaluation")
        return SerialEvaluator(evaluator, **options) if options else evaluator
    return BACKENDS[backend](evaluator, workers, **options)
