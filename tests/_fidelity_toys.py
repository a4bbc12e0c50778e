"""A tiny evaluator with fidelity levels for the multi-fidelity tests: a learning curve per joint action,
``acc(row, epochs) = q(row) * (1 - exp(-epochs / tau(row)))``, and a cost proportional to the epochs."""

from __future__ import annotations

import time

import numpy as np

from ma2ml_env import BatchResult, Decision, EvalResult, Evaluator, Fidelity, PipelineEvaluator
from ma2ml_env.rewards.fidelity import fidelity_request
from ma2ml_env.rewards.tabular import TabularModule

#: 3 agents x 2 decisions x 4 choices: 4,096 pipelines
MODULES = tuple(TabularModule(a, [Decision(f"{a}_{j}", (0, 1, 2, 3)) for j in range(2)]) for a in ("x", "y", "z"))


class CurveEvaluator(Evaluator):
    name = "curves"

    def __init__(self, levels=(1, 3, 9, 27), seconds_per_epoch=1.0, delay=0.0):
        self.fidelity = Fidelity(levels)
        self.delay = delay  # wall seconds per row (tests that kill a running search)
        self.seconds_per_epoch = seconds_per_epoch
        self.modules = MODULES

    def curve(self, actions):
        a = np.asarray(actions, dtype=np.float64)
        q = 0.5 + 0.5 * np.cos(a @ np.linspace(0.3, 1.1, a.shape[1])) ** 2   # final accuracy in [0.5, 1]
        tau = 1.0 + 6.0 * (a[:, 0] / 3.0)                                      # slow learners: late bloomers
        return q, tau

    def evaluate(self, actions, seeds, on_result=None, *, levels=None, start=None):
        lv, st = fidelity_request(self.fidelity, len(actions), levels, start)
        time.sleep(self.delay * len(actions))
        ep = np.asarray(self.fidelity.levels, dtype=np.float64)
        q, tau = self.curve(actions)
        score = q * (1 - np.exp(-ep[lv] / tau))
        seconds = self.seconds_per_epoch * (1 + np.asarray(actions)[:, 1]) * (
            ep[lv] - np.where(st >= 0, ep[np.maximum(st, 0)], 0.0))
        nan = np.full(len(actions), np.nan)
        out = BatchResult(score, np.zeros(len(actions), dtype=np.int64), score.copy(), nan, nan, seconds,
                          ({},) * len(actions))
        if on_result is not None:
            for i, r in enumerate(out):
                on_result(i, r)
        return out

    def config(self):
        return {**super().config(), "levels": list(self.fidelity.levels)}


def curve_env(**kw):
    import ma2ml_env

    ev = CurveEvaluator(**kw)
    return ma2ml_env.parallel_env(modules=ev.modules, reward=ev)


class FullOnlyEvaluator(PipelineEvaluator):
    """Full trainings only: an evaluator that declares no fidelity levels."""

    name = "full-only"

    def evaluate_pipeline(self, pipeline, seed):
        return EvalResult(score=0.5)


def full_only_env():
    import ma2ml_env

    return ma2ml_env.parallel_env(modules=CurveEvaluator().modules, reward=FullOnlyEvaluator())
