"""Independent learners: one learner per agent on the shared reward, no critic, no credit assignment
(Claus & Boutilier 1998's independent learners; REINFORCE or Boltzmann Q per agent)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium
import numpy as np

from agents.common import AlgorithmConfig, ConfiguredSearch, choice, in_range, load_rng, rng_state, softmax

__all__ = ["IndependentConfig", "IndependentLearners"]


@dataclass(frozen=True)
class IndependentConfig(AlgorithmConfig):
    """Hyper-parameters of :class:`IndependentLearners`."""

    learner: Literal["reinforce", "q"] = "reinforce"
    """``"reinforce"``: each agent runs REINFORCE with its own moving-average baseline; ``"q"``: each agent
    keeps action-value estimates of its own choices (per decision) and explores by Boltzmann sampling
    (Claus & Boutilier's independent learners)."""

    lr: float = 1.0
    """REINFORCE step size on the logits (of the standardised advantage)."""

    baseline_decay: float = 0.9
    """REINFORCE: each agent's baseline ``b <- decay * b + (1 - decay) * mean reward of the round``."""

    temperature: float = 0.05
    """Q learner: initial Boltzmann temperature (in reward units)."""

    temperature_decay: float = 0.99
    """Q learner: the temperature is multiplied by this after every round."""

    min_temperature: float = 0.002
    """Q learner: the temperature's floor."""

    q_step: float = 0.0
    """Q learner: step size of the value update; 0 = sample averages (``1 / count``)."""

    exploration: float = 0.02
    """Probability, per decision, of a uniform choice instead of the learner's own."""

    def check(self) -> None:
        choice("IndependentConfig", "learner", self.learner, ("reinforce", "q"))
        in_range("IndependentConfig", "lr", self.lr, 0.0, math.inf, lo_open=True, hi_open=True)
        in_range("IndependentConfig", "baseline_decay", self.baseline_decay, 0.0, 1.0, hi_open=True)
        in_range("IndependentConfig", "temperature", self.temperature, 0.0, math.inf, lo_open=True,
                 hi_open=True)
        in_range("IndependentConfig", "temperature_decay", self.temperature_decay, 0.0, 1.0, lo_open=True)
        in_range("IndependentConfig", "min_temperature", self.min_temperature, 0.0, math.inf, lo_open=True,
                  hi_open=True)
        in_range("IndependentConfig", "q_step", self.q_step, 0.0, 1.0)
        in_range("IndependentConfig", "exploration", self.exploration, 0.0, 1.0)


class IndependentLearners(ConfiguredSearch):
    """One learner per agent on the shared reward: no critic, no credit assignment, no communication.

    Each agent ``i`` sees only its own actions and the shared reward ``r``, and treats the other agents
    as part of the environment. Its policy factorises over its decisions ``j``:
    ``pi_i(a_i) = prod_j pi_ij(a_ij)``.

    * ``learner="reinforce"`` (default):
      ``theta_ij += lr * mean_b[(r - b_i) / sigma_i * (onehot(a_ij) - pi_ij)]``
      with ``b_i`` agent ``i``'s own moving-average baseline and ``sigma_i`` the round's reward spread
      (REINFORCE, Williams 1992, per agent).
    * ``learner="q"``: ``Q_ij(k) <- Q_ij(k) + alpha (r - Q_ij(k))`` for the chosen ``k`` (sample
      averages by default), ``pi_ij = softmax(Q_ij / T)`` with the temperature ``T`` annealed
      (independent learners, Claus & Boutilier 1998).

    Both mix ``exploration`` uniform probability into every decision.

    Args:
        config: an :class:`IndependentConfig`; or its fields as keyword arguments.
    """

    name = "independent"

    config_class = IndependentConfig

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        super().setup(action_spaces, seed)
        lay = self.codec
        self.params = [np.zeros(int(n)) for n in lay.nvec]  # logits (reinforce) or values (q), per decision
        self.counts = [np.zeros(int(n)) for n in lay.nvec]
        self.baselines = np.full(len(lay.agents), np.nan)
        self.temperature = self.config.temperature

    def _probs(self, d: int) -> np.ndarray:
        cfg = self.config
        x = self.params[d]
        if cfg.learner == "q":
            x = np.where(self.counts[d] > 0, x, x.max() if self.counts[d].any() else 0.0) / self.temperature
        p = softmax(x)
        return (1 - cfg.exploration) * p + cfg.exploration / x.size

    def propose(self, n: int) -> np.ndarray:
        lay = self.codec
        idx = np.empty((n, lay.size), dtype=np.int64)
        for d in range(lay.size):
            idx[:, d] = self.rng.choice(int(lay.nvec[d]), size=n, p=self._probs(d))
        return idx

    def observe(self, actions: np.ndarray, scores: np.ndarray) -> None:
        idx, r = self.observed_batch(actions, scores)
        if not len(idx):
            return
        cfg, lay = self.config, self.codec
        if cfg.learner == "q":
            for d in range(lay.size):
                for k, ri in zip(idx[:, d], r):
                    self.counts[d][k] += 1
                    step = cfg.q_step or 1.0 / self.counts[d][k]
                    self.params[d][k] += step * (ri - self.params[d][k])
            self.temperature = max(cfg.min_temperature, self.temperature * cfg.temperature_decay)
            return
        sigma = max(float(r.std()), 1e-3) if r.size > 1 else 1.0
        for i in range(len(lay.agents)):
            # each agent's own baseline; first round: the round's mean
            b = self.baselines[i] if np.isfinite(self.baselines[i]) else float(r.mean())
            adv = (r - b) / sigma
            for d in np.flatnonzero(lay.agent_of == i):
                p = softmax(self.params[d])
                grad = -np.outer(adv, p).sum(axis=0)
                np.add.at(grad, idx[:, d], adv)
                self.params[d] += cfg.lr * grad / r.size
            self.baselines[i] = cfg.baseline_decay * b + (1 - cfg.baseline_decay) * float(r.mean())

    def state_dict(self) -> dict[str, Any]:
        return {"params": [p.copy() for p in self.params], "counts": [c.copy() for c in self.counts],
                "baselines": self.baselines.copy(), "temperature": self.temperature,
                "rng": rng_state(self.rng)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.params = [np.array(p, dtype=float) for p in state["params"]]
        self.counts = [np.array(c, dtype=float) for c in state["counts"]]
        self.baselines = np.array(state["baselines"], dtype=float)
        self.temperature = float(state["temperature"])
        self.rng = load_rng(state["rng"])
