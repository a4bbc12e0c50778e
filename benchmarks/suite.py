"""The benchmark suite: algorithms x tasks x seeds at a budget of evaluations, and the report.

Answers the paper's questions with numbers: joint optimisation (MA2ML) vs module-by-module ("separate");
credit assignment on vs off; off-policy vs on-policy (MA2ML-Lite); our MA2ML against the paper's; against
SB3 PPO, independent learners, Optuna TPE and random search.

    python benchmarks/suite.py run --out benchmarks/results            # run (resumes finished cells)
    python benchmarks/suite.py report --out benchmarks/results         # tables + learning curves
    python benchmarks/suite.py all --preset smoke --out /tmp/smoke     # what CI runs

Each finished cell (task, algorithm, seed) is one JSON file under ``OUT/raw/`` with every evaluation's
score, status and seconds; a rerun skips finished cells, so a killed run resumes where it was.

This file is the runner and the command line; what is benchmarked is in ``suite_tables.py``, the report in
``suite_report.py``, the MARL community's formats (marl-eval JSON, IQM, performance profiles, probability of
improvement) in ``suite_marl.py`` (their names are importable from here too).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import sys
import time
from pathlib import Path

import numpy as np

# the suite's files, and this checkout's packages before any installed copy, however this file is loaded
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite_report import (
    ABLATIONS,
    bootstrap_ci,
    load_cells,
    load_table_for,
    normalised_regret,
    paired_ci,
    summarise,
    throughput_section,
    write_report,
)
from suite_tables import (
    ALGORITHMS,
    PRESET_ALGOS,
    PRESETS,
    ROOT,
    TABULAR_TASKS,
    TASKS,
    AlgoSpec,
    TaskSpec,
    cifar10_npz,
    make_algo,
    make_env,
    make_env_kwargs,
    unregistered,
    write_atomic,
)

__all__ = [
    "ABLATIONS", "ALGORITHMS", "PRESETS", "PRESET_ALGOS", "ROOT", "TABULAR_TASKS", "TASKS", "AlgoSpec",
    "TaskSpec", "bootstrap_ci", "cell_path", "cifar10_npz", "load_cells", "load_table_for", "main",
    "make_algo", "make_env", "make_env_kwargs", "normalised_regret", "paired_ci", "run_cell", "run_matrix",
    "summarise", "throughput_section", "unregistered", "write_report",
]


# -- running cells -----------------------------------------------------------------------------------------
def cell_path(out: Path, task: str, algo: str, seed: int) -> Path:
    return out / "raw" / task / algo / f"seed{seed}.json"


_OPTIMA: dict[tuple[str, int | None], float] = {}  # per process: the surrogate optimum of each task


def run_cell(out: str, task: str, algo: str, seed: int, budget: int, batch_size: int) -> str:
    """Run one (task, algorithm, seed) cell and write its JSON file atomically."""
    import torch

    torch.set_num_threads(1)
    from agents.base import run

    env = make_env(task, seed)
    optimum = None
    if getattr(env.evaluator, "name", "") in ("surrogate", "tabular"):
        key = (task, seed if TASKS[task].per_seed_task else None)
        if key not in _OPTIMA:
            _OPTIMA[key] = env.evaluator.optimum()[0]
        optimum = _OPTIMA[key]
    t0 = time.perf_counter()
    result = run(make_algo(algo), env, budget=budget, seed=seed, batch_size=batch_size)
    record = dict(
        task=task, algo=algo, seed=seed, budget=budget, batch_size=batch_size, optimum=optimum,
        wall_seconds=time.perf_counter() - t0,
        scores=[t.score for t in result.trials], statuses=[t.status for t in result.trials],
        seconds=[t.seconds for t in result.trials],
        best_actions={a: np.atleast_1d(v).tolist()  # the recorded cells' per-agent form
                      for a, v in env.unwrapped.codec.decode(result.best.action).items()},
    )
    if TASKS[task].final_training:  # the test accuracy of the search's pick, trained on train + validation
        from ma2ml_env.rewards.train import train_final

        rk = dict(make_env_kwargs(task)["reward_kwargs"])
        rk.pop("budget", None)
        final = train_final(result.best_pipeline, device="cpu", seed=seed, **rk)
        record["final"] = {k: final[k] for k in ("test_accuracy", "train_images", "test_images", "seconds")}
    if hasattr(env.evaluator, "true_score_of"):  # seed mean (tabular) or noise-free (surrogate): true worth
        flat = np.array([t.action for t in result.trials], dtype=np.int64)
        record["true_scores"] = env.evaluator.true_score_of(flat).tolist()
    path = write_atomic(cell_path(Path(out), task, algo, seed), json.dumps(record))
    env.close()
    return str(path)


def run_matrix(out: Path, tasks: list[str], algos: list[str], seeds: int, budget: int, batch_size: int,
               jobs: int = 1) -> None:
    cells = [(t, a, s) for t in tasks for a in algos for s in range(seeds)]
    todo = []
    for t, a, s in cells:
        p = cell_path(out, t, a, s)
        if p.exists():
            rec = json.loads(p.read_text())
            if rec.get("budget") == budget and len(rec["scores"]) == budget and rec.get("batch_size") == batch_size:
                continue
        todo.append((t, a, s))
    print(f"{len(cells) - len(todo)} of {len(cells)} cells already done; running {len(todo)}", flush=True)
    if not todo:
        return
    args = [(str(out), t, a, s, budget, batch_size) for t, a, s in todo]
    if jobs <= 1:
        for i, a in enumerate(args):
            run_cell(*a)
            print(f"[{i + 1}/{len(args)}] {a[1]} {a[2]} seed {a[3]}", flush=True)
        return
    with cf.ProcessPoolExecutor(jobs) as pool:
        futures = {pool.submit(run_cell, *a): a for a in args}
        for i, fut in enumerate(cf.as_completed(futures)):
            fut.result()
            a = futures[fut]
            print(f"[{i + 1}/{len(args)}] {a[1]} {a[2]} seed {a[3]}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "report", "all"], help="run cells, write the report, or both")
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper", help="matrix preset (default: paper)")
    p.add_argument("--tasks", help=f"comma-separated tasks, overriding the preset; known: {', '.join(TASKS)}")
    p.add_argument("--algos", help=f"comma-separated algorithms, overriding the preset; known: {', '.join(ALGORITHMS)}")
    p.add_argument("--seeds", type=int, help="number of seeds (0..N-1)")
    p.add_argument("--budget", type=int, help="evaluations per run")
    p.add_argument("--batch-size", type=int, help="pipelines proposed and evaluated per round")
    p.add_argument("--jobs", type=int, default=1, help="cells run in parallel processes (default 1)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="results directory")
    p.add_argument("--throughput", action="store_true", help="also run the throughput benchmarks into the report")
    args = p.parse_args(argv)
    cfg = dict(PRESETS[args.preset])
    for key in ("seeds", "budget", "batch_size"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.tasks:
        cfg["tasks"] = args.tasks.split(",")
    if args.algos:
        cfg["algos"] = args.algos.split(",")
    bad = [t for t in cfg["tasks"] if t not in TASKS] + [a for a in cfg["algos"] if a not in ALGORITHMS]
    if bad:
        p.error(f"unknown tasks/algorithms {bad}; tasks: {list(TASKS)}; algorithms: {list(ALGORITHMS)}")
    for key in ("seeds", "budget", "batch_size"):
        if cfg[key] < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1, got {cfg[key]}")
    if args.command in ("run", "all") and (missing := unregistered(cfg["algos"])):
        p.error(f"algorithms {missing} are not in this checkout's registry (agents.registry: "
                f"{[ALGORITHMS[a].registry_name for a in missing]}); the MARL-library ones come with issue 22, "
                "part 2. Leave them out with --algos")
    if args.command in ("run", "all"):
        run_matrix(args.out, cfg["tasks"], cfg["algos"], cfg["seeds"], cfg["budget"], cfg["batch_size"], args.jobs)
    if args.command in ("report", "all"):
        command = "python benchmarks/suite.py " + " ".join(argv if argv is not None else sys.argv[1:])
        report = write_report(args.out, command, throughput_section() if args.throughput else None)
        print(f"report: {report}")


if __name__ == "__main__":
    main()
