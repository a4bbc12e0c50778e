"""Reward backends behind one evaluator interface (:mod:`ma2ml_env.rewards.base`)."""

from ma2ml_env.rewards.base import (
    STATUSES,
    SUCCESS_STATUSES,
    BatchResult,
    CostBudget,
    EvalResult,
    Evaluator,
    PipelineEvaluator,
    make_evaluator,
    register_evaluator,
    registered_evaluators,
)

__all__ = [
    "STATUSES",
    "SUCCESS_STATUSES",
    "BatchResult",
    "CostBudget",
    "EvalResult",
    "Evaluator",
    "PipelineEvaluator",
    "make_evaluator",
    "register_evaluator",
    "registered_evaluators",
]
