"""Gaussian-process Bayesian optimisation: Optuna's ``GPSampler`` behind the
:class:`~agents.base.SearchAlgorithm` interface.

    algo = GPBO()                                          # or make_algorithm("gp")
    run(algo, ma2ml_env.benchmark_env("nb201/cifar10"), budget=200, seed=0, batch_size=8)

The joint space is asked and told through Optuna exactly as for ``tpe`` (one categorical parameter per
decision of every agent; the shared part is :class:`agents.optuna_ask_tell.OptunaAskTell`). ``GPSampler``
fits a GP (Matern-5/2 kernel with ARD, categorical parameters by Hamming distance) to the finished trials
and maximises log expected improvement; the proposed-but-unobserved trials of a batch are handled by its
q-batch log EI (sequential greedy selection), so a batch is spread out. Each proposal after the startup
trials refits the GP, so a proposal costs far more than with TPE (tens to hundreds of milliseconds on
CPU, growing with the trials; ``torch_threads`` keeps torch to one thread while it runs).
It needs ``optuna`` (``pip install "ma2ml[optuna]"``); its ``torch`` and ``scipy`` come with ma2ml itself
(``scipy`` through scikit-learn).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.common import AlgorithmConfig, positive_int
from agents.optuna_ask_tell import OptunaAskTell
from agents.threads import torch_threads

__all__ = ["GPBO", "GPConfig"]


@dataclass(frozen=True)
class GPConfig(AlgorithmConfig):
    """Hyper-parameters of :class:`GPBO` (passed to ``optuna.samplers.GPSampler``)."""

    n_startup_trials: int = 10
    """Random trials before the GP starts modelling."""

    deterministic_objective: bool = False
    """Fix the GP's noise variance to (nearly) zero: for noise-free rewards (e.g. a tabular task with
    ``seed_mean=True``). Optuna marks the option experimental and warns when it is set."""

    torch_threads: int | None = 1
    """torch threads while Optuna fits the GP and searches the acquisition function (``propose``); the
    process-wide setting is restored afterwards. ``GPSampler`` itself limits torch to one thread only in
    the fit and the gradient steps, not in the exhaustive search over categorical values, where thread
    contention dominates: a 16-evaluation run on a 2-core machine took 8 s CPU with torch's default two
    threads and 0.43 s with one. ``None``: leave torch's setting."""

    def check(self) -> None:
        positive_int("GPConfig", "n_startup_trials", self.n_startup_trials)
        if self.torch_threads is not None:
            positive_int("GPConfig", "torch_threads", self.torch_threads)


class GPBO(OptunaAskTell):
    """Optuna's Gaussian-process sampler (``GPSampler``) over the joint space, by ask and tell.

    The first ``n_startup_trials`` trials are Optuna's seeded random sampler; after them every trial fits
    the GP to the finished trials and proposes the maximiser of log EI (q-batch log EI given the
    pending trials of the batch). A joint action that was not proposed (e.g. a warm start) is added as a
    finished trial. ``state_dict()`` pickles the whole study (trials, sampler RNG, the cached kernel
    parameters), so a resumed search proposes exactly what the original would have.

    Args:
        config: a :class:`GPConfig`; or its fields as keyword arguments.
    """

    name = "gp"
    config_class = GPConfig

    def propose(self, n: int) -> np.ndarray:
        with torch_threads(self.config.torch_threads):
            return super().propose(n)

    def _sampler(self, optuna: Any, seed: int) -> Any:
        cfg = self.config
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=cfg.n_startup_trials,
                                         deterministic_objective=cfg.deterministic_objective)
