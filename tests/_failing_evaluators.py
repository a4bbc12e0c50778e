"""User evaluators that fail the way user code does, for the backend fault tests (importable by workers).

Each fails on the pipelines whose hash (:func:`tests._toys.pipeline_score` without seed) is below
``fraction`` and scores every other pipeline exactly like :class:`tests._toys.ToyEvaluator`, so the good
trials can be compared with a clean run (:func:`check_error_trials`, shared by the backends' tests).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import ma2ml_env
from agents.base import run
from ma2ml_env.rewards.base import BatchResult, EvalResult, Evaluator
from tests._toys import ToyEvaluator, ToyRandomSearch, pipeline_score

#: How :class:`FailingEvaluator` fails: ``raise`` (an exception), ``nan`` (builds an ``EvalResult`` with
#: a NaN score, which raises), ``nan_float`` (returns a bare NaN instead of a result), ``too_many``
#: (returns two results for one pipeline).
MODES = ("raise", "nan", "nan_float", "too_many")


class FailingEvaluator(Evaluator):
    """A batch evaluator (the one-method contract) that fails per ``mode`` on a ``fraction`` of the
    pipelines; ``failure_score`` is -1 (to see it used)."""

    name = "failing"
    failure_score = -1.0

    def __init__(self, mode: str, fraction: float = 0.5) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode, self.fraction = mode, fraction
        self.toy = ToyEvaluator()

    @staticmethod
    def fails(pipeline: Any, fraction: float = 0.5) -> bool:
        return pipeline_score(pipeline.key(), None) < fraction

    def evaluate(self, actions: np.ndarray, seeds: np.ndarray, on_result: Any = None) -> Any:
        out: list[EvalResult] = []
        for row, s in zip(actions, seeds.tolist()):
            p = self.space.decode(row)
            if not self.fails(p, self.fraction):
                out.append(self.toy.evaluate_pipeline(p, s))
            elif self.mode == "raise":
                raise RuntimeError(f"user code failed on seed {s}")
            elif self.mode == "nan":
                out.append(EvalResult(score=math.nan))
            elif self.mode == "nan_float":
                return math.nan
            else:
                out.extend([self.toy.evaluate_pipeline(p, s)] * 2)
        return BatchResult.from_results(out)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "mode": self.mode, "fraction": self.fraction}


#: A phrase of the error message of each way a user evaluator fails (messages of evaluate_guarded).
_MESSAGES = {"raise": "user code failed", "nan": "finite", "nan_float": "BatchResult", "too_many": "2 results"}


def check_error_trials(env: Any, backend: str, mode: str) -> None:
    """A search over a failing user evaluator completes; its failures are recorded ``"error"`` trials (after
    the retries, with the evaluator's ``failure_score``) and every other trial is the clean toy score."""
    res = run(ToyRandomSearch(), env, budget=8, seed=4, batch_size=4)
    clean = ma2ml_env.parallel_env(reward=ToyEvaluator())
    ref = run(ToyRandomSearch(), clean, budget=8, seed=4, batch_size=4)
    assert [t.action for t in res.trials] == [t.action for t in ref.trials]
    failed = [FailingEvaluator.fails(env.unwrapped.decode(np.asarray(t.action))) for t in res.trials]
    assert any(failed) and not all(failed)
    for t, r, bad in zip(res.trials, ref.trials, failed):
        if not bad:
            assert (t.status, t.score) == ("ok", r.score)
            continue
        assert (t.status, t.score) == ("error", -1.0)
        assert t.info["failure"] == "error" and t.info["backend"] == backend
        assert t.info["attempts"] == 2 and [f["kind"] for f in t.info["failures"]] == ["error", "error"]
        assert _MESSAGES[mode] in t.info["error"]
