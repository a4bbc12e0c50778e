"""Recorded learning curves as multi-agent, multi-fidelity AutoML environments (LCBench).

Each task is a table of learning curves: for every configuration of a 7-dimensional MLP grid, the
validation accuracy and the cumulative training time after 1, 2, 3, 4, 6, 8, 12, 17, 24, 35 and 52 epochs
(the LCBench tables, predictions of YAHPO Gym's ``lcbench`` surrogate of 2,000 real trainings per task).
A child can be stopped after any of these epochs and continued later, at the cost of the difference of the
recorded times: the multi-fidelity benchmark of :mod:`ma2ml_env.rewards.fidelity`.

    env = ma2ml_env.learning_curve_env("7593", folder="data/lcbench-mf")   # the folder holding the .npz files
    env.unwrapped.evaluator.fidelity          # Fidelity(levels=(1, 2, 3, 4, 6, 8, 12, 17, 24, 35, 52))
    ma2ml_env.learning_curve_tasks("data/lcbench-mf")                       # the tasks in a folder

Agents: ``net`` (num_layers, max_units), ``reg`` (max_dropout, weight_decay), ``opt`` (batch_size,
learning_rate, momentum). Score: validation accuracy / 100 at the level asked (the last level without one).
The tables are noise-free: the evaluation seed changes nothing. ``seconds`` is the recorded training time
from the level the child had reached to the one asked. The files are read from the folder the user gives
(``lcbench_<task>.npz``; the format is in that folder's README); nothing is downloaded.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ma2ml_env.modules.base import Decision
from ma2ml_env.rewards.base import STATUS_CODES, BatchResult, EvalResult, Evaluator
from ma2ml_env.rewards.fidelity import Fidelity, fidelity_request
from ma2ml_env.rewards.tabular import TabularModule, table_columns
from ma2ml_env.space import SearchSpace

__all__ = ["AGENTS", "LearningCurveEvaluator", "learning_curve_env", "learning_curve_tasks"]

#: The agents of a learning-curve task and the table parameters each decides.
AGENTS = (("net", ("num_layers", "max_units")), ("reg", ("max_dropout", "weight_decay")),
          ("opt", ("batch_size", "learning_rate", "momentum")))
_INTS = ("num_layers", "max_units", "batch_size")


def learning_curve_tasks(folder: str | Path) -> tuple[str, ...]:
    """The task ids of the ``lcbench_<task>.npz`` files in ``folder``."""
    return tuple(sorted(p.stem.split("_", 1)[1] for p in Path(folder).glob("lcbench_*.npz")))


@functools.lru_cache(maxsize=16)
def _load(path: str) -> dict[str, Any]:
    """The arrays of one task file, checked, and the sha256 of the file (once per process)."""
    raw = Path(path).read_bytes()
    with np.load(path) as z:
        names = [str(n) for n in z["names"]]
        expected = [p for _, ps in AGENTS for p in ps]
        if sorted(names) != sorted(expected):
            raise ValueError(f"{path} has parameters {names}; a learning-curve task needs {expected}")
        params = [(n, tuple(int(v) if n in _INTS else float(v) for v in z[f"levels_{n}"])) for n in names]
        acc = np.asarray(z["val_accuracy"], dtype=np.float64) / 100.0
        cum = np.asarray(z["time"], dtype=np.float64)
        epochs = tuple(int(e) for e in z["epochs"])
    sizes = [len(c) for _, c in params]
    if acc.shape != (int(np.prod(sizes)), len(epochs)) or cum.shape != acc.shape:
        raise ValueError(f"{path}: val_accuracy {acc.shape} and time {cum.shape} must both be "
                         f"[{int(np.prod(sizes))}, {len(epochs)}] (configurations x epochs)")
    cum = np.maximum.accumulate(cum, axis=1)  # cumulative by definition; float16 rounding kept monotone
    radix = np.cumprod([1, *sizes[::-1]])[:-1][::-1].astype(np.int64)
    return {"params": params, "acc": acc, "cum": cum, "epochs": epochs, "radix": radix,
            "sha256": hashlib.sha256(raw).hexdigest()}


class LearningCurveEvaluator(Evaluator):
    """Reward backend of a learning-curve task (see the module docstring); registered as
    ``reward="learning-curves"`` with ``reward_kwargs={"task": ..., "folder": ...}``.

    Args:
        task: the task id (``"7593"``), the ``<task>`` of ``lcbench_<task>.npz``.
        folder: the folder that holds the task files.
    """

    name = "learning-curves"

    def __init__(self, task: str, folder: str | Path) -> None:
        if not isinstance(task, str) or not task:
            raise ValueError(f"task must be a task id string like '7593', got {task!r}")
        path = Path(folder) / f"lcbench_{task}.npz"
        if not path.is_file():
            have = learning_curve_tasks(folder) if Path(folder).is_dir() else ()
            raise ValueError(f"no learning-curve table {path}: " + (
                f"the tasks in {folder} are {list(have)}" if have else
                f"{folder} holds no lcbench_<task>.npz file; pass the folder that holds them"))
        self.task, self.folder = task, str(folder)
        t = _load(str(path.resolve()))
        self._params, self._acc, self._cum, self._radix = t["params"], t["acc"], t["cum"], t["radix"]
        self._sha256 = t["sha256"]
        self.fidelity = Fidelity(t["epochs"], "epochs")
        choices = dict(self._params)
        #: the task's agents: the env's default ``modules``
        self.modules = tuple(TabularModule(agent, [Decision(p, choices[p]) for p in ps], f"lcbench/{task}")
                             for agent, ps in AGENTS)
        self.space: SearchSpace | None = None

    def bind(self, space: SearchSpace) -> None:
        self._cols = table_columns(space, self._params, f"lcbench/{self.task}",
                                   f"ma2ml_env.learning_curve_env({self.task!r}, folder)")
        self.space = space

    def _rows(self, actions: np.ndarray) -> np.ndarray:
        if self.space is None:
            raise RuntimeError("the evaluator is not bound to a search space; build it through learning_curve_env()")
        a = np.asarray(actions, dtype=np.int64)
        return (a[None] if a.ndim == 1 else a)[:, self._cols] @ self._radix

    def evaluate(self, actions: np.ndarray, seeds: np.ndarray,
                 on_result: Callable[[int, EvalResult], None] | None = None, *,
                 levels: np.ndarray | None = None, start: np.ndarray | None = None) -> BatchResult:
        """One lookup for the batch: the accuracy at each row's level, the recorded time from its start."""
        rows = self._rows(actions)
        lv, st = fidelity_request(self.fidelity, len(rows), levels, start)
        score = self._acc[rows, lv]
        cum = self._cum[rows]
        k = np.arange(len(rows))
        seconds = cum[k, lv] - np.where(st >= 0, cum[k, np.maximum(st, 0)], 0.0)
        epochs = self.fidelity.levels
        info = tuple({"epochs": epochs[i]} for i in lv.tolist())
        nan = np.full(len(rows), np.nan)
        out = BatchResult(score, np.full(len(rows), STATUS_CODES["ok"]), score.copy(), nan, nan, seconds, info)
        if on_result is not None:
            for i, r in enumerate(out):
                on_result(i, r)
        return out

    def config(self) -> dict[str, Any]:
        """The task and the sha256 of its file (the folder is where it lies, not what it is)."""
        return {**super().config(), "task": self.task, "sha256": self._sha256}

    def optimum(self) -> tuple[float, dict[str, np.ndarray]]:
        """``(best final accuracy, its joint action)`` of the table."""
        if self.space is None:
            raise RuntimeError("the evaluator is not bound to a search space; build it through learning_curve_env()")
        row = int(np.argmax(self._acc[:, -1]))
        idx = (row // self._radix) % np.array([len(c) for _, c in self._params])
        flat = np.zeros(self.space.joint_nvec.size, dtype=np.int64)
        flat[self._cols] = idx
        return float(self._acc[row, -1]), self.space.codec.decode(flat)

    @property
    def final_accuracies(self) -> np.ndarray:
        """The final (full-training) accuracy of every configuration of the table (read-only), e.g. for a
        regret normalisation: ``max()`` is the optimum, ``np.median()`` the median configuration."""
        return _read_only(self._acc[:, -1])

    @property
    def full_costs(self) -> np.ndarray:
        """The recorded time of a full training of every configuration of the table (read-only)."""
        return _read_only(self._cum[:, -1])

    def true_score_of(self, flat_actions: np.ndarray) -> np.ndarray:
        """The final (full-training) accuracy of flat joint actions."""
        return self._acc[self._rows(flat_actions), -1]

    def full_cost_of(self, flat_actions: np.ndarray) -> np.ndarray:
        """The recorded time of a full training of flat joint actions."""
        return self._cum[self._rows(flat_actions), -1]


def _read_only(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


def learning_curve_env(task: str, folder: str | Path, **env_kwargs: Any):
    """A learning-curve task as our PettingZoo ParallelEnv (agents ``net``, ``reg``, ``opt``); ``env_kwargs``
    are the other :class:`~ma2ml_env.AutoMLPipelineEnv` arguments."""
    from ma2ml_env.env import AutoMLPipelineEnv

    for key in ("modules", "reward", "reward_kwargs"):
        if key in env_kwargs:
            raise ValueError(f"learning_curve_env sets {key!r} itself (the task's agents and table); "
                             "use ma2ml_env.parallel_env for custom modules or rewards")
    ev = LearningCurveEvaluator(task, folder)
    return AutoMLPipelineEnv(modules=ev.modules, reward=ev, **env_kwargs)
