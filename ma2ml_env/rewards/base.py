"""The evaluator interface: every reward backend (surrogate, tables, real training, user-supplied) implements it.

An evaluator takes a batch of flat joint actions (int64 ``[K, D]`` in the layout of the env's
:class:`~ma2ml_env.codec.JointActionCodec`, validated where it entered) with one seed each and returns a
:class:`BatchResult` (arrays of scores, statuses and costs, one ``info`` per row), calling
``on_result(i, result)`` as each row's result is final. It never raises for a bad joint action: NaN losses,
out-of-memory, exceptions in user code and time limits are ordinary outcomes with a ``status`` and a defined
``score`` (:func:`evaluate_guarded`). A backend that needs a :class:`~ma2ml_env.Pipeline` per row subclasses
:class:`PipelineEvaluator` and implements ``evaluate_pipeline(pipeline, seed)``.
"""

from __future__ import annotations

import importlib
import math
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ma2ml_env.rewards.budget import CostBudget
from ma2ml_env.rewards.fidelity import Fidelity, fidelity_request

if TYPE_CHECKING:  # pragma: no cover
    from ma2ml_env.pipeline import Pipeline
    from ma2ml_env.space import SearchSpace

__all__ = [
    "EMPTY_INFO",
    "STATUSES",
    "STATUS_CODES",
    "SUCCESS_STATUSES",
    "BatchResult",
    "CostBudget",
    "EvalResult",
    "Evaluator",
    "PipelineEvaluator",
    "check_batch",
    "error_result",
    "evaluate_guarded",
    "make_evaluator",
    "register_evaluator",
    "registered_evaluators",
]

#: Every status an evaluation can end with; a status's position is its integer code in the env's infos
#: (``STATUSES[info["status"]]`` is the name).
STATUSES = ("ok", "over_budget", "diverged", "oom", "timeout", "error")
#: Status name -> integer code (the env's ``info["status"]``): ok 0, over_budget 1, diverged 2, oom 3,
#: timeout 4, error 5.
STATUS_CODES = {s: i for i, s in enumerate(STATUSES)}
#: The statuses of results that are real measurements of the pipeline (an over-budget child is measured
#: as too costly); every other status is a failed evaluation.
SUCCESS_STATUSES = ("ok", "over_budget")


@dataclass(frozen=True)
class EvalResult:
    """The outcome of evaluating one pipeline.

    Attributes:
        score: the reward: validation accuracy in [0, 1] after any cost-budget penalty; the evaluator's
            ``failure_score`` when the status is not ``"ok"``.
        status: one of :data:`STATUSES`.
        accuracy: validation accuracy before the cost penalty (``nan`` if training failed).
        flops: forward FLOPs of one image of the child.
        params: number of parameters of the child.
        seconds: wall time of the evaluation.
        info: backend-specific details (losses, error messages...), JSON-serialisable.
    """

    score: float
    status: str = "ok"
    accuracy: float = math.nan
    flops: float = math.nan
    params: float = math.nan
    seconds: float = 0.0
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if not math.isfinite(self.score):
            raise ValueError(f"score must be finite, got {self.score}; failed evaluations use failure_score")

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "status": self.status,
            "accuracy": self.accuracy,
            "flops": self.flops,
            "params": self.params,
            "seconds": self.seconds,
            "info": dict(self.info),
        }


