"""The multi-fidelity benchmark: searches judged per simulated GPU-second on recorded learning curves.

Every algorithm runs on the 9 LCBench tasks (``lcbench_<task>.npz`` in ``--curves-folder``) and on the
analytic surrogate (task ``surrogate``: its learning-curve model fitted to real digits curves) with ``W``
simulated workers (:mod:`agents.multifidelity`): ours under a scheduler (``random+hyperband``,
``tpe+hyperband`` (BOHB-like), ``ma2ml+hyperband`` ...), the same algorithms without early stopping on the
same clock (``+full``), and the peers through their own libraries (:mod:`agents.peers`: Optuna's Hyperband
pruner, syne-tune's ASHA and BOHB, SMAC3's multi-fidelity facade) when installed.

    python benchmarks/suite_mf.py run --out benchmarks/results/mf --seeds 10 --workers 1 4 --jobs 2
    python benchmarks/suite_mf.py report --out benchmarks/results/mf

Every search gets the same simulated GPU time (``--budget`` median full trainings, shared by the ``W``
workers), whatever it spends it on. The anytime measure: at simulated time ``t`` the incumbent is the best
full training that has arrived (before the first one: the best result of the highest level reached); its
regret is that of its *final* accuracy in the table, normalised per task (0: the table's best
configuration, 1: its median). Time is reported in units of the task's median full-training time, times
``W``: the GPU-seconds spent, in median full trainings, so tasks and worker counts compare. Each cell
(task, algorithm, W, seed) is one JSON file under ``OUT/raw/``; a rerun skips finished cells.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import functools
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# this checkout's packages and the suite's files, however this file is loaded
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite_report import bootstrap_ci  # the suite's one mean-and-interval
from suite_tables import write_atomic

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = ROOT.parent / "shared" / "data" / "lcbench-mf"
#: algorithm label -> (registry name or None for a peer, scheduler name or peer name)
ALGOS: dict[str, tuple[str | None, str]] = {
    "random+full": ("random", "full"), "random+hyperband": ("random", "hyperband"), "random+asha": ("random", "asha"),
    "tpe+full": ("tpe", "full"), "tpe+hyperband": ("tpe", "hyperband"),
    "local-search+full": ("local-search", "full"),
    "ma2ml+full": ("ma2ml", "full"), "ma2ml+hyperband": ("ma2ml", "hyperband"), "ma2ml+asha": ("ma2ml", "asha"),
    "optuna-hyperband": (None, "optuna-hyperband"), "optuna-sh": (None, "optuna-sh"),
    "syne-asha": (None, "syne-asha"), "syne-bohb": (None, "syne-bohb"), "smac-mf": (None, "smac-mf"),
}
#: peers' settings that differ from their libraries' defaults (SMAC's acquisition maximiser scores 10,000
#: random configurations per ask by default, about 10 s each here: 1,000 keeps it within the CPU budget)
PEER_KWARGS: dict[str, dict[str, Any]] = {"smac-mf": {"challengers": 1000}}
#: the reported times, as fractions of the cells' time budget (see the module docstring)
FRACTIONS = (0.1, 0.2, 0.5, 1.0)


def cell_path(out: Path, task: str, algo: str, workers: int, seed: int) -> Path:
    return out / "raw" / task / f"{algo}-w{workers}" / f"seed{seed}.json.gz"


#: the analytic surrogate's task id in the preset (its learning-curve model: rewards/surrogate_curves.py)
SURROGATE = "surrogate"


def task_env(task: str, folder: str) -> tuple[Any, float, float, float]:
    """``(env, optimum, median, median full-training seconds)`` of a task: an LCBench table's own
    figures, or for the surrogate its exact optimum and the median over 5,000 seeded random pipelines."""
    import ma2ml_env

    if task != SURROGATE:
        env = ma2ml_env.learning_curve_env(task, folder)
        ev = env.unwrapped.evaluator
        final = ev.final_accuracies
        return env, float(final.max()), float(np.median(final)), float(np.median(ev.full_costs))
    return (ma2ml_env.parallel_env(reward="surrogate"), *_surrogate_figures())


@functools.cache
def _surrogate_figures() -> tuple[float, float, float]:
    """The surrogate's ``(optimum, median, median full-training seconds)``, once per process (the exact
    optimum and 5,000 full evaluations take seconds; every surrogate cell needs the same figures)."""
    import ma2ml_env

    base = ma2ml_env.parallel_env(reward="surrogate").unwrapped
    ev = base.evaluator
    rng = np.random.default_rng(0)
    sample = np.stack([base.codec.sample(rng) for _ in range(5000)])
    full = base.evaluate(sample, np.arange(len(sample)))  # no levels: full trainings (seconds: their cost)
    return float(ev.optimum()[0]), float(np.median(ev.true_score_of(sample))), float(np.median(full.seconds))


def make_search(algo: str, seed: int) -> tuple[Any, Any]:
    """``(algorithm, scheduler)`` of an :data:`ALGOS` label, for ``run(algorithm, env, ..., scheduler=)``: a
    registered algorithm under one of our schedulers, or a peer (its own sampler and stopping rule)."""
    name, sched = ALGOS[algo]
    if name is None:
        from agents.peers import make_peer

        peer = make_peer(sched, seed=seed, **PEER_KWARGS.get(sched, {}))
        return peer.algorithm, peer
    from agents.registry import make_algorithm
    from agents.schedulers import make_scheduler

    return make_algorithm(name), make_scheduler(sched)


def run_cell(out: str, folder: str, task: str, algo: str, workers: int, seed: int, budget: int,
             batch_size: int) -> str:
    """Run one cell and write its JSON file atomically."""
    import torch

    torch.set_num_threads(1)
    from agents.base import run

    env, optimum, median, median_full = task_env(task, folder)
    ev = env.unwrapped.evaluator
    algorithm, scheduler = make_search(algo, seed)
    t0 = time.perf_counter()
    # every search gets the same GPU time: `budget` median full trainings (W workers share it)
    result = run(algorithm, env, budget=10**6, seed=seed, batch_size=batch_size, scheduler=scheduler,
                 workers=workers, budget_seconds=budget * median_full / workers)
    trials = sorted(result.trials, key=lambda t: (t.clock, t.index))
    record = dict(
        task=task, algo=algo, workers=workers, seed=seed, budget=budget, batch_size=batch_size,
        wall_seconds=time.perf_counter() - t0, optimum=optimum, median=median, median_full_seconds=median_full,
        clock=[round(t.clock, 3) for t in trials], level=[t.level for t in trials],
        score=[round(t.score, 6) for t in trials],
        true_final=np.round(ev.true_score_of(np.array([t.action for t in trials], dtype=np.int64)), 6).tolist(),
    )
    # six decimals (the tables' own precision is lower), gzipped: a cell holds every result of the search
    return str(write_atomic(cell_path(Path(out), task, algo, workers, seed),
                            gzip.compress(json.dumps(record).encode(), mtime=0)))


def regret_curve(rec: dict, times: np.ndarray) -> np.ndarray:
    """Normalised regret of the incumbent at each time (in median full trainings of GPU time)."""
    clock = np.asarray(rec["clock"]) * rec["workers"] / rec["median_full_seconds"]
    level, score, true = np.asarray(rec["level"]), np.asarray(rec["score"]), np.asarray(rec["true_final"])
    out = np.ones(len(times))
    best_key, best_true = (-1, -np.inf), np.nan
    k = 0
    for j, t in enumerate(times):
        while k < len(clock) and clock[k] <= t:
            key = (level[k], score[k])
            if key > best_key:
                best_key, best_true = key, true[k]
            k += 1
        if np.isfinite(best_true):
            out[j] = (rec["optimum"] - best_true) / (rec["optimum"] - rec["median"])
    return out


def load(out: Path) -> dict[tuple[str, int], list[dict]]:
    cells: dict[tuple[str, int], list[dict]] = {}
    for p in sorted((out / "raw").glob("*/*/seed*.json.gz")):
        rec = json.loads(gzip.decompress(p.read_bytes()))
        cells.setdefault((rec["algo"], rec["workers"]), []).append(rec)
    return cells


def report(out: Path) -> Path:
    """``OUT/REPORT-mf.md`` and its figures (``regret-vs-time-w<W>.png``, ``regret-vs-time-surrogate-w<W>.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    every = load(out)
    lines = ["# Multi-fidelity benchmark: regret against simulated GPU time", "",
             "Generated by `python benchmarks/suite_mf.py report`. Tasks: the LCBench learning curves (recorded) "
             "and the analytic surrogate (its learning-curve model), reported apart. Time: GPU-seconds spent, in "
             "median full trainings of the task (W workers x simulated seconds / median full-training time). "
             "Regret: normalised regret of the incumbent's final accuracy (0: the task's best, 1: its median). "
             "Mean over tasks x seeds, 95% bootstrap interval over (task, seed) cells.", ""]
    families = {"LCBench": lambda t: t != SURROGATE, "surrogate": lambda t: t == SURROGATE}
    for family, member in families.items():
        for w in sorted({w for _, w in every}):
            cells = {k: [r for r in v if member(r["task"])] for k, v in every.items() if k[1] == w}
            algos = sorted(a for a, _ in cells if cells[(a, w)])
            if not algos:
                continue
            lines += _report_table(out, cells, algos, w, family)
    path = out / "REPORT-mf.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _report_table(out: Path, cells: dict, algos: list[str], w: int, family: str) -> list[str]:
    """One (task family, W) section of the report, with its figure."""
    import matplotlib.pyplot as plt

    budget = min(r["budget"] for a in algos for r in cells[(a, w)])
    grid = np.geomspace(1, budget, 60)
    # only the (task, seed) cells every algorithm has: the means compare like with like
    common = set.intersection(*({(r["task"], r["seed"]) for r in cells[(a, w)]} for a in algos))
    cells = {(a, w): [r for r in cells[(a, w)] if (r["task"], r["seed"]) in common] for a in algos}
    curves = {a: np.array([regret_curve(r, grid) for r in cells[(a, w)]]) for a in algos}
    times = [f * budget for f in FRACTIONS]
    at = {a: np.array([regret_curve(r, np.array(times, dtype=float)) for r in cells[(a, w)]]) for a in algos}
    n = {a: len(cells[(a, w)]) for a in algos}
    lines = [f"## {family}, W = {w} simulated workers", "",
             "| algorithm | cells | " + " | ".join(f"regret @ {t:g}" for t in times) + " | time to reach best "
             "peer's final |", "|---|---|" + "---|" * (len(times) + 1)]
    peers = [a for a in algos if ALGOS[a][0] is None]
    best_peer = min(peers, key=lambda a: curves[a][:, -1].mean()) if peers else None
    target = curves[best_peer].mean(0)[-1] if best_peer else None
    for a in sorted(algos, key=lambda a: at[a][:, -1].mean()):
        cis = (bootstrap_ci(at[a][:, j]) for j in range(len(times)))
        cols = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in cis]
        reach = "-"
        if target is not None:
            mean = curves[a].mean(0)
            hit = np.flatnonzero(mean <= target + 1e-12)
            reach = f"{grid[hit[0]]:.1f}" if len(hit) else "not reached"
        lines.append(f"| {a} | {n[a]} | " + " | ".join(cols) + f" | {reach} |")
    if best_peer:
        lines += ["", f"Best peer at the end: `{best_peer}` (final mean regret {target:.3f})."]
    lines += _target_lines(algos, at, times, curves, grid, best_peer, target)
    lines.append("")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for a in algos:
        ax.plot(grid, curves[a].mean(0), label=a, ls="--" if ALGOS[a][0] is None else "-")
    ax.set_xscale("log")
    ax.set_xlabel("GPU time (median full trainings)")
    ax.set_ylabel("normalised regret (mean)")
    ax.set_title(f"{family}, W = {w}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    name = f"regret-vs-time-w{w}.png" if family == "LCBench" else f"regret-vs-time-{family}-w{w}.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return [*lines, f"![regret vs time, {family}, W={w}]({name})", ""]


def _target_lines(algos: list[str], at: dict, times: list[float], curves: dict, grid: np.ndarray,
                  best_peer: str | None, target: float | None) -> list[str]:
    """The issue's target for MA2ML under multi-fidelity, said plainly: the lowest mean regret at every
    reported time, and the best peer's final regret in at most half that peer's time; by how much it misses."""
    ours = [a for a in algos if a.startswith("ma2ml+") and not a.endswith("+full")]
    out = []
    for a in ours:
        gaps = []
        for j, t in enumerate(times):
            lowest = min(algos, key=lambda b: at[b][:, j].mean())
            m, low = at[a][:, j].mean(), at[lowest][:, j].mean()
            gaps.append(f"@{t:g}: lowest ({m:.3f})" if lowest == a else
                        f"@{t:g}: {m:.3f} vs {low:.3f} (`{lowest}`, +{m - low:.3f})")
        out.append(f"- `{a}` lowest at every time? " + "; ".join(gaps) + ".")
        if best_peer is not None and target is not None:
            peer_hit = np.flatnonzero(curves[best_peer].mean(0) <= target + 1e-12)
            hit = np.flatnonzero(curves[a].mean(0) <= target + 1e-12)
            peer_t = grid[peer_hit[0]]
            if len(hit):
                out.append(f"  Reaches `{best_peer}`'s final regret ({target:.3f}) at {grid[hit[0]]:.1f}, "
                           f"{grid[hit[0]] / peer_t:.2f}x the peer's {peer_t:.1f} (target: <= 0.5x).")
            else:
                out.append(f"  Does not reach `{best_peer}`'s final regret ({target:.3f}) within the budget "
                           f"(its own final: {curves[a].mean(0)[-1]:.3f}; target: by {0.5 * peer_t:.1f}).")
    return ["", "Target (MA2ML under multi-fidelity):", *out] if out else []


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "report"])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mf")
    p.add_argument("--curves-folder", type=Path, default=DEFAULT_FOLDER)
    p.add_argument("--tasks", nargs="*", default=None,
                   help=f"task ids (default: every table in the folder and {SURROGATE!r})")
    p.add_argument("--algos", nargs="*", default=list(ALGOS), choices=list(ALGOS))
    p.add_argument("--workers", nargs="*", type=int, default=[4])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--budget", type=int, default=100,
                   help="GPU time of each search, in median full trainings of the task (default: 100)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--jobs", type=int, default=1)
    a = p.parse_args(argv)
    if a.command == "report":
        print(report(a.out))
        return
    import ma2ml_env

    tasks = a.tasks or [*ma2ml_env.learning_curve_tasks(a.curves_folder), SURROGATE]
    todo = [(str(a.out), str(a.curves_folder), t, al, w, s, a.budget, a.batch_size)
            for s in range(a.seeds) for t in tasks for al in a.algos for w in a.workers  # seed by seed
            if not cell_path(a.out, t, al, w, s).exists()]
    print(f"running {len(todo)} cells", flush=True)
    with cf.ProcessPoolExecutor(a.jobs) as pool:
        futures = {pool.submit(run_cell, *c): c for c in todo}
        for i, f in enumerate(cf.as_completed(futures)):
            c = futures[f]
            try:
                f.result()
                print(f"[{i + 1}/{len(todo)}] {c[2]} {c[3]} w{c[4]} seed {c[5]}", flush=True)
            except Exception as exc:  # noqa: BLE001 - a missing peer library must not stop the others
                print(f"[{i + 1}/{len(todo)}] {c[2]} {c[3]} w{c[4]} seed {c[5]} FAILED: {exc}", flush=True)


if __name__ == "__main__":
    main()
