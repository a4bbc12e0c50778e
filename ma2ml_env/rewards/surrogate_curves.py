r"""The surrogate's learning curves: its accuracy after part of a child's training (multi-fidelity).

:class:`~ma2ml_env.rewards.surrogate.SurrogateEvaluator` declares fidelity levels in epochs of the child's
schedule, as the training backend does (:mod:`ma2ml_env.rewards.train_fidelity`): by default ``1, 2, 4, ...``
up to the longest schedule of the search space (``(1, 2, 4, 8)`` in the default space), or the
``fidelity_epochs`` it is given. At level ``i`` a child of ``T`` epochs has trained
``t = min(levels[i], T)`` epochs of its schedule (the last level: its full training, ``t = T``), at the same
learning rate at every step as its full training (so a cosine or step schedule is not yet annealed).

**Model.** The accuracy after ``t`` of ``T`` epochs is the surrogate's final accuracy with its logit
lowered by a gap that shrinks to 0 at ``t = T``:

.. code-block:: text

    gap = (steps + capacity * c) * log2(T / t)               logit lost per halving of the epochs trained;
                                                             a larger child learns more slowly per epoch
    accuracy_t = floor + (ceil - floor) * sigmoid(z - gap)   (z: the final logit; + the same seeded noise,
                                                             then the budget)

``c`` is the surrogate's capacity level of the child (its log-FLOPs in [0, 1]). Both coefficients are
``>= 0``, so the modelled curves never go down (real ones sometimes do). Of the rates tried on the recorded
curves (also a learning rate below the optimum learning more slowly, and a per-schedule term for the share of
the schedule still to run), this one predicted held-out pipelines best (the comparison is in the report).
At ``t = T`` the result is the full training's, bit for bit: ``evaluate`` without levels, and every number
recorded before the surrogate had levels, are unchanged.

**Calibration.** :data:`DEFAULT_CURVES` is fitted by ``benchmarks/surrogate_curves.py`` to the real learning
curves of ``benchmarks/results/digits-curves.json`` (``benchmarks/record_digits_curves.py``: random pipelines
of the default env trained on digits with the training backend's fidelity): bounded least squares of the
real accuracy at each level below a full training on the model's, anchored at the surrogate's own final
accuracy of the same pipeline, so that the surrogate's low fidelities score (and rank) pipelines as real
training does given its final accuracies. The rank correlations between levels, real and surrogate side by
side, and the rates compared are in ``benchmarks/results/surrogate-curves.md``.

**Costs.** The simulated training time is linear in the epochs trained: reaching level ``i`` from scratch
costs ``t_i * dataset_size * 3 * FLOPs / throughput + overhead`` (at the last level exactly the surrogate's
``seconds``), and continuing from level ``a`` to ``b`` costs the difference (no second overhead).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ma2ml_env.rewards import _jit
from ma2ml_env.rewards.base import BatchResult, EvalResult
from ma2ml_env.rewards.fidelity import Fidelity, fidelity_request
from ma2ml_env.rewards.surrogate_task import seed_noise

__all__ = ["DEFAULT_CURVES", "CurveModel", "curve_features", "evaluate_levels", "trained_epochs"]


@dataclass(frozen=True)
class CurveModel:
    """The coefficients of the learning-curve model (module docstring), each finite and ``>= 0``.

    Attributes:
        steps: logit lost per halving of the epochs trained.
        capacity: more logit lost per halving, times the child's capacity level ``c`` in [0, 1].
    """

    steps: float = 0.0
    capacity: float = 0.0

    def __post_init__(self) -> None:
        for name in ("steps", "capacity"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not (
                    math.isfinite(v) and v >= 0):
                raise ValueError(f"CurveModel.{name} must be a finite number >= 0 (the curves never go down), "
                                 f"got {v!r}")
            object.__setattr__(self, name, float(v))

    @classmethod
    def coerce(cls, curves: CurveModel | Mapping[str, Any] | None) -> CurveModel:
        """A :class:`CurveModel` from itself, a dict of its fields (JSON) or ``None`` (:data:`DEFAULT_CURVES`)."""
        if curves is None:
            return DEFAULT_CURVES
        if isinstance(curves, CurveModel):
            return curves
        names = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(curves, Mapping) or not set(curves) <= set(names):
            raise ValueError(f"curves must be a CurveModel or a dict of some of its fields {names} (the others "
                             f"keep the calibrated values), got {curves!r}")
        return cls(**{**dataclasses.asdict(DEFAULT_CURVES), **curves})

    def coefficients(self) -> np.ndarray:
        """The coefficients in the order of :func:`curve_features`'s columns."""
        return np.array([self.steps, self.capacity])

    def config(self) -> dict[str, float]:
        return dataclasses.asdict(self)


