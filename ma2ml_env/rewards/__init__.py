"""Reward backends behind one evaluator interface."""

from ma2ml_env.rewards.base import (
    STATUSES,
    CostBudget,
    EvalResult,
    Evaluator,
    make_evaluator,
    register_evaluator,
    registered_evaluators,
)

__all__ = [
    "STATUSES",
    "CostBudget",
    "EvalResult",
    "Evaluator",
    "make_evaluator",
    "register_evaluator",
    "registered_evaluators",
]
