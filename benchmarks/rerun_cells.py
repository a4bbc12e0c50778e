"""Rerun recorded cells of ``benchmarks/results/raw`` and check that they come out the same, bit for bit.

A recorded cell (task, algorithm, seed) is rerun with ``suite.run_cell`` (same budget and batch size) into a
scratch folder, and every field that says what the search did is compared with the recorded file: the
scores, statuses and (simulated or recorded) costs of every evaluation, the best joint action, the true
scores, the task's optimum, and the final pick's test accuracy where there is one. One line per cell,
``same`` or ``DIFF`` with what differs, then a summary; the exit status is 1 if any cell differs.

    python benchmarks/rerun_cells.py --out /tmp/rerun                     # the default selection
    python benchmarks/rerun_cells.py --out /tmp/rerun --algos ma2ml,ma2ml-paper --tasks surrogate --seeds 0,1
    python benchmarks/rerun_cells.py --out /tmp/b --results /tmp/a    # compare with an earlier rerun

The default selection (also of the algorithms named in --algos when neither --tasks nor --seeds is given):
for every recorded algorithm, on the surrogate tasks and on the tabular tasks, the recorded cell that was
quickest to run (its ``wall_seconds``), seed 0 where recorded: at least two cells per algorithm (43 cells
in all), every MA2ML variant included. Otherwise every recorded cell of the named algorithms, tasks and
seeds. Real-training tasks (``train-*``) run only when named in --tasks.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import sys
from pathlib import Path
from typing import Any

# the suite's files, and this checkout's packages before any installed copy, however this file is loaded
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import suite

RESULTS = suite.ROOT / "benchmarks" / "results"

#: compared exactly; "seconds" only where it is simulated or recorded (not on real-training tasks)
FIELDS = ("budget", "batch_size", "optimum", "scores", "statuses", "seconds", "best_actions", "true_scores",
          "final")


def _family(task: str) -> str:
    return "tabular" if task in suite.TABULAR_TASKS else "train" if task.startswith("train-") else "surrogate"


def recorded_cells(results: Path) -> list[tuple[str, str, int, Path]]:
    """Every recorded cell under ``results/raw``: (task, algorithm, seed, path)."""
    out = []
    for p in sorted((results / "raw").glob("*/*/seed*.json")):
        out.append((p.parent.parent.name, p.parent.name, int(p.stem[len("seed"):]), p))
    return out


def default_selection(cells: list[tuple[str, str, int, Path]]) -> list[tuple[str, str, int, Path]]:
    """Per (algorithm, surrogate / tabular): the quickest recorded cell, preferring seed 0."""
    best: dict[tuple[str, str], tuple[tuple[int, float, str], tuple[str, str, int, Path]]] = {}
    for cell in cells:
        task, algo, seed, path = cell
        fam = _family(task)
        if fam == "train":
            continue
        key = (0 if seed == 0 else 1, float(json.loads(path.read_text())["wall_seconds"]), task)
        if (algo, fam) not in best or key < best[(algo, fam)][0]:
            best[(algo, fam)] = (key, cell)
    return sorted((c for _, c in best.values()), key=lambda c: (c[1], _family(c[0]), c[0]))


def _first_diff(a: Any, b: Any) -> str:
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"length {len(a)} vs {len(b)}"
        bad = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        return f"{len(bad)} of {len(a)} differ, first at {bad[0]}: {a[bad[0]]!r} vs {b[bad[0]]!r}"
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        return "keys " + ", ".join(f"{k} ({a.get(k)!r} vs {b.get(k)!r})" for k in keys[:3])
    return f"{a!r} vs {b!r}"


def compare(recorded: dict, rerun: dict) -> list[str]:
    """What differs between a recorded cell and its rerun (empty: the same)."""
    diffs = []
    for f in FIELDS:
        if f == "seconds" and _family(recorded["task"]) == "train":
            continue
        if f == "final":
            a, b = (r.get("final", {}).get("test_accuracy") for r in (recorded, rerun))
        else:
            a, b = recorded.get(f), rerun.get(f)
        if a != b:
            diffs.append(f"{f}: {_first_diff(a, b)}")
    return diffs


def rerun(out: str, cell: tuple[str, str, int, Path]) -> tuple[tuple[str, str, int, Path], list[str]]:
    task, algo, seed, path = cell
    rec = json.loads(path.read_text())
    new = json.loads(Path(suite.run_cell(out, task, algo, seed, rec["budget"], rec["batch_size"])).read_text())
    return cell, compare(rec, new)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="scratch folder for the rerun cells")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the recorded cells are (its raw/)")
    p.add_argument("--algos", help="comma-separated algorithms (default: every recorded one)")
    p.add_argument("--tasks", help="comma-separated tasks (default: every recorded surrogate and tabular task)")
    p.add_argument("--seeds", help="comma-separated seeds (default: every recorded seed)")
    p.add_argument("--jobs", type=int, default=1, help="cells rerun in parallel processes (default 1)")
    args = p.parse_args(argv)
    if args.out.resolve() == args.results.resolve():
        p.error("--out must be a scratch folder, not the recorded results (they would be overwritten)")
    cells = recorded_cells(args.results)
    if not cells:
        p.error(f"no recorded cells under {args.results / 'raw'}")
    algos = set(args.algos.split(",")) if args.algos else None
    tasks = set(args.tasks.split(",")) if args.tasks else None
    seeds = {int(s) for s in args.seeds.split(",")} if args.seeds else None
    unknown = sorted((algos or set()) - {c[1] for c in cells}) + sorted((tasks or set()) - {c[0] for c in cells})
    if unknown:
        p.error(f"no recorded cells of {unknown}")
    cells = [c for c in cells if (algos is None or c[1] in algos) and (seeds is None or c[2] in seeds)
             and (c[0] in tasks if tasks is not None else _family(c[0]) != "train")]
    if tasks is None and seeds is None:  # only algorithms named: the default selection of those
        cells = default_selection(cells)
    if not cells:
        p.error("the selection has no recorded cells")
    out, n_diff = str(args.out), 0
    if args.jobs <= 1:
        results = (rerun(out, c) for c in cells)
    else:
        pool = cf.ProcessPoolExecutor(args.jobs)
        results = (f.result() for f in [pool.submit(rerun, out, c) for c in cells])
    for (task, algo, seed, _), diffs in results:
        n_diff += bool(diffs)
        label = f"{task} {algo} seed{seed}"
        print(f"DIFF {label}: " + "; ".join(diffs) if diffs else f"same {label}", flush=True)
    print(f"{len(cells)} cells rerun: {len(cells) - n_diff} the same, {n_diff} different")
    return 1 if n_diff else 0


if __name__ == "__main__":
    sys.exit(main())
