"""Real training with early stopping: what stopping weak children buys on real data, for equal training time.

On each dataset (scikit-learn's digits; Fashion-MNIST from Debian's IDX files, a seeded subset of 2,000
training images; ``--max-train`` sets one subset size for both) and seed, three searches get the same
budget of *measured* training seconds (``budget_seconds``: the sum of the evaluator's own ``seconds``, one
worker, one thread):

* ``ma2ml+hyperband``: MA2ML under our Hyperband (children start at 1 epoch; a promoted child continues
  from its saved state);
* ``ma2ml+full``: MA2ML training every child to the end (the scheduler ``full``, same clock);
* ``optuna-hyperband``: Optuna's TPE with its ``HyperbandPruner`` (:mod:`agents.peers`).

The space is the CLI's main job (the default modules, a 16 MFLOPs budget). Each cell (dataset, method,
seed) is one JSON file ``OUT/<dataset>/<method>-seed<k>.json``: every result with its level, measured
seconds and validation accuracy; a rerun skips finished cells. ``report`` writes ``OUT/REPORT.md``: the
incumbent (best *full* training so far) at fractions of the budget, mean over seeds with a bootstrap
interval, and the number of full trainings and of children each method saw.

    python benchmarks/study_mf_real.py run --datasets digits --budget-seconds 150 --seeds 3
    python benchmarks/study_mf_real.py run --datasets fashion_mnist --budget-seconds 240 --seeds 3
    python benchmarks/study_mf_real.py report

Wall-clock seconds are this machine's (CPU, one thread per search): the ratios between methods, not the
absolute times, carry over to a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite_report import bootstrap_ci  # the suite's one mean-and-interval

ROOT = Path(__file__).resolve().parents[1]
#: method -> (registry algorithm or None for a peer, scheduler or peer name)
METHODS: dict[str, tuple[str | None, str]] = {
    "ma2ml+hyperband": ("ma2ml", "hyperband"), "ma2ml+full": ("ma2ml", "full"),
    "optuna-hyperband": (None, "optuna-hyperband"),
}
#: dataset -> training images (a seeded subset; None: all)
DATASETS: dict[str, int | None] = {"digits": None, "fashion_mnist": 2000}
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def make_env(dataset: str, max_train: int | None) -> Any:
    import ma2ml_env
    from ma2ml_env.rewards.budget import CostBudget

    kw: dict[str, Any] = {"dataset": dataset, "device": "cpu", "num_threads": 1,
                          "budget": CostBudget(max_flops=16e6)}
    if max_train is not None:
        kw["max_train"] = max_train
    return ma2ml_env.parallel_env(reward="train", reward_kwargs=kw)


def cell_path(out: Path, dataset: str, method: str, seed: int) -> Path:
    return out / dataset / f"{method}-seed{seed}.json"


def run_cell(out: Path, dataset: str, method: str, seed: int, budget_seconds: float,
             max_train: int | None) -> Path:
    import torch

    torch.set_num_threads(1)
    from agents.base import run
    from agents.registry import make_algorithm
    from agents.schedulers import make_scheduler

    env = make_env(dataset, max_train)
    name, sched = METHODS[method]
    if name is None:
        from agents.peers import make_peer

        scheduler = make_peer(sched, seed=seed)
        algorithm = scheduler.algorithm
    else:
        algorithm, scheduler = make_algorithm(name), make_scheduler(sched)
    t0 = time.perf_counter()
    result = run(algorithm, env, budget=10**6, seed=seed, scheduler=scheduler, workers=1,
                 budget_seconds=budget_seconds)
    trials = sorted(result.trials, key=lambda t: (t.clock, t.index))
    top = env.unwrapped.evaluator.fidelity.levels[-1]
    record = dict(dataset=dataset, method=method, seed=seed, budget_seconds=budget_seconds,
                  max_train=max_train, top_level=top,
                  wall_seconds=time.perf_counter() - t0, clock=[t.clock for t in trials],
                  level=[t.level for t in trials], full=[bool(t.full) for t in trials],
                  score=[t.score for t in trials],
                  status=[t.status for t in trials], action=[np.asarray(t.action).tolist() for t in trials])
    path = cell_path(out, dataset, method, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)
    return path


def incumbent(rec: dict, t: float) -> float:
    """The best validation accuracy of a *full* training that had arrived by time ``t`` (0 before any)."""
    full = [s for c, f, s in zip(rec["clock"], rec["full"], rec["score"]) if c <= t and f]
    return max(full, default=0.0)


def report(out: Path) -> Path:
    cells: dict[tuple[str, str], list[dict]] = {}
    for p in sorted(out.glob("*/*-seed*.json")):
        rec = json.loads(p.read_text())
        cells.setdefault((rec["dataset"], rec["method"]), []).append(rec)
    lines = ["# Real training with early stopping (equal measured training time)", "",
             "Generated by `python benchmarks/study_mf_real.py report`; see its docstring for the set-up. "
             "Incumbent: the best validation accuracy of a full training that had finished by then (0 before "
             "the first). Mean over seeds with a 95% bootstrap interval (few seeds: wide intervals).", ""]
    for dataset in DATASETS:
        methods = [m for m in METHODS if (dataset, m) in cells]
        if not methods:
            continue
        budget = min(r["budget_seconds"] for m in methods for r in cells[(dataset, m)])
        times = [f * budget for f in FRACTIONS]
        lines += [f"## {dataset} (budget {budget:g} s of training)", "",
                  "| method | seeds | " + " | ".join(f"best @ {t:g} s" for t in times)
                  + " | full trainings | children | levels seen |", "|---|---|" + "---|" * (len(times) + 3)]
        for m in methods:
            recs = cells[(dataset, m)]
            cols = []
            for t in times:
                mean, lo, hi = bootstrap_ci(np.array([incumbent(r, t) for r in recs]))
                cols.append(f"{mean:.4f} [{lo:.4f}, {hi:.4f}]")
            full = np.mean([sum(r["full"]) for r in recs])
            children = np.mean([len({tuple(a) for a in r["action"]}) for r in recs])
            levels = sorted({lv for r in recs for lv in r["level"]})
            lines.append(f"| {m} | {len(recs)} | " + " | ".join(cols)
                         + f" | {full:.1f} | {children:.1f} | {', '.join(f'{lv:g}' for lv in levels)} |")
        lines.append("")
    path = out / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "report"])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mf-real")
    p.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget-seconds", type=float, default=240.0,
                   help="measured training seconds of each search (default: 240)")
    p.add_argument("--max-train", type=int, default=None,
                   help="training images of every dataset (default: all of digits, 2,000 of Fashion-MNIST)")
    a = p.parse_args(argv)
    if a.command == "report":
        print(report(a.out))
        return
    todo = [(d, m, s) for s in range(a.seeds) for d in a.datasets for m in a.methods
            if not cell_path(a.out, d, m, s).exists()]
    print(f"running {len(todo)} cells", flush=True)
    for i, (d, m, s) in enumerate(todo):  # one at a time: the budget is measured wall-clock training time
        path = run_cell(a.out, d, m, s, a.budget_seconds, a.max_train or DATASETS[d])
        print(f"[{i + 1}/{len(todo)}] {d} {m} seed {s} -> {path}", flush=True)


if __name__ == "__main__":
    main()
