"""Toy evaluators and algorithms for the parallel, store and fault tests (importable by worker processes).

Every toy is deterministic in (pipeline, seed), so serial and parallel runs can be compared exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agents.base import SearchAlgorithm
from ma2ml_env.rewards.base import BatchResult, EvalResult, Evaluator, PipelineEvaluator
from ma2ml_env.rewards.fidelity import Fidelity, fidelity_request


def pipeline_score(key: str, seed: int | None) -> float:
    """A deterministic pseudo-random score in [0, 1) from the pipeline key (and the seed, if given)."""
    h = hashlib.sha256(f"{key}|{'' if seed is None else seed}".encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64


class ToyEvaluator(PipelineEvaluator):
    """Score = a hash of the pipeline (and of the seed when ``use_seed``); optional sleep per pipeline;
    optional log file: one JSON line per *completed* evaluation (``{"seed", "key", "pid"}``)."""

    name = "toy"

    def __init__(self, delay: float = 0.0, use_seed: bool = True, log: str | None = None) -> None:
        self.delay, self.use_seed, self.log = delay, use_seed, log

    def evaluate_pipeline(self, pipeline: Any, seed: int) -> EvalResult:
        if self.delay:
            time.sleep(self.delay)
        key = pipeline.key()
        out = EvalResult(score=pipeline_score(key, seed if self.use_seed else None), seconds=self.delay,
                         info={"pid": os.getpid()})
        if self.log:
            with open(self.log, "a") as f:
                f.write(json.dumps({"seed": int(seed), "key": key[:64], "pid": os.getpid()}) + "\n")
        return out


def _first_time(marker_dir: str, key: str) -> bool:
    """True exactly once per key across processes (atomic exclusive create of a marker file)."""
    name = hashlib.sha1(key.encode()).hexdigest()
    try:
        fd = os.open(os.path.join(marker_dir, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


class CudaLikeOOM(RuntimeError):
    """Stands in for ``torch.cuda.OutOfMemoryError`` (a ``RuntimeError`` with this class name)."""


CudaLikeOOM.__name__ = "OutOfMemoryError"


class FaultyEvaluator(ToyEvaluator):
    """A :class:`ToyEvaluator` that injects a fault: on the first attempt of each pipeline (``once=True``,
    tracked with marker files in ``marker_dir``) or always.

    Modes: ``raise`` (ValueError), ``exit`` (``os._exit(3)``), ``kill`` (SIGKILL of its own process),
    ``hang`` (sleeps 60 s), ``oom`` (MemoryError), ``cuda_oom`` (an ``OutOfMemoryError``), ``oom_status``
    (returns status ``"oom"``).
    """

    name = "faulty"

    def __init__(self, mode: str, marker_dir: str, once: bool = True, only_seeds: Sequence[int] | None = None,
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.mode, self.marker_dir, self.once = mode, marker_dir, once
        self.only_seeds = None if only_seeds is None else set(only_seeds)

    def evaluate_pipeline(self, pipeline: Any, seed: int) -> EvalResult:
        hit = self.only_seeds is None or int(seed) in self.only_seeds
        if hit and (not self.once or _first_time(self.marker_dir, f"{pipeline.key()}|{seed}")):
            if self.mode == "raise":
                raise ValueError("injected failure")
            if self.mode == "exit":
                os._exit(3)
            if self.mode == "kill":
                os.kill(os.getpid(), 9)
            if self.mode == "hang":
                time.sleep(60)
            if self.mode == "oom":
                raise MemoryError("injected host OOM")
            if self.mode == "cuda_oom":
                raise CudaLikeOOM("CUDA out of memory. Tried to allocate 2.00 GiB")
            if self.mode == "oom_status":
                return EvalResult(score=0.0, status="oom", info={"error": "injected oom status"})
        return super().evaluate_pipeline(pipeline, seed)


class ToyRandomSearch(SearchAlgorithm):
    """Random search with an RNG in its state and a running mean (so observe order matters)."""

    name = "toy-random"

    def __init__(self, checkpointing: bool = True) -> None:
        self.checkpointing = checkpointing

    def setup(self, action_spaces: Mapping[str, Any], seed: int) -> None:
        super().setup(action_spaces, seed)
        self.rng = np.random.default_rng(seed)
        self.observed = 0
        self.total = 0.0

    def propose(self, n: int) -> np.ndarray:
        return np.array([np.concatenate([(self.rng.random(sp.shape) * sp.nvec).astype(np.int64)
                                         for sp in self.action_spaces.values()]) for _ in range(n)],
                        dtype=np.int64).reshape(n, self.codec.size)

    def observe(self, actions: np.ndarray, scores: np.ndarray) -> None:
        self.observed += len(scores)
        self.total += float(sum(scores))

    def metrics(self) -> dict[str, Any]:
        return {"mean_score": self.total / max(self.observed, 1), "per_agent": dict.fromkeys(self.agents, 1.0)}

    def state_dict(self) -> dict[str, Any]:
        if not self.checkpointing:
            raise NotImplementedError("no checkpointing")
        return {"rng": self.rng.bit_generator.state, "observed": self.observed, "total": self.total,
                "spaces": self.action_spaces, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.setup(state["spaces"], state["seed"])
        self.rng.bit_generator.state = state["rng"]
        self.observed, self.total = state["observed"], state["total"]


class RepeatSearch(ToyRandomSearch):
    """Proposes from a tiny set of joint actions (to exercise de-duplication)."""

    name = "toy-repeat"

    def propose(self, n: int) -> np.ndarray:
        bits = self.rng.integers(2, size=n)
        return np.repeat(bits.astype(np.int64)[:, None], self.codec.size, axis=1)


class ToyFidelityEvaluator(Evaluator):
    """A deterministic evaluator with fidelity levels ``(1, 2, 4)`` epochs: the score at level ``i`` is a hash
    of the joint action and the seed times ``levels[i] / 4``; ``seconds`` is the epochs trained from ``start``
    to the level (``continue_bias``: a broken one whose continued scores differ, for check_evaluator)."""

    name = "toy-fidelity"

    def __init__(self, continue_bias: float = 0.0, cost_bias: float = 0.0) -> None:
        self.fidelity = Fidelity((1, 2, 4), "epochs")
        self.continue_bias, self.cost_bias = continue_bias, cost_bias

    def evaluate(self, actions, seeds, on_result=None, *, levels=None, start=None):
        lv, st = fidelity_request(self.fidelity, len(actions), levels, start)
        res = np.asarray(self.fidelity.levels, dtype=np.float64)
        out = []
        for i, (row, seed) in enumerate(zip(actions, seeds)):
            base = pipeline_score(f"{np.asarray(row).tolist()}", int(seed))
            go_on = st[i] >= 0
            score = base * res[lv[i]] / res[-1] + (self.continue_bias if go_on else 0.0)
            seconds = res[lv[i]] - (res[st[i]] + self.cost_bias if go_on else 0.0)
            r = EvalResult(score=float(score), seconds=float(seconds),
                           info={"pid": os.getpid(), "level": int(lv[i]), "start": int(st[i])})
            if on_result is not None:
                on_result(i, r)
            out.append(r)
        return BatchResult.from_results(out)
