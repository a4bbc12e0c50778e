"""The evaluator interface: every reward backend (surrogate, real training, user-supplied) implements it.

An evaluator takes a batch of pipelines with one seed each and returns one :class:`EvalResult` per
pipeline. It never raises for a bad pipeline: NaN losses, out-of-memory, exceptions in user code and
time limits are ordinary outcomes with a ``status`` and a defined ``score``.
"""

from __future__ import annotations

import importlib
import math
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ma2ml_env.pipeline import Pipeline, SearchSpace

__all__ = [
    "STATUSES",
    "STATUS_CODES",
    "SUCCESS_STATUSES",
    "CostBudget",
    "EvalResult",
    "Evaluator",
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


_BUDGET_FIELDS = ("max_flops", "max_params", "mode", "weight", "penalty_score")
_OR_NONE = {"max_flops": " or None", "max_params": " or None"}


@dataclass(frozen=True)
class CostBudget:
    """A FLOPs / parameter budget, as in the paper's "< 600M FLOPs" setting.

    Attributes:
        max_flops: FLOPs target per image (``None``: no FLOPs constraint).
        max_params: parameter target (``None``: no parameter constraint).
        mode: ``"hard"``: a pipeline over budget gets status ``"over_budget"`` and ``penalty_score``
            (and is not trained); ``"soft"``: MnasNet's ``accuracy * (cost / target) ** weight`` for each
            constraint that is exceeded (Tan et al. 2019, eq. 2 with beta = weight for cost > target).
        weight: the soft-mode exponent (MnasNet uses -0.07).
        penalty_score: the score of an over-budget pipeline in hard mode.
    """

    max_flops: float | None = None
    max_params: float | None = None
    mode: str = "hard"
    weight: float = -0.07
    penalty_score: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.mode, str) or self.mode not in ("hard", "soft"):
            raise ValueError(f"CostBudget.mode must be 'hard' or 'soft', got {self.mode!r}")
        for label in ("max_flops", "max_params", "weight", "penalty_score"):
            v = getattr(self, label)
            if v is None and label in ("max_flops", "max_params"):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ValueError(f"CostBudget.{label} must be a number{_OR_NONE.get(label, '')}, "
                                 f"got {type(v).__name__} {v!r}")
            if math.isnan(v):
                raise ValueError(f"CostBudget.{label} must be a number, got nan")
            if isinstance(v, np.integer):  # JSON-serialisable in config()
                object.__setattr__(self, label, int(v))
        for label, v in (("max_flops", self.max_flops), ("max_params", self.max_params)):
            if v is not None and not v > 0:
                raise ValueError(f"CostBudget.{label} must be > 0 or None, got {v}")
        if self.weight > 0:
            raise ValueError(f"CostBudget.weight must be <= 0 (a penalty), got {self.weight}")
        if not math.isfinite(self.penalty_score):
            raise ValueError(f"CostBudget.penalty_score must be finite, got {self.penalty_score}")

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> CostBudget:
        """A budget from a mapping of its fields (e.g. parsed JSON: ``{"max_flops": 5e6, "mode": "soft"}``);
        the inverse of :meth:`config`. Raises ``ValueError`` for anything that is not a mapping, an unknown
        field, or a field value :class:`CostBudget` refuses."""
        if not isinstance(fields, Mapping):
            raise ValueError(f"CostBudget.from_dict needs a dict of fields {list(_BUDGET_FIELDS)}, "
                             f"got {type(fields).__name__} {fields!r}")
        unknown = sorted(str(k) for k in fields if k not in _BUDGET_FIELDS)
        if unknown:
            raise ValueError(f"unknown CostBudget field(s) {unknown}; the fields are {list(_BUDGET_FIELDS)}")
        return cls(**fields)

    @classmethod
    def coerce(cls, budget: CostBudget | Mapping[str, Any] | None) -> CostBudget | None:
        """What every reward backend does with its ``budget`` argument: ``None`` and a :class:`CostBudget`
        unchanged, a mapping through :meth:`from_dict`; anything else raises ``ValueError``. One rule, so
        every backend gives the same error for the same mistake."""
        if budget is None or isinstance(budget, CostBudget):
            return budget
        if isinstance(budget, Mapping):
            return cls.from_dict(budget)
        raise ValueError(f"budget must be a ma2ml_env.CostBudget, a dict of its fields "
                         f"{list(_BUDGET_FIELDS)} or None, got {type(budget).__name__} {budget!r}")

    def config(self) -> dict[str, Any]:
        """The budget's fields, JSON-serialisable (for evaluators' :meth:`Evaluator.config`)."""
        return {"max_flops": self.max_flops, "max_params": self.max_params, "mode": self.mode,
                "weight": self.weight, "penalty_score": self.penalty_score}

    @property
    def active(self) -> bool:
        return self.max_flops is not None or self.max_params is not None

    def over(self, flops: float, params: float) -> bool:
        """Whether a child of this cost exceeds any target."""
        return (self.max_flops is not None and flops > self.max_flops) or (
            self.max_params is not None and params > self.max_params
        )

    def factor(self, flops: float, params: float) -> float:
        """The soft-mode multiplier (1 when within budget)."""
        f = 1.0
        if self.max_flops is not None and flops > self.max_flops:
            f *= (flops / self.max_flops) ** self.weight
        if self.max_params is not None and params > self.max_params:
            f *= (params / self.max_params) ** self.weight
        return f

    def apply(self, accuracy: float, flops: float, params: float) -> tuple[float, str, dict[str, Any]]:
        """``(score, status, info)`` of a child with this accuracy and cost: the one rule every backend uses.

        Inactive budget: ``(accuracy, "ok", {})``. Hard mode: over budget gives ``(penalty_score,
        "over_budget", {"budget": {"max_flops", "max_params"}})``, within it ``(accuracy, "ok", {})``; a
        backend that trains may call this with ``accuracy=nan`` first to skip an over-budget child. Soft
        mode: ``(accuracy * factor, "ok", {"budget_factor": factor})``."""
        if not self.active:
            return accuracy, "ok", {}
        if self.mode == "hard":
            if self.over(flops, params):
                return self.penalty_score, "over_budget", {"budget": {"max_flops": self.max_flops,
                                                                      "max_params": self.max_params}}
            return accuracy, "ok", {}
        f = self.factor(flops, params)
        return accuracy * f, "ok", {"budget_factor": f}

    def factors(self, flops: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised budget: ``(factor, feasible)`` arrays. Hard mode: factor 1, feasible = within budget;
        soft mode: the MnasNet factor, every child feasible; inactive: 1 and True."""
        flops, params = np.asarray(flops, dtype=np.float64), np.asarray(params, dtype=np.float64)
        factor, feasible = np.ones_like(flops), np.ones(len(flops), dtype=bool)
        if not self.active:
            return factor, feasible
        over = np.zeros(len(flops), dtype=bool)
        if self.max_flops is not None:
            over |= flops > self.max_flops
            factor *= np.where(flops > self.max_flops, (flops / self.max_flops) ** self.weight, 1.0)
        if self.max_params is not None:
            over |= params > self.max_params
            factor *= np.where(params > self.max_params, (params / self.max_params) ** self.weight, 1.0)
        if self.mode == "hard":
            return np.ones_like(flops), ~over
        return factor, feasible

    def apply_arrays(self, accuracy: np.ndarray, flops: np.ndarray, params: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`apply` on arrays: ``(score, over_budget)``; ``over_budget`` is the hard-mode status."""
        score = np.array(accuracy, dtype=np.float64)
        over = np.zeros(len(score), dtype=bool)
        if self.active:
            factor, feasible = self.factors(flops, params)
            over = ~feasible
            score = np.where(over, self.penalty_score, score * factor)
        return score, over


class Evaluator:
    """Base class of reward backends: everything the env and the search loops may call on one.

    A backend implements :meth:`evaluate` (and usually :meth:`config`); everything else has a working
    default. The env calls :meth:`bind` once with its search space before the first evaluation, then:

    * ``env.evaluate`` (search algorithms): :meth:`evaluate_actions` + :meth:`results_from_arrays` when
      :attr:`vectorised` is true, else :meth:`evaluate_streaming` on the decoded pipelines;
    * ``env.step``: the compiled :meth:`step_kernel` if it offers one, else the scalar
      :meth:`evaluate_one_tuple` if it offers one, else :meth:`evaluate_streaming` on one pipeline.

    Every failure of an evaluator outside the vectorised and scalar fast paths (an exception, a NaN score,
    a wrong result) becomes an ``"error"`` result (:func:`evaluate_guarded`). Evaluators must be picklable
    (the env is; parallel backends ship them to workers). :func:`ma2ml_env.check_evaluator` checks a backend
    against this contract.

    Attributes:
        name: short name, shown in infos and results files.
        failure_score: the score of a failed evaluation.
        device: see below.
        vectorised: see below.
        deterministic: see below.
        wall_clock_seconds: see below.
    """

    name: str = "evaluator"
    failure_score: float = 0.0
    #: Where the evaluator computes (``"cpu"``, ``"cuda"``, a ``torch.device``); ``None`` for evaluators that
    #: use no accelerator. The ``local`` backend gives each worker process one GPU (``CUDA_VISIBLE_DEVICES``)
    #: and sets the worker's copy to ``cuda:0`` when it is a CUDA device.
    device: Any = None
    #: True when the evaluator implements :meth:`evaluate_actions` and :meth:`results_from_arrays` (a whole
    #: batch of flat joint actions in one call); the env then never builds pipelines for it.
    vectorised: bool = False
    #: True when equal (pipeline, seed) pairs always give equal results (what :func:`check_evaluator` tests
    #: and what lets a durable search trust a re-evaluation); set it to False for wall-clock-limited or
    #: otherwise non-reproducible backends.
    deterministic: bool = True
    #: True when the results' ``seconds`` are measured wall time (never reproducible; the training backend):
    #: the env then reports ``-1.0`` as ``info["seconds"]`` so that equal seeds give equal infos, and the
    #: measured time stays in ``env.unwrapped.last_result.seconds``. False (the default) when ``seconds`` is
    #: a deterministic cost (the surrogate's simulated training time, a table's recorded one).
    wall_clock_seconds: bool = False

    def bind(self, space: SearchSpace) -> None:
        """Called by the env with its search space; backends that need the module tables keep them."""
        self.space = space

    def evaluate(self, pipelines: Sequence[Pipeline], seeds: Sequence[int]) -> list[EvalResult]:
        """Evaluate each pipeline with its seed; one result per pipeline, in order. Should not raise for a
        bad pipeline (callers guard it anyway: see :func:`evaluate_guarded`)."""
        raise NotImplementedError

    def evaluate_streaming(self, pipelines: Sequence[Pipeline], seeds: Sequence[int],
                           on_result: Callable[[int, EvalResult], None]) -> list[EvalResult]:
        """Evaluate like :meth:`evaluate`, calling ``on_result(i, result)`` the moment result ``i`` is final
        (a durable search commits it then). Results may arrive in any order; the list returned is in input
        order. An exception or a malformed result of ``evaluate`` becomes an ``"error"`` result.

        The default evaluates one pipeline at a time (each committed on its own), or, for a
        :attr:`vectorised` evaluator, the whole batch in one call, then reports each result in order. The
        parallel backends override it to report each result as its worker finishes."""
        if self.vectorised:
            out = evaluate_guarded(self, pipelines, seeds)
            for i, r in enumerate(out):
                on_result(i, r)
            return out
        out = []
        for i, (p, s) in enumerate(zip(pipelines, seeds)):
            r = evaluate_guarded(self, [p], [s])[0]
            on_result(i, r)
            out.append(r)
        return out

    # -- optional fast paths (the env uses them when offered) ---------------------------------------------
    def evaluate_actions(self, flat_actions: np.ndarray, seeds: Sequence[int] | None = None
                         ) -> Mapping[str, np.ndarray]:
        """Vectorised evaluation of flat joint actions ``[K, D]`` (rows of ``SearchSpace.flatten``), one seed
        each, for evaluators with :attr:`vectorised` true. Returns ``[K]`` arrays ``score, accuracy, flops,
        params, seconds`` (float) and ``over_budget`` (bool), plus any backend-specific arrays, in the form
        :meth:`results_from_arrays` turns into results. Must not raise for a valid action. The default
        raises ``NotImplementedError`` (not vectorised: callers use :meth:`evaluate_streaming`)."""
        raise NotImplementedError(f"{type(self).__name__} is not vectorised (vectorised=False); "
                                  "use evaluate() or evaluate_streaming()")

    def results_from_arrays(self, out: Mapping[str, np.ndarray]) -> list[EvalResult]:
        """Turn :meth:`evaluate_actions` output into :class:`EvalResult` objects (status ``over_budget`` where
        ``out["over_budget"]``, else ``ok``). Override to add ``info``."""
        over = out["over_budget"]
        return [
            EvalResult(score=float(out["score"][i]), status="over_budget" if over[i] else "ok",
                       accuracy=float(out["accuracy"][i]), flops=float(out["flops"][i]),
                       params=float(out["params"][i]), seconds=float(out["seconds"][i]))
            for i in range(len(out["score"]))
        ]

    def evaluate_one_tuple(self, x: Sequence[int], seed: int | None = None) -> tuple | None:
        """Scalar fast path of ``env.step``: one flat joint action (a list of ints, already validated) to
        ``(score, status, accuracy, flops, params, seconds)`` (the :class:`EvalResult` field order, without
        building one), or ``None`` when the evaluator has no such path (the default; then for every call,
        so the env stops asking). Must give the same numbers as :meth:`evaluate`, as finite Python floats
        (the env puts them in its infos as they are: no NaN on this path), and must not raise."""
        return None

    def step_kernel(self) -> tuple[Callable[..., tuple], tuple] | None:
        """``(kernel, tables)`` of a compiled env step, or ``None`` (the default): ``kernel(arrays, *tables,
        flat, obs, scale)`` validates the agents' action arrays (a tuple in agent order), writes the flat
        joint action into ``flat`` and ``flat * scale`` into ``obs[3:]`` and returns ``(accuracy, flops,
        params, seconds)`` of an ``"ok"`` result whose score is the accuracy, or accuracy ``-1.0`` (nothing
        written) when an action is invalid; it raises ``TypeError`` for inputs it was not compiled for. Only
        for evaluators without noise or budget; see :mod:`ma2ml_env.rewards._jit`."""
        return None

    def config(self) -> dict[str, Any]:
        """The settings that determine this evaluator's rewards, JSON-serialisable. A durable search stores
        it and refuses to resume under different settings. The default names the class; built-in backends
        add their arguments. Execution settings that do not change rewards (parallel backend, workers,
        device) are left out."""
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}"}

    def close(self) -> None:
        """Release resources (worker pools, device memory)."""


