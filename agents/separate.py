"""The paper's "separate" ablation, module by module: one module (agent) at a time with the others fixed
to the best pipeline so far, cycling through the modules."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium
import numpy as np

from agents.common import (
    AlgorithmConfig,
    ConfiguredSearch,
    choice,
    in_range,
    load_rng,
    positive_int,
    rng_state,
)

__all__ = ["ModuleByModule", "ModuleByModuleConfig"]


@dataclass(frozen=True)
class ModuleByModuleConfig(AlgorithmConfig):
    """Hyper-parameters of :class:`ModuleByModule`."""

    evals_per_stage: int = 20
    """Evaluations spent on one module before moving to the next."""

    inner: Literal["mutation", "random"] = "mutation"
    """How the current module's action is searched: ``"mutation"``: the incumbent's action with
    ``mutation_rate`` of its decisions (at least one) redrawn uniformly (local search, the stronger
    baseline); ``"random"``: uniform over the module's whole space (random search, module by module)."""

    mutation_rate: float = 0.2
    """Fraction of the module's decisions redrawn per proposal (``inner="mutation"``)."""

    order: tuple[str, ...] | None = None
    """Order in which modules are optimised (agent names; default: the env's agent order)."""

    def check(self) -> None:
        positive_int("ModuleByModuleConfig", "evals_per_stage", self.evals_per_stage)
        choice("ModuleByModuleConfig", "inner", self.inner, ("mutation", "random"))
        in_range("ModuleByModuleConfig", "mutation_rate", self.mutation_rate, 0.0, 1.0, lo_open=True)
        if self.order is not None:
            object.__setattr__(self, "order", tuple(self.order))
            if not self.order or len(set(self.order)) != len(self.order):
                raise ValueError(f"ModuleByModuleConfig.order must list distinct agent names, got "
                                 f"{self.order!r}")


class ModuleByModule(ConfiguredSearch):
    """The paper's "separate" baseline: optimise one module (agent) at a time, the others fixed.

    The first proposal is a uniform random joint action; it becomes the incumbent. Then stage ``k``
    searches agent ``order[k mod n]``'s action with every other agent's action fixed to the incumbent
    (the best joint action observed so far), for ``evals_per_stage`` evaluations, then moves to the next
    module, cycling. The inner optimiser is mutation of the incumbent's action (default: local search
    over the module) or random search over the module's whole space (``inner="random"``). This is
    coordinate ascent over modules: it cannot make a joint move that only pays off when two modules
    change together, which is what the paper's ablation shows (and the surrogate reward is built to
    expose). The first batch is uniform random (there is no incumbent before anything is observed).

    Args:
        config: a :class:`ModuleByModuleConfig`; or its fields as keyword arguments.
    """

    name = "separate"

    config_class = ModuleByModuleConfig

    def setup(self, action_spaces: Mapping[str, gymnasium.Space], seed: int) -> None:
        super().setup(action_spaces, seed)
        lay = self.codec
        order = self.config.order if self.config.order is not None else lay.agents
        bad = sorted(set(order) - set(lay.agents))
        if bad:
            raise ValueError(f"ModuleByModuleConfig.order names unknown agents {bad}; agents are "
                             f"{list(lay.agents)}")
        self.order = tuple(order)
        self.incumbent: np.ndarray | None = None
        self.best_score = -math.inf
        self.proposed = 0  # proposals made after the first (stage counter)

    @property
    def stage_agent(self) -> str:
        """The agent optimised by the next proposal."""
        return self.order[(self.proposed // self.config.evals_per_stage) % len(self.order)]

    def propose(self, n: int) -> np.ndarray:
        lay, cfg = self.codec, self.config
        out = np.empty((n, lay.size), dtype=np.int64)
        for i in range(n):
            if self.incumbent is None:  # nothing observed yet: a random joint action seeds the incumbent
                out[i] = lay.sample(self.rng, 1)[0]
                continue
            x = self.incumbent.copy()
            s = lay.slice_of[self.stage_agent]
            nv = lay.nvec[s]
            if cfg.inner == "random":
                x[s] = (self.rng.random(nv.size) * nv).astype(np.int64)
            else:
                k = max(1, round(cfg.mutation_rate * nv.size))
                pos = self.rng.choice(nv.size, size=k, replace=False)
                x[s.start + pos] = (self.rng.random(k) * nv[pos]).astype(np.int64)
            self.proposed += 1
            out[i] = x
        return out

    def observe(self, actions: np.ndarray, scores: np.ndarray) -> None:
        actions, scores = self.observed_batch(actions, scores)
        for a, sc in zip(actions, scores.tolist()):
            if math.isfinite(sc) and sc > self.best_score:
                self.best_score = sc
                self.incumbent = a.copy()

    def state_dict(self) -> dict[str, Any]:
        return {"incumbent": None if self.incumbent is None else self.incumbent.copy(),
                "best_score": self.best_score, "proposed": self.proposed, "rng": rng_state(self.rng)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        inc = state["incumbent"]
        self.incumbent = None if inc is None else np.array(inc, dtype=np.int64)
        self.best_score = float(state["best_score"])
        self.proposed = int(state["proposed"])
        self.rng = load_rng(state["rng"])