class _ReadOnlyDict(dict):
    """A dict that refuses changes (picklable, JSON-serialisable): the one shared empty ``info``."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("this info is shared by many results and read-only; copy it with dict(info) to change it")

    __setitem__ = __delitem__ = __ior__ = update = setdefault = pop = popitem = clear = _refuse  # type: ignore


#: The ``info`` of a row without details (shared by every such row, read-only).
EMPTY_INFO: Mapping[str, Any] = _ReadOnlyDict()
_FIELDS = ("score", "status", "accuracy", "flops", "params", "seconds")


def _num(x: Any) -> float:
    """A Python float; NaN as the one ``math.nan`` (so that equal results compare equal, as EvalResults do)."""
    v = float(x)
    return math.nan if v != v else v


@dataclass(frozen=True, eq=False)
class BatchResult:
    """The results of a batch of ``K`` evaluations, as arrays (what :meth:`Evaluator.evaluate` returns).

    Attributes:
        score, accuracy, flops, params, seconds: float64 ``[K]`` (``nan``: not measured); the fields of
            :class:`EvalResult`.
        status: int64 ``[K]``, codes into :data:`STATUSES` (:data:`STATUS_CODES`).
        info: one mapping of backend details per row.

    ``len(batch)``, ``batch[i]`` (an :class:`EvalResult`) and iteration work row by row;
    :meth:`from_results` builds one from :class:`EvalResult` objects. Construction checks the shapes, the
    status codes and that every score is finite (a NaN score is a ``ValueError``, as for
    :class:`EvalResult`).
    """

    score: np.ndarray
    status: np.ndarray
    accuracy: np.ndarray
    flops: np.ndarray
    params: np.ndarray
    seconds: np.ndarray
    info: tuple[Mapping[str, Any], ...]

    def __post_init__(self) -> None:
        k = None
        for name in _FIELDS:
            v = np.asarray(getattr(self, name), dtype=np.int64 if name == "status" else np.float64)
            if v.ndim != 1 or (k is not None and len(v) != k):
                raise ValueError(f"BatchResult.{name} must be a 1-d array of {k if k is not None else 'K'} "
                                 f"values (one per row), got shape {v.shape}")
            k = len(v)
            object.__setattr__(self, name, v)
        info = tuple(self.info)
        if len(info) != k:
            raise ValueError(f"BatchResult.info must hold one mapping per row ({k}), got {len(info)}")
        object.__setattr__(self, "info", info)
        if k and (self.status.min() < 0 or self.status.max() >= len(STATUSES)):
            raise ValueError(f"BatchResult.status must be codes into STATUSES (0..{len(STATUSES) - 1}), got "
                             f"{sorted(set(self.status.tolist()))}")
        if not np.isfinite(self.score).all():
            bad = int(np.flatnonzero(~np.isfinite(self.score))[0])
            raise ValueError(f"score must be finite, got {self.score[bad]} in row {bad}; failed evaluations "
                             "use failure_score")

    @classmethod
    def from_results(cls, results: Sequence[EvalResult]) -> BatchResult:
        """The batch of these results, in order."""
        results = list(results)
        bad = next((r for r in results if not isinstance(r, EvalResult)), None)
        if bad is not None:
            raise TypeError(f"results must be ma2ml_env.EvalResult objects, got {type(bad).__name__}")
        cols = [[getattr(r, f) for r in results] for f in ("score", "accuracy", "flops", "params", "seconds")]
        return cls(np.array(cols[0], dtype=np.float64), np.array([STATUS_CODES[r.status] for r in results],
                                                                   dtype=np.int64),
                   *(np.array(c, dtype=np.float64) for c in cols[1:]), tuple(r.info for r in results))

    @classmethod
    def _trusted(cls, score: np.ndarray, status: np.ndarray, accuracy: np.ndarray, flops: np.ndarray,
                 params: np.ndarray, seconds: np.ndarray, info: tuple) -> BatchResult:
        """A batch from arrays an evaluator's own fast path made right (float64/int64 ``[K]``, finite
        scores, valid codes): skips the checks (a few microseconds, as much as one surrogate step)."""
        out = object.__new__(cls)
        out.__dict__.update(score=score, status=status, accuracy=accuracy, flops=flops, params=params,
                            seconds=seconds, info=info)
        return out

    @classmethod
    def _one(cls, score: float, status: int, accuracy: float, flops: float, params: float, seconds: float,
             info: Mapping[str, Any] = EMPTY_INFO) -> BatchResult:
        """A one-row batch from an evaluator's own fast path (finite score, valid code): its arrays are
        made on first access, so that a caller that reads :meth:`row` (``env.step``) never pays for them."""
        out = object.__new__(_OneRow)
        _set_values(out, (score, status, accuracy, flops, params, seconds))
        _set_info(out, (info,))
        return out

    def row(self, i: int) -> tuple[float, int, float, float, float, float]:
        """Row ``i`` as Python numbers: ``(score, status code, accuracy, flops, params, seconds)``."""
        return (float(self.score[i]), int(self.status[i]), float(self.accuracy[i]), float(self.flops[i]),
                float(self.params[i]), float(self.seconds[i]))

    def __len__(self) -> int:
        return len(self.score)

    def __getitem__(self, i: int) -> EvalResult:
        return EvalResult(float(self.score[i]), STATUSES[int(self.status[i])], _num(self.accuracy[i]),
                          _num(self.flops[i]), _num(self.params[i]), _num(self.seconds[i]), dict(self.info[i]))

    def __iter__(self) -> Iterator[EvalResult]:
        return (self[i] for i in range(len(self)))

    def statuses(self) -> list[str]:
        """The status names of the rows."""
        return [STATUSES[c] for c in self.status.tolist()]


class _OneRow(BatchResult):
    """A one-row :class:`BatchResult` from :meth:`BatchResult._one`: the arrays are built on first access;
    values and info are slots (set by ``_one`` through their descriptors: half the cost of the dict)."""

    __slots__ = ("_values", "info")

    def __getattr__(self, name: str) -> Any:  # called only for attributes not set yet
        if name not in _FIELDS:
            raise AttributeError(name)
        for f, v in zip(_FIELDS, self._values):
            self.__dict__[f] = np.array([v], dtype=np.int64 if f == "status" else np.float64)
        return self.__dict__[name]

    def row(self, i: int) -> tuple[float, int, float, float, float, float]:
        if i not in (0, -1):
            raise IndexError(f"row {i} of a batch of 1")
        return self._values

    def __reduce__(self) -> tuple[Any, tuple]:  # pickled as what makes it (slots of a frozen class)
        return BatchResult._one, (*self._values, self.info[0])

    def __len__(self) -> int:
        return 1


_set_values, _set_info = _OneRow._values.__set__, _OneRow.info.__set__  # type: ignore[attr-defined]


class Evaluator:
    """Base class of reward backends: the one method the env and the search loops call on one.

    One required method, :meth:`evaluate`: a batch of flat joint actions (int64 ``[K, D]`` in the layout of
    the bound space's codec, already validated) with one seed each, to a :class:`BatchResult`, calling
    ``on_result(i, result)`` the moment row ``i``'s result is final. Everything else has a working default:
    :meth:`bind` (the env calls it once with its search space before the first evaluation), :meth:`config`,
    :meth:`close` and the attributes below. A backend that needs a :class:`Pipeline` per row subclasses
    :class:`PipelineEvaluator` instead and implements ``evaluate_pipeline(pipeline, seed)``.

    Fast paths (a compiled kernel, a scalar path for one row, a table lookup) are private to the evaluator
    that has them; no evaluator touches the env's observation. The callers (``env.step``, ``env.evaluate``,
    the parallel backends) go through :func:`evaluate_guarded`, so an exception, a NaN score or a malformed
    result is an ``"error"`` result, never an aborted search. Evaluators must be picklable (the env is;
    parallel backends ship them to workers). :func:`ma2ml_env.check_evaluator` checks a backend against this
    contract.

    Attributes:
        name: short name, shown in infos and results files.
        failure_score: the score of a failed evaluation.
        device: see below.
        deterministic: see below.
        wall_clock_seconds: see below.
    """

    name: str = "evaluator"
    failure_score: float = 0.0
    #: Where the evaluator computes (``"cpu"``, ``"cuda"``, a ``torch.device``); ``None`` for evaluators that
    #: use no accelerator. The ``local`` backend gives each worker process one GPU (``CUDA_VISIBLE_DEVICES``)
    #: and sets the worker's copy to ``cuda:0`` when it is a CUDA device.
    device: Any = None
    #: True when equal (joint action, seed) pairs always give equal results (what :func:`check_evaluator`
    #: tests and what lets a durable search trust a re-evaluation); set it to False for wall-clock-limited or
    #: otherwise non-reproducible backends.
    deterministic: bool = True
    #: True when the results' ``seconds`` are measured wall time (never reproducible; the training backend):
    #: the env then reports ``INFO_MISSING`` as ``info["seconds"]`` so that equal seeds give equal infos, and
    #: the measured time stays in ``env.unwrapped.last_result.seconds``. False (the default) when ``seconds``
    #: is a deterministic cost (the surrogate's simulated training time, a table's recorded one).
    wall_clock_seconds: bool = False
    #: The fidelity levels the evaluator can stop a child at (:class:`~ma2ml_env.Fidelity`); ``None``: it
    #: evaluates full trainings only. One that declares levels takes ``levels=`` and ``start=`` in
    #: :meth:`evaluate` (:mod:`ma2ml_env.rewards.fidelity`).
    fidelity: Fidelity | None = None

    def bind(self, space: SearchSpace) -> None:
        """Called by the env with its search space; backends that need the module tables keep them."""
        self.space = space

    def evaluate(self, actions: np.ndarray, seeds: np.ndarray,
                 on_result: Callable[[int, EvalResult], None] | None = None) -> BatchResult:
        """Evaluate every row of ``actions`` (int64 ``[K, D]``, validated) with its seed (int64 ``[K]``).

        Returns one result per row, in order, as a :class:`BatchResult`; calls ``on_result(i, result)`` (when
        given) once per row, the moment row ``i``'s result is final (in any order; a durable search commits it
        there). Should not raise for a bad joint action (callers guard it anyway: :func:`evaluate_guarded`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate(actions, seeds, on_result=None)"
                                  " (or subclass ma2ml_env.PipelineEvaluator and implement "
                                  "evaluate_pipeline(pipeline, seed))")

    def _evaluate_row(self, row: np.ndarray, seed: int, level: int | None = None, start: int = -1) -> EvalResult:
        """One row, raising on any failure (an exception, a malformed result): what the parallel backends'
        workers run per attempt, so that the kind of a failure (out of memory or not) decides its retry.
        ``level``/``start``: the row's fidelity request (``None``: no request, the full training)."""
        seeds = np.array([seed], dtype=np.int64)
        if level is None or self.fidelity is None:  # no request, or one for the only level (checked by the caller)
            out = self.evaluate(row[None], seeds)
        else:
            out = self.evaluate(row[None], seeds, levels=np.array([level], dtype=np.int64),
                                start=np.array([start], dtype=np.int64))
        check_batch(self, out, 1)
        return out[0]

    def config(self) -> dict[str, Any]:
        """The settings that determine this evaluator's rewards, JSON-serialisable. A durable search stores
        it and refuses to resume under different settings. The default names the class; built-in backends
        add their arguments. Execution settings that do not change rewards (parallel backend, workers,
        device) are left out."""
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}"}

    def close(self) -> None:
        """Release resources (worker pools, device memory)."""