def evaluate_guarded(
    evaluator: Evaluator, pipelines: Sequence[Pipeline], seeds: Sequence[int]
) -> list[EvalResult]:
    """``evaluator.evaluate(pipelines, seeds)``, with every way user code can fail turned into results: an
    exception (including an :class:`EvalResult` built with a NaN score), a wrong number of results or
    something that is not an :class:`EvalResult` gives each pipeline an ``"error"`` result with the
    evaluator's ``failure_score`` and the error message and traceback in ``info``. Every backend calls
    evaluators through this, so a failing evaluator is a recorded failed trial, never an aborted search."""
    try:
        results = list(evaluator.evaluate(pipelines, seeds))
        if len(results) != len(pipelines):
            raise RuntimeError(f"evaluator {getattr(evaluator, 'name', type(evaluator).__name__)!r} returned "
                               f"{len(results)} results for {len(pipelines)} pipelines")
        bad = next((r for r in results if not isinstance(r, EvalResult)), None)
        if bad is not None:
            raise TypeError(f"evaluate() must return ma2ml_env.EvalResult objects, got {type(bad).__name__}")
        return results
    except Exception as exc:  # noqa: BLE001 - user code: any failure is an outcome
        info = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}
        score = float(getattr(evaluator, "failure_score", 0.0))
        return [EvalResult(score, "error", info=info) for _ in pipelines]


# -- registry of backends by name (imported lazily: nothing heavy at import time) --------------------
_EVALUATORS: dict[str, str] = {
    "surrogate": "ma2ml_env.rewards.surrogate:SurrogateEvaluator",
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
    if not isinstance(reward, str) or reward not in _EVALUATORS:
        raise ValueError(
            f"unknown reward {reward!r}; use one of {list(registered_evaluators())} or pass an "
            "ma2ml_env.Evaluator instance"
        )
    mod_name, cls_name = _EVALUATORS[reward].split(":")
    cls = getattr(importlib.import_module(mod_name), cls_name)
    return cls(**kwargs)
