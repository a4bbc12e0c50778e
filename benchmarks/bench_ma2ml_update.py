"""Algorithm time per evaluation of MA2ML over a whole search, with TPE as the reference in the same process.

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

import numpy as np
import torch

import ma2ml_env
from agents.base import SearchAlgorithm, action_spaces_of
from agents.ma2ml import MA2ML, MA2MLConfig
from agents.registry import make_algorithm


def algorithm_seconds(algo: SearchAlgorithm, budget: int, batch: int = 8, seed: int = 0) -> np.ndarray:
    """Seconds of ``propose`` + ``observe`` of each round of a ``budget``-evaluation surrogate search."""
    env = ma2ml_env.parallel_env(reward="surrogate")
    algo.setup(action_spaces_of(env), seed)
    space, ev = env.unwrapped.space, env.unwrapped.evaluator
    out = []
    for _ in range(budget // batch):
        t0 = time.perf_counter()
        acts = algo.propose(batch)
        t1 = time.perf_counter()
        scores = ev.evaluate_actions(np.stack([space.flatten(a) for a in acts]))["score"].tolist()
        t2 = time.perf_counter()
        algo.observe(acts, scores)
        out.append(t1 - t0 + time.perf_counter() - t2)
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ref = algorithm_seconds(make_algorithm("tpe"), args.budget)
    ref_ms = 1e3 * ref.sum() / args.budget
    print(f"reference: Optuna TPE {ref_ms:.2f} ms per evaluation over {args.budget} evaluations")
    for label, cfg in (("MA2ML (defaults)", MA2MLConfig()), ("MA2MLConfig.paper()", MA2MLConfig.paper())):
        sec = algorithm_seconds(MA2ML(cfg), args.budget)
        ms = 1e3 * sec.sum() / args.budget
        last = 1e3 * sec[-(100 // 8):].sum() / (8 * len(sec[-(100 // 8):]))
        print(f"{label}: {ms:.2f} ms per evaluation ({ms / ref_ms:.2f}x TPE); last 100 evaluations "
              f"{last:.2f} ms per evaluation")


if __name__ == "__main__":
    main()