class PipelineEvaluator(Evaluator):
    """An evaluator of one :class:`Pipeline` at a time (real training, a user's code).

    Implement :meth:`evaluate_pipeline`; :meth:`evaluate` decodes each row with the bound space, turns every
    failure of ``evaluate_pipeline`` (an exception, an :class:`EvalResult` built with a NaN score, something
    that is not an :class:`EvalResult`) into an ``"error"`` result with ``failure_score`` and the message and
    traceback in ``info``, and calls ``on_result`` after each row.
    """

    def evaluate_pipeline(self, pipeline: Pipeline, seed: int) -> EvalResult:
        """Evaluate one pipeline with its seed."""
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate_pipeline(pipeline, seed)")

    def _pipeline_of(self, row: np.ndarray) -> Pipeline:
        space = getattr(self, "space", None)
        if space is None:
            raise RuntimeError(f"{type(self).__name__} is not bound to a search space; the env calls "
                               "bind(space) before the first evaluation")
        return space.build(row)

    def _evaluate_row(self, row: np.ndarray, seed: int, level: int | None = None, start: int = -1) -> EvalResult:
        """One row (``level``/``start``: its fidelity request; a subclass that declares ``fidelity``
        overrides this to honour it)."""
        if level is not None and self.fidelity is not None and (start >= 0 or level != self.fidelity.top):
            raise NotImplementedError(f"{type(self).__name__} declares fidelity levels but evaluates full "
                                      "trainings only: override _evaluate_row(row, seed, level, start)")
        r = self.evaluate_pipeline(self._pipeline_of(row), int(seed))
        if not isinstance(r, EvalResult):
            raise TypeError(f"evaluate_pipeline() must return a ma2ml_env.EvalResult, got {type(r).__name__}")
        return r

    def evaluate(self, actions: np.ndarray, seeds: np.ndarray,
                 on_result: Callable[[int, EvalResult], None] | None = None, *,
                 levels: np.ndarray | None = None, start: np.ndarray | None = None) -> BatchResult:
        if len(actions) != len(seeds):
            raise ValueError(f"got {len(seeds)} seeds for {len(actions)} joint actions; pass one seed per "
                             "joint action")
        asked = levels is not None or start is not None
        lv, st = fidelity_request(self.fidelity, len(actions), levels, start) if asked else (None, None)
        out = []
        for i, (row, seed) in enumerate(zip(actions, seeds)):
            try:
                r = (self._evaluate_row(row, int(seed)) if lv is None else
                     self._evaluate_row(row, int(seed), int(lv[i]), int(st[i])))
            except Exception as exc:  # noqa: BLE001 - user code: any failure is an outcome
                r = error_result(self, exc)
            if on_result is not None:
                on_result(i, r)
            out.append(r)
        return BatchResult.from_results(out)


