"""Does MA2ML still stall between 100 and 200 evaluations at full fidelity? (DESIGN section 9)

Two measurements on the 15 recorded tabular tasks, each printed as markdown:

``regret``: normalised regret (``suite_report.normalised_regret``) at 100 and 200 evaluations of the cells
under ``--new`` (e.g. ``ma2ml-v2``) and under ``--results`` (the recorded ``ma2ml``, ``tpe``,
``local-search``): the mean over (task, seed) with a 95% bootstrap interval over seeds (as the suite's
report), and paired differences (same task, same seed) of the new variant against each recorded one with
their 95% BCa intervals (``suite_report.paired_ci``; negative = the new variant is better).

``diagnose``: reruns searches (``suite.make_env`` / ``suite.make_algo``, the cells' protocol: 200
evaluations, batches of 8; the same trials as the cells) and reports, per variant, the mean normalised
per-decision policy entropy (``H(pi_ij) / log n_ij``) after 96 and 200 evaluations, and over evaluations
101-200: the share of proposals that are the incumbent (the best observed before their round), that were
evaluated before at all, and how many decisions the others differ from the incumbent in (1 / 2-3 / 4+);
and the median evaluation at which the final best was found.

    PYTHONPATH=$PWD python benchmarks/ma2ml_stall.py regret --new benchmarks/results-ma2mlfix
    PYTHONPATH=$PWD python benchmarks/ma2ml_stall.py diagnose --algos ma2ml,ma2ml-v2 --seeds 5 --jobs 2
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import suite

MARKS = (100, 200)
DIAG_BATCH, DIAG_BUDGET, ENTROPY_AT = 8, 200, (96, 200)


# -- regret ------------------------------------------------------------------------------------------------
def regrets(out: Path, algo: str) -> dict[int, np.ndarray]:
    """Per mark: normalised regret ``[task, seed]`` of ``algo``'s cells under ``out`` (every tabular task)."""
    cells = suite.load_cells(out)
    tables = {t: suite.load_table_for(t) for t in suite.TABULAR_TASKS}
    res = {}
    for b in MARKS:
        rows = []
        for t in suite.TABULAR_TASKS:
            recs = sorted(cells.get((t, algo), []), key=lambda r: r["seed"])
            if not recs:
                raise SystemExit(f"no cells of {algo} on {t} under {out / 'raw'}")
            rows.append([suite.normalised_regret(r, tables[t], b) for r in recs])
        res[b] = np.array(rows)
    return res


def regret_report(new: Path, new_algo: str, results: Path, others: list[str]) -> list[str]:
    mine = regrets(new, new_algo)
    ref = {a: regrets(results, a) for a in others}
    every = {new_algo: mine, **ref}
    n_seeds = mine[MARKS[0]].shape[1]
    lines = [f"Normalised regret, {len(suite.TABULAR_TASKS)} tasks x {n_seeds} seeds (0 = optimum, 1 = a median "
             "configuration); mean over tasks and seeds, 95% bootstrap interval over seeds:", "",
             "| algorithm | " + " | ".join(f"@{b}" for b in MARKS) + " |", "|---|" + "---|" * len(MARKS)]
    for a, r in sorted(every.items(), key=lambda kv: kv[1][MARKS[-1]].mean()):
        cols = [suite.bootstrap_ci(r[b].mean(0)) for b in MARKS]
        lines.append(f"| {a} | " + " | ".join(f"{m:.4f} [{lo:.4f}, {hi:.4f}]" for m, lo, hi in cols) + " |")
    lines += ["", f"Paired differences {new_algo} minus each (same task, same seed; {mine[100].size} pairs; "
              f"negative = {new_algo} better), 95% BCa interval; and the ratio of the means:", "",
              "| against | " + " | ".join(f"@{b}" for b in MARKS) + " |", "|---|" + "---|" * len(MARKS)]
    for a, r in ref.items():
        cols = []
        for b in MARKS:
            m, lo, hi = suite.paired_ci((mine[b] - r[b]).ravel())
            cols.append(f"{m:+.4f} [{lo:+.4f}, {hi:+.4f}], ratio {mine[b].mean() / r[b].mean():.2f}x")
        lines.append(f"| {a} | " + " | ".join(cols) + " |")
    return lines


# -- diagnose ----------------------------------------------------------------------------------------------
def entropy(algo) -> float:
    """Mean over decisions of ``H(pi_ij) / log n_ij`` (decisions of one choice left out)."""
    ent = []
    for per_agent in algo.probabilities().values():
        for p in per_agent:
            if len(p) > 1:
                q = p[p > 0]
                ent.append(float(-(q * np.log(q)).sum() / np.log(len(p))))
    return float(np.mean(ent))


