"""``ma2ml report``: best-so-far curves and a results table of one or several search runs.

    ma2ml report runs/tpe-surrogate-seed0                          # writes report.md/.png into that run
    ma2ml report runs/tpe-* runs/random-* --out reports/tpe-vs-random --x seconds

A run folder is what ``ma2ml search --out RUN_DIR`` wrote. Its trials are read from its SQLite store
(``search.db``, the source of truth: the trials of the rounds that completed) when present, else from
``trials.jsonl``. :func:`report` writes ``report.md`` (one row per run, plus a mean ± std row for every
algorithm given with several runs on one task) and ``report.png`` (the best-so-far score of every run,
against the evaluation count or the cumulative evaluation seconds), both replaced if present.
matplotlib is imported only to draw the figure; without it the Markdown is still written.

Run folders are read by :mod:`agents.cli.runs` (read-only: a read-only run folder can be reported on).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.base import Trial, best_trial
from agents.cli.args import PROG, UsageError
from agents.cli.runs import RunData, read_run
from ma2ml_env import SUCCESS_STATUSES

__all__ = ["RunData", "add_report_command", "read_run", "report", "report_rows"]

#: statuses that are not failures (an over-budget pipeline was rejected by design, not broken)
MATPLOTLIB_HINT = 'pip install "ma2ml[bench]"'
NOTES = ("Best score: the highest score of the run (the earliest trial on ties); failures: evaluations whose "
         "status is not ok or over_budget; eval seconds: the sum of the evaluations' seconds. "
         "Mean ± std rows: mean over the runs of one algorithm on one task, sample std of the best score.")


# ---------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------
def _names(runs: Sequence[RunData]) -> list[str]:
    """The folder names, or the paths as given where two folders share a name."""
    base = [r.path.name or str(r.path) for r in runs]
    return [str(r.path) if base.count(b) > 1 else b for r, b in zip(runs, base)]


def report_rows(runs: Sequence[RunData]) -> list[dict[str, Any]]:
    """One dict per run: ``name, algorithm, task, seed, evaluations, best_score, best_trial, failures,
    seconds`` (the sum of the evaluations' seconds)."""
    rows = []
    for run, name in zip(runs, _names(runs)):
        best = best_trial(run.trials)
        rows.append({
            "name": name, "algorithm": str(run.config.get("algorithm", "?")), "task": run.task,
            "seed": run.config.get("seed"), "evaluations": len(run.trials), "best_score": float(best.score),
            "best_trial": best.index,
            "failures": sum(t.status not in SUCCESS_STATUSES for t in run.trials),
            "seconds": float(sum(t.seconds for t in run.trials if math.isfinite(t.seconds))),
        })
    return rows


def group_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For every (algorithm, task) given with two runs or more: the mean of each number over its runs and
    the sample standard deviation (``ddof=1``) of the best score."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["algorithm"], r["task"]), []).append(r)
    out = []
    for (algo, task), members in groups.items():
        if len(members) < 2:
            continue
        best = [m["best_score"] for m in members]
        out.append({
            "algorithm": algo, "task": task, "runs": len(members), "seeds": [m["seed"] for m in members],
            "budgets": sorted({m["evaluations"] for m in members}),
            "evaluations": statistics.fmean(m["evaluations"] for m in members),
            "best_score": statistics.fmean(best), "best_score_std": statistics.stdev(best),
            "failures": statistics.fmean(m["failures"] for m in members),
            "seconds": statistics.fmean(m["seconds"] for m in members),
        })
    return out


def budget_warnings(groups: Sequence[dict[str, Any]]) -> list[str]:
    """One warning per mean ± std row whose runs hold different numbers of evaluations (a mean over
    searches of different budgets mixes unequal things)."""
    return [f"warning: the {g['runs']} runs of {g['algorithm']} on {g['task']} have different budgets "
            f"({', '.join(map(str, g['budgets']))} evaluations); their mean ± std row averages unequal searches: "
            "report runs of one budget together" for g in groups if len(g["budgets"]) > 1]


_HEADER = ("run", "algorithm", "reward/benchmark", "seed", "evaluations", "best score", "best trial",
           "failures", "eval seconds")


def _g(x: float) -> str:
    return f"{x:g}" if float(x).is_integer() else f"{x:.1f}"


def markdown_table(rows: Sequence[dict[str, Any]], groups: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "|".join("---" for _ in _HEADER) + "|"]
    for r in rows:
        cells = (r["name"], r["algorithm"], r["task"], r["seed"], r["evaluations"], f"{r['best_score']:.4f}",
                 r["best_trial"], r["failures"], f"{r['seconds']:.1f}")
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    for g in groups:
        cells = (f"**mean ± std ({g['runs']} runs)**", g["algorithm"], g["task"],
                 ",".join(map(str, g["seeds"])), _g(g["evaluations"]),
                 f"{g['best_score']:.4f} ± {g['best_score_std']:.4f}", "", _g(g["failures"]),
                 f"{g['seconds']:.1f}")
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# The figure
# ---------------------------------------------------------------------------------------------------
def best_so_far_curve(trials: Sequence[Trial], x: str = "trials") -> tuple[list[float], list[float]]:
    """``(xs, best score so far)`` of trials in index order; ``x`` is ``"trials"`` (1, 2, ...) or
    ``"seconds"`` (cumulative evaluation seconds; with parallel evaluation more than the wall time)."""
    if x not in ("trials", "seconds"):
        raise ValueError(f"x must be 'trials' or 'seconds', got {x!r}")
    xs, ys, best, elapsed = [], [], -math.inf, 0.0
    for n, t in enumerate(trials, 1):
        best = max(best, t.score)
        elapsed += t.seconds if math.isfinite(t.seconds) else 0.0
        xs.append(float(n) if x == "trials" else elapsed)
        ys.append(best)
    return xs, ys


def _plot(runs: Sequence[RunData], names: Sequence[str], path: Path, x: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    try:
        for run, name in zip(runs, names):
            xs, ys = best_so_far_curve(run.trials, x)
            ax.step(xs, ys, where="post", label=f"{name} ({run.config.get('algorithm', '?')})")
        ax.set_xlabel("evaluations" if x == "trials" else "cumulative evaluation seconds")
        ax.set_ylabel("best score so far")
        ax.set_title("best-so-far score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------------
# Library entry point and command
# ---------------------------------------------------------------------------------------------------
def report(run_dirs: Sequence[str | Path], out: str | Path, x: str = "trials",
           quiet: bool = False) -> dict[str, Path]:
    """Write ``report.md`` and ``report.png`` for ``run_dirs`` into the folder ``out`` (created if missing;
    nothing else is written) and print the table (unless ``quiet``).

    Returns:
        ``{"markdown": path, "png": path}``; without matplotlib ``"png"`` is absent (a note naming
        ``pip install "ma2ml[bench]"`` goes to stderr).

    Raises:
        UsageError: no run given, a folder that is not a run, a run without completed trials, ``out`` is
            a file, or a bad ``x`` (all checked before anything is written).
    """
    if not run_dirs:
        raise UsageError("give at least one run folder")
    if x not in ("trials", "seconds"):
        raise UsageError(f"--x must be trials or seconds, got {x!r}")
    runs = [read_run(d) for d in run_dirs]
    empty = [str(r.path) for r in runs if not r.trials]
    if empty:
        raise UsageError(f"no completed trial yet in {', '.join(empty)}: nothing to report")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file, not a folder")
    if out.is_dir() and not os.access(out, os.W_OK):
        raise UsageError(f"cannot write the report into {str(out)!r}: the folder is read-only; give --out DIR, a "
                         "folder to write report.md and report.png into")
    rows = report_rows(runs)
    groups = group_rows(rows)
    table = markdown_table(rows, groups)
    warnings = budget_warnings(groups)

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the report folder {str(out)!r}: {exc.strerror}") from None
    written: dict[str, Path] = {}
    png = out / "report.png"
    try:
        _plot(runs, [r["name"] for r in rows], png, x)
        written["png"] = png
    except ImportError:
        print(f"report.png not written: matplotlib is not installed ({MATPLOTLIB_HINT})", file=sys.stderr)
    sources = "\n".join(f"- {r['name']}: {run.source}" for r, run in zip(rows, runs))
    md = ["# Search report", "", table, "", *(f"**{w}**\n" for w in warnings)]
    if "png" in written:
        what = "evaluations" if x == "trials" else "evaluation seconds"
        md += [f"![best score so far against {what}]({png.name})", ""]
    md += [NOTES, "", "Trials read from:", sources, ""]
    written["markdown"] = out / "report.md"
    written["markdown"].write_text("\n".join(md), encoding="utf-8")
    for w in warnings:
        print(f"{PROG} report: {w}", file=sys.stderr)
    if not quiet:
        print(table)
        print(f"wrote {', '.join(str(p) for p in written.values())}")
    return {k: written[k] for k in ("markdown", "png") if k in written}


def cmd_report(args: argparse.Namespace) -> int:
    out = args.out
    if out is None:
        if len(args.RUN_DIR) > 1:
            raise UsageError("several runs: give --out DIR, the folder to write report.md and report.png "
                             "into")
        out = args.RUN_DIR[0]
    report(args.RUN_DIR, out, x=args.x)
    return 0


def add_report_command(sub: Any) -> argparse.ArgumentParser:
    """Register ``ma2ml report`` on the CLI's subparsers."""
    from agents.cli.args import HelpFormatter

    p = sub.add_parser(
        "report", formatter_class=HelpFormatter, help="best-so-far curves and a results table of search runs",
        description="Write report.md (one row per run: algorithm, reward/benchmark, seed, evaluations, best "
                    "score, trial of the best, failures, evaluation seconds; a mean ± std row for each "
                    "algorithm given with several runs on one task) and report.png (best-so-far curves; "
                    "needs matplotlib) into --out, and print the table. Trials are read from each run's "
                    "search.db, else its trials.jsonl.",
        epilog="examples:\n"
               "  ma2ml report runs/tpe-surrogate-seed0\n"
               "  ma2ml report runs/tpe-surrogate-seed* runs/random-surrogate-seed* --out reports/cmp "
               "--x seconds",
    )
    p.add_argument("RUN_DIR", nargs="+",
                   help="folders written by `ma2ml search --out` (no default: at least one is required)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder to write report.md and report.png into, created if missing; files there "
                        "are replaced (default: the RUN_DIR when one is given; required with several)")
    p.add_argument("--x", choices=("trials", "seconds"), default="trials",
                   help="x axis of the curves: evaluations, or cumulative evaluation seconds "
                        "(default: trials)")
    p.set_defaults(func=cmd_report, command_parser=p)
    return p
