"""Throughput of the surrogate environment.

Prints joint steps/s of ``AutoMLPipeline-v1`` with the surrogate reward (one process, one pipeline per
step, random valid actions prepared in advance) with the surrogate's compiled single-row path (numba, extra
``fast``) and its pure-Python path, batched evaluations/s through the evaluator, and each as a ratio against a
reference
measured in the same process: a bare PettingZoo ParallelEnv with the same agents and a table-lookup
reward (steps), and a numpy table lookup of the same batch (evaluations). Runs are interleaved and the
best of each kept, since the machines are noisy.

    python benchmarks/bench_env.py [--steps 50000] [--batch 200000]
"""

from __future__ import annotations

import argparse
import time
from typing import ClassVar

import gymnasium
import numpy as np
from pettingzoo import ParallelEnv

import ma2ml_env


class BareEnv(ParallelEnv):
    """Reference: same agents and spaces, reward = a table lookup, no validation, no features."""

    metadata: ClassVar[dict[str, str]] = {"name": "bare"}

    def __init__(self, spaces):
        self.possible_agents = list(spaces)
        self._spaces = spaces
        self._obs = gymnasium.spaces.Box(0, 1, (4,), np.float32)
        self._table = np.random.default_rng(0).random(64)

    def observation_space(self, agent):
        return self._obs

    def action_space(self, agent):
        return self._spaces[agent]

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        z = np.zeros(4, np.float32)
        return dict.fromkeys(self.agents, z), {a: {} for a in self.agents}

    def step(self, actions):
        r = float(self._table[int(actions["hpo"][0]) % 64])
        z = np.zeros(4, np.float32)
        return (dict.fromkeys(self.agents, z), dict.fromkeys(self.agents, r), dict.fromkeys(self.agents, False),
                dict.fromkeys(self.agents, False), {a: {} for a in self.agents})


def steps_per_second(env, actions) -> float:
    env.reset(seed=0)
    t = time.perf_counter()
    for a in actions:
        env.step(a)
    return len(actions) / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=200_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    env = ma2ml_env.parallel_env(reward="surrogate", pipelines_per_episode=10**9)
    rng = np.random.default_rng(0)
    space = env.space
    actions = [space.codec.decode(f) for f in space.codec.sample(rng, args.steps)]
    bare = BareEnv({a: env.action_space(a) for a in env.possible_agents})

    py_env = ma2ml_env.parallel_env(reward="surrogate", pipelines_per_episode=10**9)
    py_env.evaluator._row_kernel = None  # the surrogate's Python scalar path (no numba, or MA2ML_JIT=0)
    compiled = env.evaluator._lookup_row_kernel() is not None
    best_env = best_py = best_bare = 0.0
    for _ in range(args.repeats):
        best_env = max(best_env, steps_per_second(env, actions))
        best_py = max(best_py, steps_per_second(py_env, actions))
        best_bare = max(best_bare, steps_per_second(bare, actions))
    label = "compiled path" if compiled else "no numba or MA2ML_JIT=0"
    print(f"{'env steps/s (' + label + '):':38s}{best_env:>12,.0f}   (goal: >= 50,000)")
    print(f"env steps/s (Python path):            {best_py:>12,.0f}")
    print(f"bare ParallelEnv steps/s (reference): {best_bare:>12,.0f}")
    print(f"ratio env / bare:                     {best_env / best_bare:>12.3f}")
    print(f"ratio Python path / bare:             {best_py / best_bare:>12.3f}")

    ev = env.evaluator
    A = space.codec.validate_batch(space.codec.sample(rng, args.batch))
    seeds = np.arange(len(A), dtype=np.int64)
    table = rng.random(int(space.joint_nvec[0]))
    best_eval = best_ref = 0.0
    for _ in range(args.repeats):
        t = time.perf_counter()
        ev.evaluate(A, seeds)
        best_eval = max(best_eval, len(A) / (time.perf_counter() - t))
        t = time.perf_counter()
        table[A[:, 0]].copy()
        best_ref = max(best_ref, len(A) / (time.perf_counter() - t))
    print(f"batched evaluations/s:                {best_eval:>12,.0f}   (goal: >= 1,000,000)")
    print(f"numpy table lookup/s (reference):     {best_ref:>12,.0f}")
    print(f"ratio evaluations / lookup:           {best_eval / best_ref:>12.4f}")


if __name__ == "__main__":
    main()