def error_result(evaluator: Any, exc: BaseException) -> EvalResult:
    """The ``"error"`` result of a failed evaluation: the evaluator's ``failure_score``, the message and the
    traceback in ``info``."""
    return EvalResult(float(getattr(evaluator, "failure_score", 0.0)), "error",
                      info={"error": f"{type(exc).__name__}: {exc}",
                            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__,
                                                                            limit=8))})


def check_batch(evaluator: Any, out: Any, k: int) -> None:
    """Raise when ``out`` is not a :class:`BatchResult` of ``k`` rows (what :func:`evaluate_guarded` and the
    parallel backends turn into ``"error"`` results)."""
    if not isinstance(out, BatchResult):
        raise TypeError(f"evaluate() must return a ma2ml_env.BatchResult (e.g. BatchResult.from_results(list "
                        f"of EvalResult)), got {type(out).__name__}")
    if len(out) != k:
        raise RuntimeError(f"evaluator {getattr(evaluator, 'name', type(evaluator).__name__)!r} returned "
                           f"{len(out)} results for {k} joint actions")


def evaluate_guarded(evaluator: Evaluator, actions: np.ndarray, seeds: np.ndarray,
                     on_result: Callable[[int, EvalResult], None] | None = None, **fidelity: Any) -> BatchResult:
    """``evaluator.evaluate(actions, seeds, on_result)``, with every way user code can fail turned into
    results: an exception (a :class:`BatchResult` or :class:`EvalResult` built with a NaN score included), a
    wrong number of results or something that is not a :class:`BatchResult` gives each row not yet reported
    an ``"error"`` result (the evaluator's ``failure_score``, the message and traceback in ``info``).
    ``on_result`` is called exactly once per row: as the evaluator reports it, else after it returns.
    ``env.step``, ``env.evaluate`` and every parallel backend call evaluators through this. ``fidelity``
    (``levels``, ``start``: :mod:`ma2ml_env.rewards.fidelity`) is passed on when given."""
    k = len(actions)
    if on_result is None:
        try:
            out = evaluator.evaluate(actions, seeds, **fidelity) if fidelity else evaluator.evaluate(actions, seeds)
            if not (out.__class__ is _OneRow and k == 1) and (not isinstance(out, BatchResult) or len(out) != k):
                check_batch(evaluator, out, k)
            return out
        except Exception as exc:  # noqa: BLE001 - user code: any failure is an outcome
            return BatchResult.from_results([error_result(evaluator, exc)] * k)
    reported: dict[int, EvalResult] = {}

    def report(i: int, r: EvalResult) -> None:
        if i not in reported and 0 <= i < k:
            reported[i] = r
            on_result(i, r)

    try:
        out = evaluator.evaluate(actions, seeds, report, **fidelity)
        check_batch(evaluator, out, k)
    except Exception as exc:  # noqa: BLE001 - user code: any failure is an outcome
        err = error_result(evaluator, exc)
        results = [reported.get(i) or err for i in range(k)]
        for i in range(k):
            report(i, results[i])
        return BatchResult.from_results(results)
    if len(reported) < k:
        for i in range(k):
            if i not in reported:
                report(i, out[i])
    return out