def diagnose_one(task: str, algo_name: str, seed: int) -> dict:
    from agents.base import run

    env = suite.make_env(task, seed)
    algo = suite.make_algo(algo_name)
    seen: dict[int, float] = {}
    done = [0]

    def callback(trials) -> None:
        done[0] += len(trials)
        if done[0] in ENTROPY_AT:  # algorithms without policies (TPE, local search): no entropy
            seen[done[0]] = entropy(algo) if hasattr(algo, "probabilities") else float("nan")

    result = run(algo, env, budget=DIAG_BUDGET, seed=seed, batch_size=DIAG_BATCH, callback=callback)
    env.close()
    acts = np.array([t.action for t in result.trials], dtype=np.int64)
    scores = np.array([t.score for t in result.trials])
    inc_same, dup, dist = 0, 0, []
    for start in range(100, DIAG_BUDGET, DIAG_BATCH):
        inc = acts[int(np.argmax(scores[:start]))]
        before = {row.tobytes() for row in acts[:start]}
        for row in acts[start:start + DIAG_BATCH]:
            d = int((row != inc).sum())
            inc_same += d == 0
            dup += row.tobytes() in before
            if d:
                dist.append(d)
    dist = np.array(dist)
    n = DIAG_BUDGET - 100
    return dict(task=task, algo=algo_name, seed=seed, entropy=seen, incumbent=inc_same / n, duplicate=dup / n,
                near=[float(np.mean(dist == 1)), float(np.mean((dist >= 2) & (dist <= 3))), float(np.mean(dist >= 4))]
                if len(dist) else [0.0, 0.0, 0.0], best_at=int(np.argmax(scores)) + 1)


def diagnose_report(rows: list[dict], algos: list[str]) -> list[str]:
    lines = ["| variant | entropy @96 | entropy @200 | incumbent re-proposed (101-200) | evaluated before (101-200) | "
             "others 1 / 2-3 / 4+ decisions from the incumbent | final best found at (median) |",
             "|---|---|---|---|---|---|---|"]
    for a in algos:
        rs = [r for r in rows if r["algo"] == a]
        near = np.mean([r["near"] for r in rs], axis=0)
        mean = {k: np.mean([r[k] for r in rs]) for k in ("incumbent", "duplicate")}
        lines.append(f"| {a} | {np.mean([r['entropy'][96] for r in rs]):.3f} | "
                     f"{np.mean([r['entropy'][200] for r in rs]):.3f} | {100 * mean['incumbent']:.1f}% | "
                     f"{100 * mean['duplicate']:.1f}% | "
                     + " / ".join(f"{100 * x:.0f}%" for x in near)
                     + f" | {np.median([r['best_at'] for r in rs]):.0f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["regret", "diagnose"])
    p.add_argument("--new", type=Path, help="regret: folder whose raw/ has the new variant's cells")
    p.add_argument("--new-algo", default="ma2ml-v2", help="regret: the new variant (default ma2ml-v2)")
    p.add_argument("--results", type=Path, default=suite.ROOT / "benchmarks" / "results",
                   help="regret: the recorded cells (default benchmarks/results)")
    p.add_argument("--against", default="ma2ml,tpe,local-search", help="regret: recorded variants to compare with")
    p.add_argument("--algos", default="ma2ml,ma2ml-v2", help="diagnose: variants to rerun")
    p.add_argument("--seeds", type=int, default=5, help="diagnose: seeds 0..N-1 per task (default 5)")
    p.add_argument("--jobs", type=int, default=1, help="diagnose: parallel processes (default 1)")
    args = p.parse_args(argv)
    if args.command == "regret":
        if args.new is None:
            p.error("regret needs --new (the folder of the new variant's cells)")
        print("\n".join(regret_report(args.new, args.new_algo, args.results, args.against.split(","))))
        return
    algos = args.algos.split(",")
    unknown = [a for a in algos if a not in suite.ALGORITHMS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {list(suite.ALGORITHMS)}")
    todo = [(t, a, s) for a in algos for t in suite.TABULAR_TASKS for s in range(args.seeds)]
    if args.jobs <= 1:
        rows = [diagnose_one(*c) for c in todo]
    else:
        with cf.ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(diagnose_one, *zip(*todo)))
    print(f"{len(suite.TABULAR_TASKS)} tasks x {args.seeds} seeds, {DIAG_BUDGET} evaluations, batches of "
          f"{DIAG_BATCH}:\n")
    print("\n".join(diagnose_report(rows, algos)))


if __name__ == "__main__":
    main()
