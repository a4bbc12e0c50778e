"""Algorithm time per evaluation of MA2ML over a whole search, with TPE as the reference in the same process.

Both MA2MLs are timed: ours (registry name ``"ma2ml"``, the default) and the paper's (``"ma2ml-paper"``).

A search of ``--budget`` evaluations (default 500) in batches of 8 on the default surrogate env (AUG 30,
NAS 13, HPO 7 decisions: the largest built-in action space), timing only the algorithm's ``propose`` and
``observe`` (what a search adds to each child training); the surrogate's own time is excluded. Printed: ms
per evaluation over the whole search and over its last 100 evaluations (where the buffer is largest), and
the ratio to Optuna TPE's on the same env and budget, measured in the same process (machines are noisy).

    python benchmarks/bench_ma2ml_update.py [--budget 500] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

import ma2ml_env
from agents.base import SearchAlgorithm, run
from agents.registry import make_algorithm


class _Timed(SearchAlgorithm):
    """``algo`` unchanged, with the seconds of each round's ``propose`` + ``observe`` recorded."""

    def __init__(self, algo: SearchAlgorithm) -> None:
        self.algo, self.seconds, self._proposing = algo, [], 0.0
        self.name = algo.name

    def setup(self, action_spaces: Any, seed: int) -> None:
        self.algo.setup(action_spaces, seed)

    def propose(self, n: int) -> list:
        t0 = time.perf_counter()
        actions = self.algo.propose(n)
        self._proposing = time.perf_counter() - t0
        return actions

    def observe(self, actions: Any, scores: Any) -> None:
        t0 = time.perf_counter()
        self.algo.observe(actions, scores)
        self.seconds.append(self._proposing + time.perf_counter() - t0)


def algorithm_seconds(algo: SearchAlgorithm, budget: int, batch: int = 8, seed: int = 0) -> np.ndarray:
    """Seconds of ``propose`` + ``observe`` of each round of a ``budget``-evaluation surrogate search (the
    library's search loop, ``agents.base.run``)."""
    timed = _Timed(algo)
    run(timed, ma2ml_env.parallel_env(reward="surrogate"), budget=budget, seed=seed, batch_size=batch)
    return np.array(timed.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ref = algorithm_seconds(make_algorithm("tpe"), args.budget)
    ref_ms = 1e3 * ref.sum() / args.budget
    print(f"reference: Optuna TPE {ref_ms:.2f} ms per evaluation over {args.budget} evaluations")
    for label, name in (("MA2ML, our extension (ma2ml)", "ma2ml"), ("MA2ML, the paper's (ma2ml-paper)", "ma2ml-paper")):
        sec = algorithm_seconds(make_algorithm(name), args.budget)
        ms = 1e3 * sec.sum() / args.budget
        last = 1e3 * sec[-(100 // 8):].sum() / (8 * len(sec[-(100 // 8):]))
        print(f"{label}: {ms:.2f} ms per evaluation ({ms / ref_ms:.2f}x TPE); last 100 evaluations "
              f"{last:.2f} ms per evaluation")


if __name__ == "__main__":
    main()
