"""Multi-fidelity real training: the epoch levels of :class:`~ma2ml_env.rewards.train.TrainEvaluator` and the
saved trainings of the children it stopped early.

Levels are epochs of the child's own schedule (:class:`~ma2ml_env.Fidelity` with ``unit="epochs"``; the
epochs of ``TrainConfig.epochs``, before ``epoch_scale``). A child evaluated at level ``i`` below the top is
stopped after ``min(levels[i], its epochs)`` epochs of its full schedule (same learning rate at every step
as the full training); the top level is always its full training. The default ladder
(:func:`~ma2ml_env.rewards.fidelity.epoch_ladder`) doubles from 1 epoch up to the longest schedule of the
search space (:func:`~ma2ml_env.rewards.fidelity.space_max_epochs`).

A stopped child's training state (:meth:`ma2ml_env.training.Trainer.state_dict`) is kept in a
:class:`TrainStates`, keyed by the evaluator's settings, the joint action (its pipeline), the seed and the
level: in this
process's memory (the default; a worker process of a parallel backend has its own), or as files in a folder
(``state_dir``) that every worker and a resumed search share. A continuation whose state is missing trains
from scratch and reports the full cost.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ma2ml_env.rewards.fidelity import Fidelity

if TYPE_CHECKING:  # pragma: no cover
    from ma2ml_env.training import Trainer

__all__ = ["TrainStates", "level_plan"]


def level_plan(trainer: Trainer, fidelity: Fidelity, level: int, first: int) -> list[tuple[float, int]]:
    """``(epochs, step)`` of each level from ``first`` to ``level``: where a training stops to validate. A
    level below the top stops after ``min(levels[i], the child's epochs)`` epochs; the top is the full
    schedule."""
    epochs = trainer.pipeline.train.epochs
    return [(fidelity.levels[i], trainer.total if i == fidelity.top else
             trainer.steps_at(min(fidelity.levels[i], epochs))) for i in range(first, level + 1)]


def _tensors(v: Any) -> list[torch.Tensor]:
    if isinstance(v, torch.Tensor):
        return [v]
    if isinstance(v, dict):
        v = list(v.values())
    return [t for x in v for t in _tensors(x)] if isinstance(v, (list, tuple)) else []


class TrainStates:
    """The saved trainings of stopped children: in memory (``folder=None``) or as files in ``folder``.

    Keys come from :meth:`key`. In memory, at most ``max_memory`` bytes of states are kept, the oldest
    dropped first (most children stopped early are never promoted; a dropped one trains from scratch if it
    is), and states are dropped when the evaluator is pickled (each worker process starts empty). In a
    folder, each state is one ``<key>.pt`` file written atomically, so parallel
    workers and a resumed search can continue each other's children; a file that cannot be read counts as
    missing.
    """

    def __init__(self, folder: str | os.PathLike | None = None, max_memory: int = 2 << 30) -> None:
        if folder is not None:
            path = Path(folder).expanduser()
            if path.exists() and not path.is_dir():
                raise ValueError(f"state_dir {str(path)!r} is a file; give a folder for the saved trainings")
            folder = str(path)
        self.folder, self.max_memory = folder, int(max_memory)
        self._memory: dict[str, tuple[dict[str, Any], int]] = {}  # in insertion order: oldest first
        self._bytes = 0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_memory": {}, "_bytes": 0}

    @staticmethod
    def key(settings: str, pipeline: str, seed: int, epochs: float) -> str:
        """The key of a training: a digest of the evaluator's ``settings``, the ``pipeline`` (its
        :meth:`~ma2ml_env.Pipeline.key`: what the joint action means), the seed and the level's epochs."""
        return hashlib.sha256(f"{settings}|{pipeline}|{int(seed)}|{float(epochs)!r}".encode()).hexdigest()[:40]

    def _path(self, key: str) -> Path:
        return Path(self.folder) / f"{key}.pt"  # type: ignore[arg-type]

    def get(self, key: str) -> dict[str, Any] | None:
        if self.folder is None:
            return self._memory.get(key, (None, 0))[0]
        try:
            return torch.load(self._path(key), map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - missing or unreadable: the child trains from scratch
            return None

    def put(self, key: str, state: dict[str, Any]) -> None:
        if self.folder is None:
            self.discard(key)
            size = sum(t.nbytes for t in _tensors(state))
            self._memory[key] = (state, size)
            self._bytes += size
            while self._bytes > self.max_memory and len(self._memory) > 1:
                self.discard(next(iter(self._memory)))
            return
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        tmp = self._path(key).with_suffix(f".{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self._path(key))

    def discard(self, key: str) -> None:
        if self.folder is None:
            self._bytes -= self._memory.pop(key, (None, 0))[1]
            return
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def __len__(self) -> int:
        return len(self._memory) if self.folder is None else len(list(Path(self.folder).glob("*.pt")))
