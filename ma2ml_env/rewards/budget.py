"""The FLOPs / parameter budget of the paper's "< 600M FLOPs" setting: one rule every reward backend applies."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CostBudget"]

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
