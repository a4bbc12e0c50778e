"""Records the surrogate's numbers on every path (batch, scalar, compiled step) into
``tests/data/surrogate_golden.npz``; ``tests/test_surrogate_golden.py`` compares today's code against them.
The file was written by the code before the formula was rewritten as one function; re-running this script
overwrites it (only do that for an intended change of the numbers, and say so in the commit).

    python -m tests._record_surrogate
"""

from __future__ import annotations

import os

import numpy as np

import ma2ml_env

PATH = os.path.join(os.path.dirname(__file__), "data", "surrogate_golden.npz")
N = 300
CASES = {
    "default": {},
    "random_task": {"task": 7},
    "noise": {"noise_std": 0.05},
    "hard_budget": {"budget": ma2ml_env.CostBudget(max_flops=5e6, max_params=4e4)},
    "soft_budget": {"task": 11, "budget": ma2ml_env.CostBudget(max_flops=5e6, max_params=4e4, mode="soft")},
}
MODULES = {"default": ma2ml_env.DEFAULT_MODULES, "no_nas": ("aug", "hpo")}
FIELDS = ("score", "accuracy", "flops", "params", "seconds")


def cases():
    for case, kw in CASES.items():
        for mods, modules in MODULES.items():
            if mods != "default" and case not in ("default", "noise"):
                continue
            yield f"{case}-{mods}", kw, modules


def compute(kw, modules, actions=None):
    env = ma2ml_env.parallel_env(reward="surrogate", reward_kwargs=kw, modules=modules)
    space, ev = env.space, env.evaluator
    if actions is None:
        actions = space.codec.sample(np.random.default_rng(2024), N)
    seeds = np.arange(N, dtype=np.int64) * 7919 + 3
    out = {"actions": actions, "seeds": seeds}
    b = ev.evaluate(actions, seeds)  # the batch path
    for f in FIELDS:
        out[f"batch_{f}"] = np.asarray(getattr(b, f), dtype=np.float64)
    out["batch_over"] = np.array(b.statuses()) == "over_budget"
    kernel, ev._row_kernel = ev._row_kernel, None  # the Python scalar path (one row at a time)
    rows = [ev.evaluate(actions[i:i + 1], seeds[i:i + 1])[0] for i in range(len(actions))]
    ev._row_kernel = kernel
    out["scalar_status"] = np.array([r.status for r in rows])
    for f in FIELDS:
        out[f"scalar_{f}"] = np.array([getattr(r, f) for r in rows], dtype=np.float64)
    return out


def main() -> None:
    data = {}
    for name, kw, modules in cases():
        for k, v in compute(kw, modules).items():
            data[f"{name}/{k}"] = v
    np.savez_compressed(PATH, **data)
    print(f"wrote {PATH}: {len(data)} arrays")


if __name__ == "__main__":
    main()
