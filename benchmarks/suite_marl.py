"""The suite's results the way the MARL community reports them (issue 22, part 3), written by
``python benchmarks/suite.py report`` from the recorded cells:

- ``OUT/marl-eval/<family>.json``: marl-eval raw data (``env -> task -> algorithm -> run_<i> -> step_<k>
  {step_count, metric: [value]}`` plus ``absolute_metrics``), one file per task family (``nb201``, ``fcnet``,
  ``hpobench``, ``surrogate``, ``train``; the family is marl-eval's ``env``). ``step_count`` = evaluations,
  every 10 up to the budget; metrics: ``score``, the best-so-far observed score, and on the tabular tasks
  ``normalised_regret`` (``suite_report.regret_curve``; lower is better). marl-eval needs every algorithm on
  the same tasks, runs and steps, so a family's file holds only the algorithms with cells on all its tasks
  for the same seeds; the report says what was left out.
- the report's "MARL community aggregates" section: over the real tabular tasks, per algorithm, the IQM and
  optimality gap of the score ``1 - normalised regret`` with stratified-bootstrap intervals, the probability
  that MA2ML improves on it, and performance profiles (``performance-profiles.png``), all computed by
  ``agents/aggregates.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from suite_tables import ALGORITHMS, TABULAR_TASKS, TASKS, write_atomic

from agents.aggregates import (
    interval,
    iqm,
    marl_eval_json,
    optimality_gap,
    performance_profile,
    probability_of_improvement,
)

FAMILIES = ("nb201", "fcnet", "hpobench", "surrogate", "train")
REFERENCE = "ma2ml"  # the algorithm whose probability of improvement over every other is reported
REPS = 2000  # stratified-bootstrap draws per interval


# -- normalised regret (the real tabular tasks) ----------------------------------------------------------
def load_table_for(task: str) -> Any:
    """The recorded table of a tabular suite task."""
    from ma2ml_env.rewards.tabular import load_table

    return load_table(TASKS[task].benchmark)


def incumbents(scores: list[float] | np.ndarray) -> np.ndarray:
    """Index of the incumbent (the first best observed trial, as ``np.argmax``) after each evaluation."""
    s = np.asarray(scores, dtype=float)
    record = s > np.concatenate([[-np.inf], np.maximum.accumulate(s)[:-1]])  # a strictly better trial
    return np.maximum.accumulate(np.where(record, np.arange(len(s)), 0))


def regret_curve(rec: dict, table: Any) -> np.ndarray:
    """Normalised regret of the incumbent after each evaluation (1, 2, ..., budget), by its seed-mean (true)
    score: 0 = the task's optimum, 1 = a median configuration of the table."""
    true = np.asarray(rec["true_scores"], dtype=float)[incumbents(rec["scores"])]
    return (rec["optimum"] - true) / (rec["optimum"] - table.median_score)


def normalised_regret(rec: dict, table: Any, upto: int) -> float:
    """Normalised regret of the incumbent after ``upto`` evaluations (:func:`regret_curve`)."""
    return float(regret_curve(rec, table)[upto - 1])


# -- marl-eval raw data -----------------------------------------------------------------------------------
def family(task: str) -> str | None:
    """The marl-eval ``env`` of a suite task: its tabular benchmark family, ``train`` or ``surrogate``."""
    spec = TASKS.get(task)
    if spec is None:
        return None
    if spec.benchmark is not None:
        return spec.benchmark.split("/")[0]
    return "train" if spec.env_kwargs.get("reward") == "train" else "surrogate"


def _algo_order(names: set[str]) -> list[str]:
    return [a for a in ALGORITHMS if a in names] + sorted(names - set(ALGORITHMS))


def complete_set(cells: dict[tuple[str, str], list[dict]], tasks: list[str],
                 ) -> tuple[list[str], list[int], list[str]]:
    """The algorithms comparable on ``tasks`` as marl-eval requires (same tasks, same runs): those with cells
    on every task for at least the seed set most of them share (ties: the larger set). Returns the
    algorithms, the seeds (sorted) and, for each algorithm with some cells but left out, why."""
    names = {a for t, a in cells if t in tasks}
    common: dict[str, frozenset[int]] = {}
    left = []
    for a in _algo_order(names):
        missing = [t for t in tasks if (t, a) not in cells]
        if missing:
            left.append(f"{a} (no cells on {', '.join(missing)})")
            continue
        common[a] = frozenset.intersection(*(frozenset(r["seed"] for r in cells[(t, a)]) for t in tasks))
    sets = [s for s in common.values() if s]
    if not sets:
        return [], [], left + [f"{a} (no seed on every task)" for a in common]
    seeds = max(set(sets), key=lambda s: (sets.count(s), len(s), sorted(s)))
    algos = [a for a, s in common.items() if s >= seeds]
    left += [f"{a} (seeds {sorted(s)} on every task, not all of {sorted(seeds)})"
             for a, s in common.items() if not s >= seeds]
    return algos, sorted(seeds), left


