"""The hyper-parameter agent: optimiser and training-recipe settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ma2ml_env.modules.base import AutoMLModule, Decision, register_module
from ma2ml_env.pipeline import Pipeline

__all__ = ["OPTIMIZERS", "SCHEDULES", "HyperParameterModule"]

OPTIMIZERS = ("sgd", "adamw", "rmsprop")
SCHEDULES = ("cosine", "step", "constant")


@register_module
class HyperParameterModule(AutoMLModule):
    """Hyper-parameter agent.

    Decisions: ``optimizer``, ``lr``, ``weight_decay``, ``batch_size``, ``schedule``, ``label_smoothing``,
    ``epochs``. Every argument is the tuple of choices of the decision of that name.
    """

    name = "hpo"

    def __init__(
        self,
        optimizer: tuple[str, ...] = OPTIMIZERS,
        lr: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
        weight_decay: tuple[float, ...] = (0.0, 1e-5, 1e-4, 5e-4, 2e-3),
        batch_size: tuple[int, ...] = (32, 64, 128, 256),
        schedule: tuple[str, ...] = SCHEDULES,
        label_smoothing: tuple[float, ...] = (0.0, 0.1, 0.2),
        epochs: tuple[int, ...] = (1, 2, 4, 8),
    ) -> None:
        bad = [o for o in optimizer if o not in OPTIMIZERS]
        if bad:
            raise ValueError(f"unknown optimizers {bad}; allowed: {list(OPTIMIZERS)}")
        bad = [s for s in schedule if s not in SCHEDULES]
        if bad:
            raise ValueError(f"unknown schedules {bad}; allowed: {list(SCHEDULES)}")
        if any(v <= 0 for v in lr):
            raise ValueError(f"learning rates must be > 0, got {lr}")
        if any(v < 0 for v in weight_decay):
            raise ValueError(f"weight decays must be >= 0, got {weight_decay}")
        if any(int(v) != v or v < 1 for v in (*batch_size, *epochs)):
            raise ValueError(f"batch sizes and epochs must be positive integers, got {batch_size}, {epochs}")
        if any(not 0 <= v < 1 for v in label_smoothing):
            raise ValueError(f"label smoothing must lie in [0, 1), got {label_smoothing}")
        self.decisions = (
            Decision("optimizer", tuple(optimizer), "optimizer (sgd = Nesterov momentum 0.9)"),
            Decision("lr", tuple(lr), "peak learning rate"),
            Decision("weight_decay", tuple(weight_decay), "weight decay"),
            Decision("batch_size", tuple(batch_size), "mini-batch size"),
            Decision("schedule", tuple(schedule), "learning-rate schedule"),
            Decision("label_smoothing", tuple(label_smoothing), "label smoothing of the loss"),
            Decision("epochs", tuple(epochs), "training epochs"),
        )

    def apply(self, choice: Mapping[str, Any], pipeline: Pipeline) -> Pipeline:
        return pipeline.with_train(**{d.name: choice[d.name] for d in self.decisions})
