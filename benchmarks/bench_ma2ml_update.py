"""Time of one MA2ML update at default sizes on CPU, on the default env's action spaces.

The action spaces are the default AUG (30 decisions), NAS (13) and HPO (7) modules, built from
``SearchSpace`` without the env. One *update* = one critic regression step + one policy step (counterfactual
advantages for every decision, clipped-ratio loss, Adam) + the Polyak target update, on a mini-batch of
``minibatch_size`` rows of a buffer of 512 random evaluations. A *round* is what ``observe`` runs after
each batch of evaluations (``updates_per_round`` updates). Reference in the same process: one
forward+backward+Adam step of a plain ``Linear(390, 64) -> ReLU -> Linear(64, 64) -> ReLU -> Linear(64, 1)``
regression on a dense one-hot batch of the same size.

    python benchmarks/bench_ma2ml_update.py [--threads 1] [--repeats 200]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from agents.ma2ml import MA2ML, MA2MLConfig
from ma2ml_env.modules import make_module
from ma2ml_env.pipeline import SearchSpace


def _timeit(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls after 10 warm-up calls."""
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--buffer", type=int, default=512, help="random evaluations in the buffer")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    space = SearchSpace([make_module(n) for n in ("aug", "nas", "hpo")])
    spaces = {m.name: m.action_space for m in space.modules}
    cfg = MA2MLConfig()
    algo = MA2ML(cfg)
    algo.setup(spaces, seed=0)
    rng = np.random.default_rng(0)
    algo.observe(algo.propose(args.buffer), rng.random(args.buffer).tolist())
    rows = algo._policy_rows(cfg.minibatch_size)
    flat = torch.as_tensor(algo.buffer.actions[rows])

    def update() -> None:
        algo.critic_step(algo._uniform_rows(cfg.minibatch_size))
        algo.policy_step(algo._policy_rows(cfg.minibatch_size))

    t_update = _timeit(update, args.repeats)
    t_critic = _timeit(lambda: algo.critic_step(rows), args.repeats)
    t_adv = _timeit(lambda: algo.advantages(flat), args.repeats)
    t_policy = _timeit(lambda: algo.policy_step(rows), args.repeats)
    scores = rng.random(8).tolist()
    t_round = _timeit(lambda: algo.observe(algo.propose(8), scores), max(10, args.repeats // 10))
    t_propose = _timeit(lambda: algo.propose(8), args.repeats)

    # Reference: a plain dense MLP regression step of the same critic size in the same process.
    d = algo.layout.n_cols
    ref = torch.nn.Sequential(
        torch.nn.Linear(d, cfg.critic_hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(cfg.critic_hidden, cfg.critic_hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(cfg.critic_hidden, 1),
    )
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    x = torch.zeros(cfg.minibatch_size, d)
    x[torch.arange(cfg.minibatch_size)[:, None], flat + algo._col_offset] = 1.0
    y = torch.randn(cfg.minibatch_size, 1)

    def ref_step() -> None:
        loss = (ref(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    t_ref = _timeit(ref_step, args.repeats)

    print(f"MA2ML update benchmark (CPU, torch {torch.__version__}, {torch.get_num_threads()} thread(s))")
    print(
        f"action spaces: {space!r}: {algo.layout.n_dec} decisions, {d} one-hot columns, "
        f"{algo.n_units} credit units; minibatch {cfg.minibatch_size}, critic {cfg.critic_layers}x"
        f"{cfg.critic_hidden}, ensemble {cfg.critic_ensemble}, counterfactual={cfg.counterfactual!r}"
    )
    print(f"  one update (critic step + policy step + target): {t_update * 1e3:8.2f} ms   (goal <= 20 ms)")
    print(f"    critic regression step:                       {t_critic * 1e3:8.2f} ms")
    print(f"    counterfactual advantages, 64 distinct rows:   {t_adv * 1e3:8.2f} ms")
    print(f"    policy step (elite rows deduplicated):        {t_policy * 1e3:8.2f} ms")
    print(f"  one round (observe 8 results: {cfg.updates_per_round} updates):     {t_round * 1e3:8.2f} ms")
    print(f"  propose(8):                                     {t_propose * 1e3:8.2f} ms")
    print(f"  reference: dense MLP regression step:           {t_ref * 1e3:8.2f} ms")
    print(f"  ratio update / reference:                       {t_update / t_ref:8.1f} x")


if __name__ == "__main__":
    main()