#: Fitted by ``benchmarks/surrogate_curves.py`` to the 36 real digits learning curves of
#: ``benchmarks/results/digits-curves.json`` (module docstring; the fit and its rank correlations:
#: ``benchmarks/results/surrogate-curves.md``).
DEFAULT_CURVES = CurveModel(steps=0.275, capacity=0.233)


def trained_epochs(fidelity: Fidelity, levels: np.ndarray, epochs: np.ndarray) -> np.ndarray:
    """Epochs trained at level indices ``levels`` (``-1``: none) by children of ``epochs`` epochs:
    ``min(level, epochs)`` below the last level, ``epochs`` at it."""
    lv = np.asarray(levels, dtype=np.int64)
    res = np.asarray(fidelity.levels, dtype=np.float64)[np.maximum(lv, 0)]
    t = np.where(lv == fidelity.top, epochs, np.minimum(res, epochs))
    return np.where(lv < 0, 0.0, t)


def curve_features(trained: np.ndarray, epochs: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """``[K, 2]`` columns whose product with :meth:`CurveModel.coefficients` is the logit gap: the halvings
    ``log2(T / t)`` of the epochs trained and the same times the capacity level ``c``."""
    halvings = np.log2(np.asarray(epochs, dtype=np.float64) / np.asarray(trained, dtype=np.float64))
    return np.stack([halvings, halvings * np.asarray(capacity, dtype=np.float64)], axis=1)


def evaluate_levels(ev: Any, actions: np.ndarray, seeds: np.ndarray,
                    on_result: Callable[[int, EvalResult], None] | None,
                    levels: np.ndarray | None, start: np.ndarray | None) -> BatchResult:
    """:meth:`SurrogateEvaluator.evaluate <ma2ml_env.rewards.surrogate.SurrogateEvaluator.evaluate>` with a
    fidelity request: each row at its level, continued from ``start`` (module docstring)."""
    fid = ev.fidelity
    A = np.asarray(actions, dtype=np.int64)
    lv, st = fidelity_request(fid, len(A), levels, start)
    full = ev.evaluate(A, seeds)  # the full trainings, exactly as without levels
    hpo = ev._hpo_features(A)
    T = hpo["epochs"]
    t_b, t_a = trained_epochs(fid, lv, T), trained_epochs(fid, st, T)
    score, acc, status = full.score.copy(), full.accuracy.copy(), full.status
    part = np.flatnonzero(t_b < T)
    gap = curve_features(t_b[part], T[part], ev.capacity(full.flops[part])) @ ev.curves.coefficients()
    part, gap = part[gap > 0], gap[gap > 0]  # no gap: the full training's numbers, bit for bit
    if len(part):
        a = ev._apply_effects(ev._arrays(A[part], noise=False)["accuracy"], -gap)
        if ev.noise_std > 0:
            eps = np.array([seed_noise(s) for s in np.asarray(seeds)[part].tolist()])
            a = _jit.NP.add_noise(a, ev.noise_std * eps)
        acc[part] = a
        score[part] = ev.budget.apply_arrays(a, full.flops[part], full.params[part])[0]
    # simulated cost: cum(t) = t * dataset * 3 * flops / throughput + overhead (the surrogate's seconds at t = T)
    c = ev.tables().c

    def cum(t: np.ndarray) -> np.ndarray:
        return np.where(t == T, full.seconds,
                        t * c[_jit.DATASET] * 3 * full.flops / c[_jit.THROUGHPUT] + c[_jit.OVERHEAD])

    seconds = cum(t_b) - np.where(st >= 0, cum(t_a), 0.0)
    info = tuple({"epochs": fid.levels[i]} for i in lv.tolist())
    out = BatchResult(score, status, acc, full.flops, full.params, seconds, info)
    if on_result is not None:
        for i, r in enumerate(out):
            on_result(i, r)
    return out
