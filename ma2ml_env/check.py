"""A conformance check users run on their own reward backends (like :func:`~ma2ml_env.check_module`).

    import ma2ml_env
    ma2ml_env.check_evaluator(MyEvaluator())                 # raises EvaluatorCheckError saying what is wrong

It exercises the :class:`~ma2ml_env.Evaluator` contract the env and the search loops rely on; see
:func:`check_evaluator` for the rules.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

from ma2ml_env.modules import DEFAULT_MODULES, resolve_modules
from ma2ml_env.pipeline import Pipeline, SearchSpace
from ma2ml_env.rewards.base import STATUSES, SUCCESS_STATUSES, EvalResult, Evaluator

__all__ = ["EvaluatorCheckError", "check_evaluator"]


class EvaluatorCheckError(AssertionError):
    """Raised by :func:`check_evaluator` with a message that says which rule failed and how to fix it."""


def _fail(ev: Any, msg: str) -> None:
    raise EvaluatorCheckError(f"evaluator {getattr(ev, 'name', type(ev).__name__)!r} "
                              f"({type(ev).__module__}.{type(ev).__qualname__}): {msg}")


def _same(a: float, b: float, rel: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


def _fields(r: EvalResult) -> tuple:
    return r.score, r.status, r.accuracy, r.flops, r.params


def _agree(
    ev: Any, what: str, got: Sequence[EvalResult | tuple], want: Sequence[EvalResult], rel: float
) -> None:
    for i, (g, w) in enumerate(zip(got, want)):
        g = _fields(g) if isinstance(g, EvalResult) else tuple(g[:5])
        w = _fields(w)
        if g[1] != w[1] or not all(
            _same(float(x), float(y), rel) for x, y in zip(g[:1] + g[2:], w[:1] + w[2:])
        ):
            _fail(
                ev,
                f"{what} disagrees with evaluate() on pipeline {i}: (score, status, accuracy, flops, params) "
                f"{g} != {w}",
            )


def check_evaluator(
    evaluator: Evaluator,
    modules: Sequence[Any] = DEFAULT_MODULES,
    base: Pipeline | None = None,
    num_pipelines: int = 4,
    seed: int = 0,
    rel: float = 1e-9,
) -> None:
    """Check that ``evaluator`` follows the :class:`~ma2ml_env.Evaluator` contract.

    The evaluator is bound to a search space of ``modules`` (default: the built-in three; a tabular task
    needs its own, :func:`ma2ml_env.tabular.benchmark_modules`) over ``base``, and evaluates
    ``num_pipelines`` random pipelines with seeds. Rules checked, in order:

    * it is an :class:`~ma2ml_env.Evaluator`, ``bind`` accepts the space and it pickles before and after;
    * ``evaluate`` does not raise and returns one :class:`~ma2ml_env.EvalResult` per pipeline, each with a
      status of :data:`~ma2ml_env.STATUSES`, a finite score and, when the status is a failure, the
      evaluator's ``failure_score``;
    * ``deterministic`` evaluators (the default) give equal results for equal seeds, also from an unpickled
      copy (``seconds`` and ``info`` are not compared);
    * ``config()`` is a dict that survives a JSON round trip unchanged, equal on the unpickled copy;
    * ``evaluate_streaming`` reports every index exactly once with the result it returns, in input order;
    * the fast paths it declares (``vectorised``: ``evaluate_actions`` + ``results_from_arrays``;
      ``evaluate_one_tuple``; ``step_kernel``) agree with ``evaluate`` (relative tolerance ``rel``).

    Raises:
        EvaluatorCheckError: on the first broken rule, naming it.
    """
    ev = evaluator
    if not isinstance(ev, Evaluator):
        raise EvaluatorCheckError(f"{ev!r} is not an Evaluator instance; subclass ma2ml_env.Evaluator")
    if not isinstance(num_pipelines, int) or num_pipelines < 1:
        raise ValueError(f"num_pipelines must be a positive integer, got {num_pipelines!r}")
    if not isinstance(getattr(ev, "name", None), str) or not ev.name:
        _fail(ev, "name must be a non-empty string")
    if not math.isfinite(float(ev.failure_score)):
        _fail(ev, f"failure_score must be finite, got {ev.failure_score}")
    try:
        pickle.loads(pickle.dumps(ev))
    except Exception as exc:  # noqa: BLE001
        _fail(
            ev,
            f"cannot be pickled before bind ({type(exc).__name__}: {exc}); parallel backends ship it to "
            "worker processes: keep open files, locks and lambdas out of its state (or drop them in "
            "__getstate__)",
        )
    space = SearchSpace(resolve_modules(modules), base=base)
    try:
        ev.bind(space)
    except Exception as exc:  # noqa: BLE001
        _fail(ev, f"bind(space) raised {type(exc).__name__}: {exc}")
    rng = np.random.default_rng(seed)
    flats = [np.asarray(f, dtype=np.int64) for f in space.sample(rng, num_pipelines)]
    pipelines = [space.decode(f) for f in flats]
    seeds = [int(seed) * 1000 + 17 * i + 1 for i in range(num_pipelines)]

    def run(e: Evaluator, what: str) -> list[EvalResult]:
        try:
            out = e.evaluate(pipelines, seeds)
        except Exception as exc:  # noqa: BLE001
            _fail(
                ev,
                f"{what} raised {type(exc).__name__}: {exc}; a bad pipeline must be a result with a failure "
                "status (e.g. 'error'), never an exception",
            )
        if not isinstance(out, Sequence) or len(out) != num_pipelines:
            _fail(
                ev,
                f"{what} must return a list of one EvalResult per pipeline ({num_pipelines}), "
                f"got {out!r:.200}",
            )
        for r in out:
            if not isinstance(r, EvalResult):
                _fail(ev, f"{what} must return ma2ml_env.EvalResult objects, got {type(r).__name__}")
            if r.status not in STATUSES:  # pragma: no cover - EvalResult refuses these
                _fail(ev, f"{what} returned status {r.status!r}; use one of {STATUSES}")
            if r.status not in SUCCESS_STATUSES and r.score != ev.failure_score:
                _fail(
                    ev,
                    f"a {r.status!r} result scores {r.score}; failed evaluations must score failure_score "
                    f"({ev.failure_score})",
                )
        return list(out)

    first = run(ev, "evaluate()")
    deterministic = bool(ev.deterministic)
    if deterministic:
        _agree(
            ev, "evaluate() again with the same seeds (deterministic=True)", run(ev, "evaluate()"), first, 0.0
        )
    try:
        clone = pickle.loads(pickle.dumps(ev))
    except Exception as exc:  # noqa: BLE001
        _fail(ev, f"cannot be pickled after bind ({type(exc).__name__}: {exc}); drop unpicklable state in "
                  "__getstate__ and rebuild it in __setstate__")
    if deterministic:
        _agree(ev, "an unpickled copy", run(clone, "evaluate() of an unpickled copy"), first, 0.0)

    try:
        cfg = ev.config()
        text = json.dumps(cfg, sort_keys=True)
    except Exception as exc:  # noqa: BLE001
        _fail(ev, f"config() must return a JSON-serialisable dict ({type(exc).__name__}: {exc})")
    if not isinstance(cfg, dict):
        _fail(ev, f"config() must return a dict, got {type(cfg).__name__}")
    if json.loads(text) != cfg:
        _fail(
            ev,
            "config() must hold JSON-native values only (dicts with str keys, lists, str, numbers, bool, "
            f"None): a durable search compares it with the stored JSON. Got {cfg!r:.300}",
        )
    if _normal(clone.config()) != _normal(cfg):
        _fail(ev, "config() of an unpickled copy differs from the original's")

    seen: list[int] = []
    reported: dict[int, EvalResult] = {}

    def on_result(i: int, r: EvalResult) -> None:
        seen.append(i)
        reported[i] = r

    try:
        streamed = list(ev.evaluate_streaming(pipelines, seeds, on_result))
    except Exception as exc:  # noqa: BLE001
        _fail(ev, f"evaluate_streaming raised {type(exc).__name__}: {exc}")
    if sorted(seen) != list(range(num_pipelines)):
        _fail(
            ev,
            f"evaluate_streaming must call on_result once per index 0..{num_pipelines - 1}, called it with "
            f"{seen}",
        )
    if len(streamed) != num_pipelines or any(streamed[i] is not reported[i] and streamed[i] != reported[i]
                                             for i in range(num_pipelines)):
        _fail(ev, "evaluate_streaming must return, in input order, the results it reported to on_result")
    if deterministic:
        _agree(ev, "evaluate_streaming", streamed, first, 0.0)

    if ev.vectorised:
        try:
            arrays = ev.evaluate_actions(np.stack(flats), seeds)
            fast = ev.results_from_arrays(arrays)
        except Exception as exc:  # noqa: BLE001
            _fail(
                ev,
                "vectorised=True but evaluate_actions/results_from_arrays raised "
                f"{type(exc).__name__}: {exc}",
            )
        if len(fast) != num_pipelines or not all(isinstance(r, EvalResult) for r in fast):
            _fail(ev, "results_from_arrays(evaluate_actions(...)) must give one EvalResult per action")
        _agree(ev, "evaluate_actions + results_from_arrays", fast, first, rel)
    tuples = [ev.evaluate_one_tuple(f.tolist(), s) for f, s in zip(flats, seeds)]
    if any(t is not None for t in tuples):
        if any(t is None or len(t) != 6 for t in tuples):
            _fail(
                ev,
                "evaluate_one_tuple must return a 6-tuple (score, status, accuracy, flops, params, seconds) "
                "for every action, or None for every action (no scalar path)",
            )
        _agree(ev, "evaluate_one_tuple", [(t[0], t[1], t[2], t[3], t[4]) for t in tuples], first, rel)
    kernel = ev.step_kernel()
    if kernel is not None:
        kern, tables = kernel
        scale = (1.0 / np.maximum(space.joint_nvec - 1, 1)).astype(np.float32)
        got = []
        for f in flats:
            arrs = tuple(np.ascontiguousarray(space.unflatten(f)[n], dtype=np.int64) for n in space.names)
            flat, obs = np.zeros(f.size, np.int64), np.zeros(3 + f.size, np.float32)
            acc, flops, params, _ = kern(arrs, *tables, flat, obs, scale)
            if not np.array_equal(flat, f) or not np.array_equal(obs[3:], f.astype(np.float32) * scale):
                _fail(ev, "step_kernel's kernel must write the flat joint action and the observation")
            got.append((acc, "ok", acc, flops, params))
        _agree(ev, "step_kernel", got, first, rel)


def _normal(v: Any) -> Any:
    """``v`` as JSON gives it back (tuples -> lists)."""
    return json.loads(json.dumps(v))
