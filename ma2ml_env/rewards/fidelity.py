"""Fidelity in the evaluator contract: evaluate a child after part of its training, continue it later.

An evaluator that can stop a child early declares its levels with a :class:`Fidelity` (e.g. epochs
``(1, 2, 4, 8, 16)``; the last is the full training) as its ``fidelity`` attribute, and its ``evaluate``
takes two more keyword arrays, one entry per row:

    evaluator.evaluate(actions, seeds, on_result=None, *, levels=None, start=None)

* ``levels``: int64 ``[K]``, the index into ``fidelity.levels`` to evaluate each row at (``None``: the
  last level, the full training);
* ``start``: int64 ``[K]``, the index of the level the same (joint action, seed) already reached in this
  search, ``-1`` for a fresh child (``None``: all fresh). A continued child resumes from there (a training
  backend from its saved state): its ``seconds`` are the cost of going from ``start`` to ``levels`` only,
  and its score is the one it would have reached training straight to ``levels``.

The caller (the search loop, :mod:`agents.schedulers`) knows where every child is, so evaluators need no
memory of their own to price a continuation (a table computes ``time[b] - time[a]``); one that keeps
state (model weights) keys it by joint action and seed and falls back to training from scratch, with the
full cost, when the state is gone. An evaluator without ``fidelity`` (``None``, the default) evaluates at
its one level and is never passed these arguments. :func:`ma2ml_env.check_evaluator` checks the rules
(continuing to ``b`` from ``a`` gives the score of going straight to ``b``, at the cost of the difference).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ma2ml_env.space import SearchSpace

__all__ = ["Fidelity", "epoch_fidelity", "epoch_ladder", "fidelity_of", "fidelity_request", "space_max_epochs"]


@dataclass(frozen=True)
class Fidelity:
    """The levels at which an evaluator can stop a child.

    Attributes:
        levels: the resource at each level, strictly increasing and positive (e.g. epochs); the last one is
            the full training.
        unit: what a level counts (``"epochs"``), shown in reports and the CLI.
    """

    levels: tuple[float, ...]
    unit: str = "epochs"

    def __post_init__(self) -> None:
        try:
            levels = tuple(float(v) for v in self.levels)
        except (TypeError, ValueError):
            raise ValueError(f"Fidelity.levels must be a sequence of numbers, got {self.levels!r}") from None
        if not levels or not all(math.isfinite(v) and v > 0 for v in levels):
            raise ValueError(f"Fidelity.levels must be one or more finite positive numbers, got {list(levels)}")
        if any(b <= a for a, b in itertools.pairwise(levels)):
            raise ValueError(f"Fidelity.levels must be strictly increasing (the last is the full training), "
                             f"got {list(levels)}")
        if not isinstance(self.unit, str) or not self.unit:
            raise ValueError(f"Fidelity.unit must be a non-empty string, got {self.unit!r}")
        object.__setattr__(self, "levels", tuple(int(v) if v == int(v) else v for v in levels))

    @property
    def top(self) -> int:
        """The index of the full training (the last level)."""
        return len(self.levels) - 1

    def index(self, resource: float) -> int:
        """The index of the level whose resource is ``resource`` (``ValueError`` naming the levels if none)."""
        for i, v in enumerate(self.levels):
            if math.isclose(float(resource), v):
                return i
        raise ValueError(f"{resource!r} {self.unit} is not a fidelity level; the levels are {list(self.levels)}")

    def config(self) -> dict[str, Any]:
        return {"levels": list(self.levels), "unit": self.unit}


def fidelity_of(evaluator: Any) -> Fidelity | None:
    """The :class:`Fidelity` an evaluator (or an env, or a backend wrapper around one) declares, else ``None``."""
    base = getattr(evaluator, "unwrapped", evaluator)
    ev = getattr(base, "evaluator", base)
    fid = getattr(ev, "fidelity", None)
    if fid is not None and not isinstance(fid, Fidelity):
        raise TypeError(f"{type(ev).__name__}.fidelity must be a ma2ml_env.Fidelity or None, got {type(fid).__name__}")
    return fid


def fidelity_request(fidelity: Fidelity | None, k: int, levels: Sequence[int] | np.ndarray | None,
                     start: Sequence[int] | np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(levels, start)`` as checked int64 ``[K]`` arrays (defaults: the full training, fresh children), or
    ``ValueError`` saying what is wrong: a level outside ``0..top``, a start that is not below its level, a
    count that is not ``k``, or levels asked of an evaluator without ``fidelity``."""
    top = 0 if fidelity is None else fidelity.top
    asks_levels = levels is not None and np.any(np.asarray(levels) != 0)
    if fidelity is None and (asks_levels or (start is not None and np.any(np.asarray(start) != -1))):
        raise ValueError("this evaluator declares no fidelity levels (its `fidelity` is None): it evaluates "
                         "full trainings only; give it a ma2ml_env.Fidelity to stop children early")
    lv = np.full(k, top, dtype=np.int64) if levels is None else np.asarray(levels)
    st = np.full(k, -1, dtype=np.int64) if start is None else np.asarray(start)
    for name, a in (("levels", lv), ("start", st)):
        if a.shape != (k,) or (a.size and a.dtype.kind not in "iu"):
            raise ValueError(f"{name} must be {k} integer level indices (one per joint action), got "
                             f"{a.dtype} array of shape {a.shape}")
    lv, st = lv.astype(np.int64, copy=False), st.astype(np.int64, copy=False)
    if k and (lv.min() < 0 or lv.max() > top):
        raise ValueError(f"levels must be indices 0..{top} into the fidelity levels, got {sorted(set(lv.tolist()))}")
    if k and (st.min() < -1 or np.any(st >= lv)):
        bad = int(np.flatnonzero((st < -1) | (st >= lv))[0])
        raise ValueError(f"start must be -1 (a fresh child) or a level below the one asked; row {bad} starts at "
                         f"{int(st[bad])} and asks for level {int(lv[bad])}")
    return lv, st