def steps_grid(budget: int, every: int = 10) -> list[int]:
    """The evaluation counts reported: every ``every`` up to ``budget``, and the budget itself."""
    steps = list(range(every, budget + 1, every))
    return steps if steps and steps[-1] == budget else [*steps, budget]


def _runs(cells: dict, task: str, algo: str, seeds: list[int]) -> list[dict]:
    by_seed = {r["seed"]: r for r in cells[(task, algo)]}
    return [by_seed[s] for s in seeds]


def _metrics(rec: dict) -> dict[str, np.ndarray]:
    out = {"score": np.maximum.accumulate(np.asarray(rec["scores"], dtype=float))}
    if rec["task"] in TABULAR_TASKS:
        out["normalised_regret"] = regret_curve(rec, load_table_for(rec["task"]))
    return out


def write_marl_eval(out: Path, cells: dict[tuple[str, str], list[dict]]) -> list[str]:
    """Write ``OUT/marl-eval/<family>.json`` for every family with cells; return the report's lines on them."""
    lines = []
    for fam in FAMILIES:
        tasks = [t for t in TASKS if family(t) == fam and any(tt == t for tt, _ in cells)]
        if not tasks:
            continue
        algos, seeds, left = complete_set(cells, tasks)
        if not algos:
            lines.append(f"- `{fam}`: not written: no algorithm has cells on all its tasks for the same seeds; "
                         f"left out: {'; '.join(left)}")
            continue
        runs = {t: {a: _runs(cells, t, a, seeds) for a in algos} for t in tasks}
        budgets = sorted({len(r["scores"]) for algos_ in runs.values() for rs in algos_.values() for r in rs})
        budget = budgets[0]
        data = marl_eval_json(fam, {t: {a: [_metrics(r) for r in rs] for a, rs in algos_.items()}
                                    for t, algos_ in runs.items()}, steps_grid(budget))
        # six decimals: the recorded scores' own precision is lower, and the files stay a third of the size
        data = json.loads(json.dumps(data), parse_float=lambda x: round(float(x), 6))
        write_atomic(out / "marl-eval" / f"{fam}.json", json.dumps(data, separators=(",", ":")))
        metrics = ", ".join(f"`{m}`" for m in _metrics(runs[tasks[0]][algos[0]][0]))
        lines.append(f"- [`marl-eval/{fam}.json`](marl-eval/{fam}.json): {len(tasks)} tasks, {len(algos)} "
                     f"algorithms, {len(seeds)} runs, steps every 10 evaluations to {budget}"
                     + (f" (runs of {', '.join(map(str, budgets))} evaluations, all cut to {budget})"
                        if len(budgets) > 1 else "") + f"; {metrics}"
                     + (f"; left out: {'; '.join(left)}" if left else ""))
    return lines


def tabular_scores(cells: dict, tasks: list[str], algos: list[str], seeds: list[int],
                   upto: int) -> dict[str, np.ndarray]:
    """Per algorithm, the ``[runs, tasks]`` matrix of ``1 - normalised regret`` after ``upto`` evaluations."""
    return {a: np.array([[1.0 - regret_curve(r, load_table_for(t))[upto - 1] for t in tasks
                          for r in _runs(cells, t, a, [s])] for s in seeds]) for a in algos}


def _ci(point: float, lo_hi: tuple[Any, Any]) -> str:
    return f"{point:.3f} [{float(lo_hi[0]):.3f}, {float(lo_hi[1]):.3f}]"


