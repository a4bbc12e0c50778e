"""Optuna's Tree-structured Parzen Estimator over the joint space (one categorical parameter per decision
of every agent), by ask and tell (:class:`agents.optuna_ask_tell.OptunaAskTell`). Needs ``optuna``
(``pip install "ma2ml[optuna]"``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents.common import AlgorithmConfig, positive_int
from agents.optuna_ask_tell import OptunaAskTell

__all__ = ["OptunaTPE", "TPEConfig"]


@dataclass(frozen=True)
class TPEConfig(AlgorithmConfig):
    """Hyper-parameters of :class:`OptunaTPE` (passed to ``optuna.samplers.TPESampler``)."""

    n_startup_trials: int = 10
    """Random trials before TPE starts modelling."""

    multivariate: bool = True
    """Model the joint density of all decisions (Optuna's multivariate TPE) rather than one per decision."""

    constant_liar: bool = True
    """Treat proposed-but-unobserved trials of the same batch as bad, so a batch is diverse."""

    n_ei_candidates: int = 24
    """Candidates drawn from the "good" density; the one with the best expected improvement is proposed."""

    def check(self) -> None:
        positive_int("TPEConfig", "n_startup_trials", self.n_startup_trials)
        positive_int("TPEConfig", "n_ei_candidates", self.n_ei_candidates)


class OptunaTPE(OptunaAskTell):
    """Optuna's TPE sampler over the joint space, through Optuna's ask-and-tell interface.

    One categorical parameter per decision of every agent (see :class:`OptunaAskTell`); with
    ``constant_liar`` the pending trials of a batch repel each other. A joint action that was not
    proposed (e.g. a warm start) is added as a finished trial.

    Args:
        config: a :class:`TPEConfig`; or its fields as keyword arguments.
    """

    name = "tpe"
    config_class = TPEConfig

    def _sampler(self, optuna: Any, seed: int) -> Any:
        cfg = self.config
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=cfg.n_startup_trials, multivariate=cfg.multivariate,
            constant_liar=cfg.constant_liar, n_ei_candidates=cfg.n_ei_candidates,
        )
