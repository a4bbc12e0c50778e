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
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ma2ml_env.modules import DEFAULT_MODULES, resolve_modules
from ma2ml_env.pipeline import Pipeline
from ma2ml_env.rewards.base import SUCCESS_STATUSES, BatchResult, EvalResult, Evaluator
from ma2ml_env.rewards.fidelity import Fidelity
from ma2ml_env.space import SearchSpace

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
                f"{what} disagrees with evaluate() on row {i}: (score, status, accuracy, flops, params) "
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
    needs its own, :func:`ma2ml_env.rewards.tabular.benchmark_modules`) over ``base``, and evaluates a batch
    of ``num_pipelines`` random flat joint actions (int64 ``[K, D]``, validated by the space's codec) with
    int64 seeds. Rules checked, in order:

    * it is an :class:`~ma2ml_env.Evaluator`, ``bind`` accepts the space and it pickles before and after;
    * ``evaluate(actions, seeds)`` does not raise and returns a :class:`~ma2ml_env.BatchResult` of one row
      per joint action, each failed row (status not in :data:`~ma2ml_env.SUCCESS_STATUSES`) scoring the
      evaluator's ``failure_score``;
    * ``evaluate(actions, seeds, on_result)`` calls ``on_result(i, result)`` exactly once per row, with the
      result it returns for that row;
    * ``deterministic`` evaluators (the default) give equal results for equal seeds, also from an unpickled
      copy (``seconds`` and ``info`` are not compared);
    * one row at a time (where evaluators keep private single-row fast paths) gives the batch's results
      (relative tolerance ``rel``);
    * ``config()`` is a dict that survives a JSON round trip unchanged, equal on the unpickled copy;
    * an evaluator that declares ``fidelity`` (a :class:`~ma2ml_env.Fidelity`; :mod:`ma2ml_env.rewards.fidelity`)
      evaluates the batch at every level (``levels=``); a ``deterministic`` one gives at the last level the
      results of ``evaluate(actions, seeds)``, and continuing from the first level to the last
      (``start=``) gives the results of going straight there, at a cost (``seconds``) of the difference of
      the two (relative tolerance ``rel``; not checked when ``wall_clock_seconds``); a level outside the
      levels, or a start not below its level, raises ``ValueError``.

    Raises:
        EvaluatorCheckError: on the first broken rule, naming it.
    """
    ev = evaluator
    if not isinstance(ev, Evaluator):
        raise EvaluatorCheckError(f"{ev!r} is not an Evaluator instance; subclass ma2ml_env.Evaluator "
                                  "(or ma2ml_env.PipelineEvaluator)")
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
    actions = space.codec.validate_batch(space.codec.sample(np.random.default_rng(seed), num_pipelines))
    seeds = np.array([int(seed) * 1000 + 17 * i + 1 for i in range(num_pipelines)], dtype=np.int64)

    def run(e: Evaluator, what: str, rows: np.ndarray = actions, row_seeds: np.ndarray = seeds,
            on_result: Any = None, **fidelity: Any) -> list[EvalResult]:
        try:
            out = (e.evaluate(rows, row_seeds, **fidelity) if on_result is None else
                   e.evaluate(rows, row_seeds, on_result, **fidelity))
        except Exception as exc:  # noqa: BLE001
            _fail(
                ev,
                f"{what} raised {type(exc).__name__}: {exc}; a bad joint action must be a result with a "
                "failure status (e.g. 'error'), never an exception",
            )
        if not isinstance(out, BatchResult) or len(out) != len(rows):
            _fail(ev, f"{what} must return a ma2ml_env.BatchResult of one row per joint action ({len(rows)}; "
                      f"BatchResult.from_results builds one from EvalResults), got {out!r:.200}")
        results = list(out)
        for r in results:
            if r.status not in SUCCESS_STATUSES and r.score != ev.failure_score:
                _fail(
                    ev,
                    f"a {r.status!r} result scores {r.score}; failed evaluations must score failure_score "
                    f"({ev.failure_score})",
                )
        return results

    first = run(ev, "evaluate(actions, seeds)")
    seen: list[int] = []
    reported: dict[int, EvalResult] = {}

    def on_result(i: int, r: EvalResult) -> None:
        seen.append(int(i))
        reported[int(i)] = r

    streamed = run(ev, "evaluate(actions, seeds, on_result)", on_result=on_result)
    if sorted(seen) != list(range(num_pipelines)):
        _fail(ev, f"evaluate must call on_result(i, result) exactly once per row 0..{num_pipelines - 1}, "
                  f"called it with {seen}")
    _agree(ev, "the results reported to on_result", [reported[i] for i in range(num_pipelines)], streamed, 0.0)
    deterministic = bool(ev.deterministic)
    if deterministic:
        _agree(ev, "evaluate() again with the same seeds (deterministic=True)", streamed, first, 0.0)
        one = [run(ev, f"evaluate() of row {i} alone", actions[i:i + 1], seeds[i:i + 1])[0]
               for i in range(num_pipelines)]
        _agree(ev, "evaluate() one row at a time", one, first, rel)
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
    fid = getattr(ev, "fidelity", None)
    if fid is not None:
        _check_fidelity(ev, fid, run, actions, seeds, first if deterministic else None, rel)


def _check_fidelity(ev: Any, fid: Any, run: Callable[..., list[EvalResult]], actions: np.ndarray,
                    seeds: np.ndarray, full: list[EvalResult] | None, rel: float) -> None:
    """The fidelity rules of :func:`check_evaluator` (``full``: the results without levels, for a
    deterministic evaluator)."""
    if not isinstance(fid, Fidelity):
        _fail(ev, f"fidelity must be a ma2ml_env.Fidelity (or None), got {type(fid).__name__}")
    k, top = len(actions), fid.top

    def at(level: int, start: int = -1) -> list[EvalResult]:
        what = f"evaluate(actions, seeds, levels=[{level}]*{k}" + (f", start=[{start}]*{k})" if start >= 0 else ")")
        return run(ev, what, levels=np.full(k, level, dtype=np.int64),
                   start=None if start < 0 else np.full(k, start, dtype=np.int64))

    for level in range(top):
        at(level)
    straight = at(top)
    for bad, why in (({"levels": np.full(k, top + 1)}, f"a level above the last ({top})"),
                     ({"levels": np.full(k, top), "start": np.full(k, top)}, "a start that is not below its level")):
        try:
            ev.evaluate(actions, seeds, **bad)
        except ValueError:
            continue
        except Exception as exc:  # noqa: BLE001
            _fail(ev, f"evaluate() with {why} raised {type(exc).__name__}: {exc}; it must raise ValueError "
                      "(ma2ml_env.rewards.fidelity.fidelity_request checks levels and start)")
        _fail(ev, f"evaluate() with {why} must raise ValueError (ma2ml_env.rewards.fidelity.fidelity_request "
                  "checks levels and start)")
    if full is None:
        return
    _agree(ev, f"evaluate() at the last fidelity level ({fid.levels[top]} {fid.unit})", straight, full, rel)
    if top == 0:
        return
    low = at(0)
    went_on = at(top, 0)
    _agree(ev, f"continuing from level 0 ({fid.levels[0]} {fid.unit}) to the last", went_on, straight, rel)
    if not getattr(ev, "wall_clock_seconds", False):
        for i, (a, b, ab) in enumerate(zip(low, straight, went_on)):
            want = b.seconds - a.seconds
            if not abs(ab.seconds - want) <= max(rel * max(abs(b.seconds), abs(a.seconds)), 1e-9):
                _fail(ev, f"continuing row {i} from level 0 to the last costs {ab.seconds} seconds; it must cost "
                          f"the difference of going straight there ({b.seconds}) and to level 0 ({a.seconds}): "
                          f"{want} (set wall_clock_seconds=True when seconds are measured time)")


def _normal(v: Any) -> Any:
    """``v`` as JSON gives it back (tuples -> lists)."""
    return json.loads(json.dumps(v))