# -- registry of backends by name (imported lazily: nothing heavy at import time) --------------------
_EVALUATORS: dict[str, str] = {
    "surrogate": "ma2ml_env.rewards.surrogate:SurrogateEvaluator",
    "learning-curves": "ma2ml_env.rewards.learning_curves:LearningCurveEvaluator",
    "tabular": "ma2ml_env.rewards.tabular:TabularEvaluator",
    "train": "ma2ml_env.rewards.train:TrainEvaluator",
}


def register_evaluator(name: str, target: str, *, overwrite: bool = False) -> None:
    """Register a reward backend under ``name``: ``target`` is ``"package.module:Class"``."""
    if name in _EVALUATORS and not overwrite:
        raise ValueError(f"reward backend {name!r} is already registered; pass overwrite=True to replace it")
    if ":" not in target:
        raise ValueError(f"target must look like 'package.module:Class', got {target!r}")
    _EVALUATORS[name] = target


def registered_evaluators() -> tuple[str, ...]:
    return tuple(sorted(_EVALUATORS))


def evaluator_class(reward: str) -> type[Evaluator]:
    """The class registered as reward backend ``reward`` (imported now)."""
    if not isinstance(reward, str) or reward not in _EVALUATORS:
        raise ValueError(
            f"unknown reward {reward!r}; use one of {list(registered_evaluators())} or pass an "
            "ma2ml_env.Evaluator instance"
        )
    mod_name, cls_name = _EVALUATORS[reward].split(":")
    return getattr(importlib.import_module(mod_name), cls_name)


def make_evaluator(reward: str | Evaluator, **kwargs: Any) -> Evaluator:
    """An evaluator from a registered name (with ``kwargs``) or an instance (returned as is)."""
    if isinstance(reward, Evaluator):
        if kwargs:
            raise ValueError(
                f"reward_kwargs {sorted(kwargs)} were given with an evaluator instance; "
                "configure the instance"
            )
        return reward
    return evaluator_class(reward)(**kwargs)
