"""A durable search run as a separate process by the kill -9 test:

    python -m tests._durable_search STORE LOG [--backend local|serial] [--budget N]

Toy random search, toy evaluator sleeping ``--delay`` s per pipeline and logging each completed evaluation
to LOG. Prints the trial count at the end.
"""

from __future__ import annotations

import argparse

import ma2ml_env
from agents.store import run_durable
from tests._toys import ToyEvaluator, ToyRandomSearch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("store")
    p.add_argument("log")
    p.add_argument("--backend", default="local")
    p.add_argument("--budget", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--delay", type=float, default=0.1)
    a = p.parse_args()
    workers = 2 if a.backend != "serial" else None
    env = ma2ml_env.parallel_env(reward=ToyEvaluator(delay=a.delay, log=a.log), backend=a.backend, workers=workers)
    try:
        res = run_durable(ToyRandomSearch(), env, budget=a.budget, seed=11, batch_size=a.batch_size,
                          store_path=a.store)
    finally:
        env.close()
    print(len(res.trials))


if __name__ == "__main__":
    main()
