"""An Optuna sampler over the joint space through Optuna's ask-and-tell interface: the part the ``tpe``
(:mod:`agents.tpe`) and ``gp`` (:mod:`agents.gp`) algorithms share. Needs ``optuna``
(``pip install "ma2ml[optuna]"``), imported at set-up."""

from __future__ import annotations

import math
import pickle
from collections import deque
from collections.abc import Mapping
from typing import Any

import gymnasium
import numpy as np

from agents.common import ConfiguredSearch, require

__all__ = ["OptunaAskTell"]


class OptunaAskTell(ConfiguredSearch):
    """An Optuna sampler over the joint space, through Optuna's ask-and-tell interface (a subclass builds
    the sampler in :meth:`_sampler`).

    Every decision ``j`` of agent ``i`` is one categorical parameter named ``"{agent}.{j}"`` (choices
    ``0..n_ij-1``: choice tables are not all ordered, so categorical is the safe reading): a flat row is
    Optuna's params in that order, converted here, at Optuna's boundary, and nowhere else. ``propose(n)``
    asks ``n`` trials (they stay RUNNING, so a sampler that looks at running trials spreads the batch);
    ``observe`` tells them in the same order. A joint action that was not proposed (e.g. a warm start) is
    added as a finished trial instead.
    """

    def _sampler(self, optuna: Any, seed: int) -> Any:
        """The ``optuna.samplers`` sampler, seeded with ``seed``."""
        raise NotImplementedError

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        super().setup(action_spaces, seed)
        optuna = require("optuna", "optuna")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.param_names = [f"{a}.{j}" for a, size in zip(self.codec.agents, self.codec.sizes)
                            for j in range(size)]
        self.study = optuna.create_study(direction="maximize", sampler=self._sampler(optuna, int(seed)))
        self._distributions = {
            name: optuna.distributions.CategoricalDistribution(list(range(int(n))))
            for name, n in zip(self.param_names, self.codec.nvec)
        }
        self._pending: deque[tuple[int, tuple[int, ...]]] = deque()  # (trial number, decision indices)

    def propose(self, n: int) -> np.ndarray:
        out = np.empty((n, self.codec.size), dtype=np.int64)
        for i in range(n):
            trial = self.study.ask(self._distributions)
            idx = tuple(int(trial.params[p]) for p in self.param_names)
            self._pending.append((trial.number, idx))
            out[i] = idx
        return out

    def observe(self, actions: np.ndarray, scores: np.ndarray) -> None:
        import optuna

        actions, scores = self.observed_batch(actions, scores)
        for idx, score in zip(map(tuple, actions.tolist()), scores.tolist()):
            match = next((k for k, (_, key) in enumerate(self._pending) if key == idx), None)
            value = float(score) if math.isfinite(score) else None
            if match is not None:
                number, _ = self._pending[match]
                del self._pending[match]
                if value is None:
                    self.study.tell(number, state=optuna.trial.TrialState.FAIL)
                else:
                    self.study.tell(number, value)
            elif value is not None:
                self.study.add_trial(optuna.trial.create_trial(
                    params=dict(zip(self.param_names, idx)), distributions=self._distributions, value=value,
                ))

    def state_dict(self) -> dict[str, Any]:
        # The in-memory study (finished and still-running trials, the sampler's RNG) pickles whole; proposed
        # trials not yet observed stay RUNNING in it and are told by number after loading.
        return {"study": pickle.dumps(self.study), "pending": list(self._pending)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.study = pickle.loads(state["study"])
        self._pending = deque((int(n), tuple(k)) for n, k in state.get("pending", ()))