def epoch_ladder(max_epochs: float) -> tuple[float, ...]:
    """``1, 2, 4, ...`` epochs below ``max_epochs``, then ``max_epochs`` itself (the full training).

    >>> epoch_ladder(8), epoch_ladder(12), epoch_ladder(1)
    ((1, 2, 4, 8), (1, 2, 4, 8, 12), (1,))
    """
    if not (isinstance(max_epochs, (int, float)) and math.isfinite(max_epochs) and max_epochs > 0):
        raise ValueError(f"max_epochs must be a finite number > 0, got {max_epochs!r}")
    ladder: list[float] = []
    e = 1
    while e < max_epochs:
        ladder.append(e)
        e *= 2
    return (*ladder, int(max_epochs) if max_epochs == int(max_epochs) else float(max_epochs))


def space_max_epochs(space: SearchSpace) -> float:
    """The longest schedule of a search space: the base pipeline's epochs and every choice of a decision
    named ``epochs`` (the ``hpo`` agent's). A module that sets epochs otherwise needs ``fidelity_epochs``."""
    choices = [c for m in space.modules for d in m.decisions if d.name == "epochs" for c in d.choices]
    return max(float(v) for v in (space.base.train.epochs, *choices))


def epoch_fidelity(fidelity_epochs: Any) -> Fidelity | None:
    """The :class:`Fidelity` of a ``fidelity_epochs`` argument (``None``: decided at ``bind``, from the space),
    or ``ValueError`` saying what is wrong."""
    if fidelity_epochs is None:
        return None
    if isinstance(fidelity_epochs, (str, bytes)) or not hasattr(fidelity_epochs, "__iter__"):
        raise ValueError(f"fidelity_epochs must be increasing epoch counts like (1, 2, 4, 8) (the last is the "
                         f"full training), or None for a ladder up to the space's longest schedule; got "
                         f"{fidelity_epochs!r}")
    try:
        return Fidelity(tuple(fidelity_epochs), "epochs")
    except ValueError as exc:
        raise ValueError(f"fidelity_epochs: {exc}") from None