def community_section(out: Path, cells: dict[tuple[str, str], list[dict]], plt: Any) -> list[str]:
    """The report's "MARL community aggregates" section (and the marl-eval files and the profile figure)."""
    files = write_marl_eval(out, cells)
    lines = ["## MARL community aggregates", ""]
    tasks = [t for t in TABULAR_TASKS if any(tt == t for tt, _ in cells)]
    algos, seeds, left = complete_set(cells, tasks) if tasks else ([], [], [])
    if algos:
        budget = min(len(r["scores"]) for t in tasks for a in algos for r in _runs(cells, t, a, seeds))
        marks = [b for b in (100, 200) if b <= budget] or [budget]
        scores = {m: tabular_scores(cells, tasks, algos, seeds, m) for m in marks}
        last = marks[-1]
        poi = {}
        if REFERENCE in algos:
            poi = {a: (probability_of_improvement(scores[last][REFERENCE], scores[last][a]),
                       interval(probability_of_improvement, scores[last][REFERENCE], scores[last][a], reps=REPS))
                   for a in algos if a != REFERENCE}
        lines += [
            f"Over the {len(tasks)} real tabular tasks, {len(seeds)} runs each, as Agarwal et al. (2021) and "
            "marl-eval aggregate: the score of a run is",
            "`1 - normalised regret` of its incumbent (1 = the table's optimum, 0 = a median configuration). "
            "IQM: the mean of",
            "the middle half of all runs x tasks scores; optimality gap: the mean shortfall from 1 (lower is "
            "better)" + ("; P(" + REFERENCE + " > X):" if poi else "."),
            *(["the probability that a run of MA2ML beats a run of X on the same task, averaged over tasks "
               "(0.5 = a tie)."] if poi else []),
            f"95% stratified-bootstrap intervals ({REPS} draws; runs resampled within each task). Computed by "
            "`agents/aggregates.py`.",
            "",
        ]
        head = [f"IQM @{m}" for m in marks] + [f"optimality gap @{m}" for m in marks]
        head += [f"P({REFERENCE} > X) @{last}"] if poi else []
        lines += ["| algorithm X | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
        rows = []
        for a in algos:
            cols = [_ci(iqm(scores[m][a]), interval(iqm, scores[m][a], reps=REPS)) for m in marks]
            cols += [_ci(optimality_gap(scores[m][a]), interval(optimality_gap, scores[m][a], reps=REPS))
                     for m in marks]
            if poi:
                cols.append(_ci(poi[a][0], poi[a][1]) if a in poi else "-")
            rows.append((-iqm(scores[last][a]), a, cols))
        lines += [f"| {a} | " + " | ".join(cols) + " |" for _, a, cols in sorted(rows)]
        if poi:
            better = [a for a, (_, ci) in poi.items() if ci[0] > 0.5]
            worse = [a for a, (_, ci) in poi.items() if ci[1] < 0.5]
            tied = [a for a in poi if a not in better and a not in worse]
            lines += ["", f"At {last} evaluations, MA2ML improves on (interval above 0.5): "
                      f"{', '.join(better) or 'none'}; is improved on by (interval below 0.5): "
                      f"{', '.join(worse) or 'none'}; no clear difference: {', '.join(tied) or 'none'}."]
        if left:
            lines += ["", "Left out (not on every tabular task for the same seeds): " + "; ".join(left) + "."]
        lines += ["", *_profiles(out, scores, algos, plt), ""]
    if files:
        lines += ["marl-eval raw data of every run (one file per task family, the family is marl-eval's `env`; "
                  "an algorithm is in", "a file only with cells on all its tasks for the same seeds):", "",
                  *files, ""]
    return lines if len(lines) > 2 else []


def _profiles(out: Path, scores: dict[int, dict[str, np.ndarray]], algos: list[str], plt: Any) -> list[str]:
    """Performance profiles of the preset algorithms at each mark: the fraction of runs (all tasks) whose
    score exceeds tau, with 95% stratified-bootstrap bands; written to ``performance-profiles.png``."""
    shown = [a for a in algos if a not in ALGORITHMS or ALGORITHMS[a].in_presets]
    every = np.concatenate([scores[m][a].ravel() for m in scores for a in shown])
    taus = np.linspace(min(0.5, float(np.quantile(every, 0.02))), 1.0, 101)
    fig, axes = plt.subplots(1, len(scores), figsize=(5.6 * len(scores), 4.2), squeeze=False)
    for ax, (m, by_algo) in zip(axes[0], scores.items()):
        for i, a in enumerate(shown):  # past the 10 colours of the cycle, dashed lines
            lo, hi = interval(lambda s: performance_profile(s, taus), by_algo[a], reps=REPS, vectorized=True)
            line, = ax.plot(taus, performance_profile(by_algo[a], taus), label=a, ls="-" if i < 10 else "--",
                            lw=1.8 if a.startswith("ma2ml") else 1.1)
            ax.fill_between(taus, lo, hi, alpha=0.12, color=line.get_color())
        ax.set_title(f"{m} evaluations")
        ax.set_xlabel("score tau (1 - normalised regret)")
        ax.grid(alpha=0.3)
    save_panels(fig, axes, "fraction of runs with score > tau", out / "performance-profiles.png")
    return ["Performance profiles (the preset algorithms; a curve above another is better at every threshold):",
            "", "![performance profiles](performance-profiles.png)"]


def save_panels(fig: Any, axes: Any, ylabel: str, path: Path) -> None:
    """Finish a row of panels (the y label on the first, the legend on the last) and write it as a PNG."""
    import matplotlib.pyplot as plt

    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
