"""Scaling of parallel evaluation: throughput with K workers vs one, and orchestration overhead per trial.

    python benchmarks/bench_scaling.py                    # K = 1..cpu_count, local backend and Ray
    python benchmarks/bench_scaling.py --max-workers 8 --no-ray --sleep 0.2 --rounds 5

The evaluator sleeps ``--sleep`` seconds per pipeline (it holds no CPU, so the figures isolate the backend).
For each K a search-like loop evaluates ``--rounds`` batches of K pipelines through ``env.evaluate`` (one call
per round, as the search loop does), after one warm-up batch (worker start-up is not counted).

* ``speedup(K)`` = throughput with K workers / throughput with 1 worker (goal: >= 0.9 K);
* ``overhead/trial`` = (wall time - ideal time) / trials, ideal = rounds x sleep (goal: <= 50 ms);
* ``serial dispatch`` = the same with a zero-sleep evaluator and one worker: the round trip of one pipeline.

All ratios are measured in this process, on this machine.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import ma2ml_env
from ma2ml_env.rewards.base import EvalResult, PipelineEvaluator


class SleepEvaluator(PipelineEvaluator):
    """Sleeps a fixed time per pipeline; score 0.5."""

    name = "sleep"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def evaluate_pipeline(self, pipeline, seed):
        if self.seconds:
            time.sleep(self.seconds)
        return EvalResult(score=0.5, seconds=self.seconds)


def _actions(env, n: int, rng: np.random.Generator) -> np.ndarray:
    return env.unwrapped.codec.sample(rng, n)


def measure(backend: str, k: int, sleep: float, rounds: int, **opts) -> tuple[float, float]:
    """(trials per second, overhead seconds per trial) of ``rounds`` batches of ``k`` pipelines."""
    env = ma2ml_env.parallel_env(reward=SleepEvaluator(sleep), backend=backend,
                                 workers=None if backend == "serial" else k, backend_kwargs=opts)
    rng = np.random.default_rng(0)
    try:
        if hasattr(env.evaluator, "start"):
            env.evaluator.start()  # every worker started and loaded
        env.evaluate(_actions(env, k, rng), list(range(k)))  # warm-up
        batches = [_actions(env, k, rng) for _ in range(rounds)]
        t0 = time.perf_counter()
        for i, b in enumerate(batches):
            env.evaluate(b, list(range(i * k, (i + 1) * k)))
        wall = time.perf_counter() - t0
    finally:
        env.close()
    n = rounds * k
    return n / wall, (wall - rounds * sleep) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--sleep", type=float, default=0.2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-ray", action="store_true")
    a = p.parse_args()
    ks = list(range(1, a.max_workers + 1))
    backends = ["local"]
    if not a.no_ray:
        try:
            import ray

            ray.init(num_cpus=a.max_workers, include_dashboard=False, log_to_driver=False)
            backends.append("ray")
        except ImportError:
            print('(Ray not installed: pip install "ma2ml[ray]"; skipping the ray backend)')
    print(f"machine: {os.cpu_count()} CPU cores; evaluator sleeps {a.sleep * 1000:.0f} ms; {a.rounds} rounds of K "
          "pipelines per measurement")
    for backend in backends:
        base, _ = measure(backend, 1, a.sleep, a.rounds)
        print(f"\n{backend} backend            trials/s   speedup   goal >= 0.9 K   overhead/trial")
        for k in ks:
            tput, over = measure(backend, k, a.sleep, a.rounds)
            ok = "yes" if tput / base >= 0.9 * k else "NO"
            print(f"  K = {k:2d} workers        {tput:8.2f}   {tput / base:6.2f}x   {ok:>13s}   {over * 1e3:9.1f} ms")
        tput0, _ = measure(backend, 1, 0.0, 50)
        print(f"  serial dispatch (0 ms evaluator, 1 worker): {1e3 / tput0:.2f} ms per trial")
    serial, _ = measure("serial", 1, 0.0, 200)
    print(f"\nin-process serial evaluation (0 ms evaluator): {1e3 / serial:.3f} ms per trial")
    plain, durable = store_overhead()
    print(f"durable search store (SQLite, WAL, synchronous=FULL): {1e3 * (durable - plain):.2f} ms per trial "
          f"(run_durable {1e3 * durable:.2f} ms vs run {1e3 * plain:.2f} ms per trial, random search, 0 ms evaluator)")


def store_overhead(budget: int = 400, batch_size: int = 8) -> tuple[float, float]:
    """Seconds per trial of run() and run_durable() with a zero-time evaluator (the store's cost)."""
    import tempfile

    from agents.base import run
    from agents.registry import make_algorithm
    from agents.store import run_durable

    env = ma2ml_env.parallel_env(reward=SleepEvaluator(0.0))
    t0 = time.perf_counter()
    run(make_algorithm("random"), env, budget=budget, seed=0, batch_size=batch_size)
    plain = (time.perf_counter() - t0) / budget
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        run_durable(make_algorithm("random"), env, budget=budget, seed=0, batch_size=batch_size,
                    store_path=os.path.join(d, "s.db"))
        durable = (time.perf_counter() - t0) / budget
    return plain, durable


if __name__ == "__main__":
    main()
