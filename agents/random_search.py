"""Random search: uniform joint actions, the reference every learned searcher must beat at equal
evaluations (DESIGN.md section 6)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from agents.common import ConfiguredSearch, load_rng, rng_state

__all__ = ["RandomSearch"]


class RandomSearch(ConfiguredSearch):
    """Uniform random joint actions: every decision of every agent drawn independently and uniformly."""

    name = "random"

    def propose(self, n: int) -> np.ndarray:
        return self.codec.sample(self.rng, n)

    def observe(self, actions: np.ndarray, scores: np.ndarray) -> None:
        self.observed_batch(actions, scores)  # nothing to learn; a malformed call is still refused

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state(self.rng)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng = load_rng(state["rng"])
