"""The benchmark suite's report: statistics over finished cells, the tables and learning curves of
``REPORT.md`` (written by ``python benchmarks/suite.py report``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from suite_marl import community_section, load_table_for, normalised_regret, save_panels
from suite_tables import ALGORITHMS, PRESETS, ROOT, TABULAR_TASKS, TASKS, TaskSpec

from agents.aggregates import interval, iqm


# -- statistics ----------------------------------------------------------------------------------------------
def _mean(s: np.ndarray) -> np.ndarray:
    return s.mean(axis=(-2, -1))  # of each draw of a stack [draws, seeds, 1]


def bootstrap_ci(x: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% percentile-bootstrap interval of the mean over seeds (``agents.aggregates.interval``
    with one task: the stratified bootstrap of a single stratum)."""
    x = np.asarray(x, dtype=float)
    if len(x) == 1:
        return float(x[0]), float(x[0]), float(x[0])
    lo, hi = interval(_mean, x[:, None], reps=n, seed=seed, vectorized=True)
    return float(x.mean()), lo, hi


def load_cells(out: Path) -> dict[tuple[str, str], list[dict]]:
    cells: dict[tuple[str, str], list[dict]] = {}
    for p in sorted((out / "raw").glob("*/*/seed*.json")):
        rec = json.loads(p.read_text())
        cells.setdefault((rec["task"], rec["algo"]), []).append(rec)
    return cells


def summarise(recs: list[dict], target: float) -> dict[str, Any]:
    curves = np.array([np.maximum.accumulate(r["scores"]) for r in recs])
    finals = curves[:, -1]
    auc = curves.mean(axis=1)
    reach = [int(np.argmax(c >= target)) + 1 if (c >= target).any() else None for c in curves]
    reached = [r for r in reach if r is not None]
    true = test = None
    if all("final" in r for r in recs):  # the final pick trained on train + validation, on the test split
        test = bootstrap_ci(np.array([r["final"]["test_accuracy"] for r in recs]))
    if all("true_scores" in r for r in recs):  # what the incumbent (best observed trial) is really worth
        true = bootstrap_ci(np.array([r["true_scores"][int(np.argmax(r["scores"]))] for r in recs]))
    return dict(
        n=len(recs), final=bootstrap_ci(finals), final_iqm=iqm(finals[:, None]), auc=bootstrap_ci(auc), true=true,
        test=test,
        reach_frac=len(reached) / len(reach), reach_median=float(np.median(reached)) if reached else None,
        wall=float(np.mean([r["wall_seconds"] for r in recs])), curves=curves,
        optimum=recs[0].get("optimum"),
    )


def tabular_section(out: Path, cells: dict[tuple[str, str], list[dict]], plt: Any) -> list[str]:
    """The real-task tables: per family, mean normalised regret at 100 / 200 evaluations (95% bootstrap
    interval over seeds of the family mean); per task, the best observed score; one figure of curves."""
    tasks = [t for t in TABULAR_TASKS if any((t, a) in cells for a in ALGORITHMS)]
    if not tasks:
        return []
    algos = [a for a in ALGORITHMS if all((t, a) in cells for t in tasks)]
    tables = {t: load_table_for(t) for t in tasks}
    budget = min(r["budget"] for t in tasks for a in algos for r in cells[(t, a)])
    marks = [b for b in (100, 200) if b <= budget] or [budget]
    families = [f for f in ("nb201", "fcnet", "hpobench") if any(TASKS[t].benchmark.startswith(f) for t in tasks)]
    n_seeds = min(len(cells[(t, a)]) for t in tasks for a in algos)
    lines = [
        "## Real tasks: recorded trainings (NAS-Bench-201, FCNet, HPOBench tabular)",
        "",
        f"{len(tasks)} tasks of `ma2ml_env.benchmark_env`, {budget} evaluations, batches of "
        f"{cells[(tasks[0], algos[0])][0]['batch_size']}, {n_seeds} seeds; each query returns one recorded training",
        "seed drawn from the evaluation seed. Normalised regret of the incumbent (the best *observed* trial), by",
        "its seed-mean (true) score: 0 = the table's optimum, 1 = a median configuration of the table; mean",
        "over the family's tasks, 95% bootstrap interval over seeds. Lower is better.",
        "",
        "| algorithm | " + " | ".join(f"{f} @{b}" for f in families for b in marks) + " |",
        "|---|" + "---|" * (len(families) * len(marks)),
    ]
    fam_curves: dict[tuple[str, str], np.ndarray] = {}
    rows = []
    for a in algos:
        cols = []
        for f in families:
            ftasks = [t for t in tasks if TASKS[t].benchmark.startswith(f)]
            for b in marks:
                per_seed = [np.mean([normalised_regret(cells[(t, a)][s], tables[t], b) for t in ftasks])
                            for s in range(n_seeds)]
                cols.append(bootstrap_ci(np.array(per_seed)))
            curve = np.array([[np.mean([normalised_regret(cells[(t, a)][s], tables[t], k) for t in ftasks])
                               for k in range(1, budget + 1, max(1, budget // 50))] for s in range(n_seeds)])
            fam_curves[(f, a)] = curve
        rows.append((a, cols))
    for a, cols in sorted(rows, key=lambda r: sum(c[0] for c in r[1])):
        lines.append(f"| {a} | " + " | ".join(_fmt(c) for c in cols) + " |")
    contenders = [a for a in algos if a not in ALGORITHMS or ALGORITHMS[a].in_presets]
    wins = dict.fromkeys(contenders, 0)
    for t in tasks:
        mean = {a: np.mean([normalised_regret(r, tables[t], budget) for r in cells[(t, a)]]) for a in contenders}
        wins[min(mean, key=mean.get)] += 1
    lines += ["", f"Tasks on which each algorithm has the lowest mean regret at {budget} evaluations (among the "
              "preset algorithms): " + ", ".join(f"{a} {w}/{len(tasks)}" for a, w in
                                              sorted(wins.items(), key=lambda kv: -kv[1]) if w)]
    lines += ["", f"Best observed score at {budget} evaluations per task (mean over seeds; optimum = best "
              "seed-mean of the table):", "",
              "| task | optimum | " + " | ".join(algos) + " |", "|---|---|" + "---|" * len(algos)]
    for t in tasks:
        opt = cells[(t, algos[0])][0]["optimum"]
        means = {a: np.mean([max(r["scores"][:budget]) for r in cells[(t, a)]]) for a in algos}
        top = max(means.values())
        lines.append(f"| {t} | {opt:.4f} | " + " | ".join(
            (f"**{means[a]:.4f}**" if means[a] == top else f"{means[a]:.4f}") for a in algos) + " |")
    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.8), squeeze=False)
    xs = np.arange(1, budget + 1, max(1, budget // 50))
    for ax, f in zip(axes[0], families):
        for a in algos:
            c = fam_curves[(f, a)]
            ax.plot(xs, c.mean(axis=0), label=a, lw=1.8 if a.startswith("ma2ml") else 1.1)
        ax.set_yscale("log")
        ax.set_title(f)
        ax.set_xlabel("evaluations")
        ax.grid(alpha=0.3)
    save_panels(fig, axes, "normalised regret (true score)", out / "curves-tabular.png")
    lines += ["", "![tabular](curves-tabular.png)", ""]
    repro = out / "nb201-repro" / "nb201-repro.md"
    if repro.exists():
        lines += [repro.read_text(), ""]
    return lines


# (A, B, question): paired comparisons of the ablation section; positive differences favour A
ABLATIONS = [
    ("ma2ml", "ma2ml-no-credit", "credit assignment on vs off"),
    ("ma2ml-fm", "ma2ml-fm-no-credit", "credit assignment on vs off (FM critic)"),
    ("ma2ml-paper", "ma2ml-paper-no-credit", "credit assignment on vs off (paper's reading)"),
    ("ma2ml", "ma2ml-on-policy", "off-policy (replay) vs on-policy"),
    ("ma2ml-paper", "ma2ml-paper-on-policy", "off-policy vs on-policy (paper's reading)"),
    ("ma2ml", "ma2ml-lite", "MA2ML vs MA2ML-Lite"),
    ("ma2ml", "separate", "joint vs module-by-module"),
    ("ma2ml", "independent", "centralised critic vs independent learners"),
    ("ma2ml", "ma2ml-paper", "redesign vs the paper's reading"),
    ("ma2ml", "ma2ml-no-screen", "critic screening on vs off"),
    ("ma2ml-fm", "ma2ml-fm-no-screen", "critic screening on vs off (FM critic)"),
    ("ma2ml", "ma2ml-fm", "MLP critic vs FM critic"),
    ("ma2ml-fm", "ma2ml-fm-gradient", "mirror step vs Adam trust-region steps (FM critic)"),
    ("ma2ml", "tpe", "MA2ML vs TPE"),
    ("ma2ml", "evolution", "MA2ML vs regularised evolution"),
    ("ma2ml", "local-search", "MA2ML vs local search"),
    ("ma2ml", "gp", "MA2ML vs GP BO"),
]


def _outcome(rec: dict, upto: int) -> float:
    """Per-run outcome, higher is better: minus the normalised regret (tabular) or the incumbent's true
    score (surrogate tasks)."""
    if rec["task"] in TABULAR_TASKS:
        return -normalised_regret(rec, load_table_for(rec["task"]), upto)
    return float(rec["true_scores"][int(np.argmax(rec["scores"][:upto]))])


def paired_ci(diffs: np.ndarray) -> tuple[float, float, float]:
    """Mean of paired differences and its 95% BCa bootstrap interval (scipy), seeded."""
    from scipy.stats import bootstrap

    diffs = np.asarray(diffs, dtype=float)
    if np.ptp(diffs) == 0:
        return float(diffs.mean()), float(diffs.mean()), float(diffs.mean())
    res = bootstrap((diffs,), np.mean, n_resamples=5000, confidence_level=0.95, method="BCa",
                    random_state=np.random.default_rng(0))
    return float(diffs.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def ablation_section(cells: dict[tuple[str, str], list[dict]]) -> list[str]:
    """Paired comparisons (same task, same seed) at 200 evaluations: on the real tabular tasks, the
    difference of normalised regret (B - A: positive = A better); on the surrogate tasks, of the incumbent's
    true score (A - B: positive = A better); mean and 95% interval over (task, seed) pairs."""
    groups = {"real tabular tasks (15)": list(TABULAR_TASKS),
              "surrogate tasks (4)": list(PRESETS["paper"]["tasks"])}
    header = "| question | A | B | " + " | ".join(groups) + " |"
    lines = ["## Ablations and head-to-head, paired", "",
             "Same task and seed for A and B, 200 evaluations. Real tasks: normalised regret of B minus that of A;",
             "surrogate tasks: true score of A's incumbent minus B's. Positive = A better; mean over (task, seed)",
             "pairs with a 95% BCa bootstrap interval (scipy). An interval that excludes 0 is a difference.", "",
             header, "|---|---|---|" + "---|" * len(groups)]
    any_row = False
    for a, b, question in ABLATIONS:
        cols = []
        for tasks in groups.values():
            diffs = []
            for t in tasks:
                if (t, a) not in cells or (t, b) not in cells:
                    diffs = []
                    break
                rb = {r["seed"]: r for r in cells[(t, b)]}
                diffs += [_outcome(r, 200) - _outcome(rb[r["seed"]], 200) for r in cells[(t, a)] if r["seed"] in rb]
            cols.append(_fmt(paired_ci(np.array(diffs))) if diffs else "-")
        if any(c != "-" for c in cols):
            any_row = True
            lines.append(f"| {question} | {a} | {b} | " + " | ".join(cols) + " |")
    return [*lines, ""] if any_row else []


def _fmt(ci: tuple[float, float, float], scale: float = 1.0) -> str:
    m, lo, hi = (v * scale for v in ci)
    return f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


def write_report(out: Path, command: str, throughput: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = load_cells(out)
    if not cells:
        raise SystemExit(f"no finished cells under {out / 'raw'}; run the suite first")
    def order_key(t: str) -> tuple[int, int]:  # real training first, then the surrogate tasks
        real = TASKS[t].env_kwargs.get("reward") == "train" if t in TASKS else False
        return (0 if real else 1, list(TASKS).index(t) if t in TASKS else 99)

    tasks = sorted({t for t, _ in cells if t not in TABULAR_TASKS}, key=order_key)
    order = [a for a in ALGORITHMS if any((t, a) in cells for t in tasks)]
    present = {t for t, _ in cells}
    def ran(cfg: dict) -> bool:  # every task of the preset has cells, and most of its algorithms ran on all
        done = [a for a in cfg["algos"] if all((t, a) in cells for t in cfg["tasks"])]
        return set(cfg["tasks"]) <= present and 2 * len(done) > len(cfg["algos"])

    presets = [name for name, cfg in PRESETS.items() if name != "smoke" and ran(cfg)]
    if presets:
        out_arg = "" if out.resolve() == (ROOT / "benchmarks" / "results").resolve() else f" --out {out}"
        runs = [f"python benchmarks/suite.py run --preset {p} --jobs 2{out_arg}" for p in presets]
        for p in presets:  # variants outside the presets that have cells for every task of one
            extra = [a for a in ALGORITHMS if not ALGORITHMS[a].in_presets
                     and not any(a in PRESETS[q]["algos"] for q in presets)
                     and all((t, a) in cells for t in PRESETS[p]["tasks"])]
            if extra:
                runs.append(f"python benchmarks/suite.py run --preset {p} --algos {','.join(extra)} --jobs 2{out_arg}")
        if (out / "surrogate-realism.md").exists():
            runs.append("python benchmarks/surrogate_realism.py" + (f" --out {out}" if out_arg else ""))
        if (out / "nb201-repro" / "nb201-repro.md").exists():
            nb201_out = f" --out {out / 'nb201-repro'}" if out_arg else ""
            runs.append("python benchmarks/nb201_repro.py --jobs 2" + nb201_out)
        command = " && ".join([*runs, command])
    lines = [
        "# Benchmark report",
        "",
        f"Reproduce with: `{command}`",
        "",
        "Per task: best score at the budget (mean and 95% bootstrap interval over seeds; IQM beside it), the",
        "area under the best-so-far curve (mean best-so-far over the budget), the fraction of seeds that",
        "reach the target and the median evaluations they need, and the mean wall time of a run. The target",
        "is random search's mean best score at the full budget, so 'evals to target' reads as how much",
        "sooner an algorithm gets there than random search.",
        "",
    ]
    lines += tabular_section(out, cells, plt)
    lines += ablation_section(cells)
    lines += community_section(out, cells, plt)
    realism = out / "surrogate-realism.md"
    if realism.exists():
        lines += [realism.read_text(), ""]
    if tasks:
        lines += ["## Real training on images, and the analytic surrogate", "",
                  "Real-training tasks: the final pick (best validation accuracy) is trained on train + validation "
                  "and tested on the test split (`train_final`).", ""]
    for task in tasks:
        recs_by_algo = {a: cells[(task, a)] for a in order if (task, a) in cells}
        any_rec = next(iter(recs_by_algo.values()))[0]
        opt = any_rec.get("optimum")
        per_seed = opt is not None and TASKS.get(task, TaskSpec({}, "")).per_seed_task
        if per_seed:  # a different optimum per seed: compare scores / optimum
            recs_by_algo = {a: [dict(r, scores=list(np.asarray(r["scores"]) / r["optimum"]),
                                     **({"true_scores": list(np.asarray(r["true_scores"]) / r["optimum"])}
                                        if "true_scores" in r else {})) for r in rs]
                            for a, rs in recs_by_algo.items()}
        # target: random search's mean best at the budget (so "evals to target" reads as a speed-up over
        # random search); without random search in the matrix, 90% of the optimum or of the best found
        if "random" in recs_by_algo:
            target = float(np.mean([max(r["scores"]) for r in recs_by_algo["random"]]))
            tdesc = f"random search's mean best at the budget, {target:.4f}"
        elif opt is not None and not per_seed:
            target, tdesc = 0.9 * opt, f"0.9 x optimum {opt:.4f}"
        else:
            best_any = max(max(r["scores"]) for rs in recs_by_algo.values() for r in rs)
            target, tdesc = 0.9 * best_any, f"0.9 x best found {best_any:.4f}"
        if opt is not None and not per_seed:
            tdesc += f"; exact optimum {opt:.4f}"
        sums = {a: summarise(rs, target) for a, rs in recs_by_algo.items()}
        budget = any_rec["budget"]
        norm = " (score / optimum)" if per_seed else ""
        final = task in TASKS and TASKS[task].final_training
        second = "test accuracy of the final pick" if final else "true score of the incumbent"
        lines += [
            f"### {task}: {TASKS[task].doc if task in TASKS else ''}",
            "",
            f"{len(any_rec['scores'])} evaluations per run, batches of {any_rec['batch_size']}, "
            f"{sums[order[0]]['n'] if order[0] in sums else '?'} seeds; target: {tdesc}.",
            "",
            f"| algorithm | best at budget{norm} | {second} | IQM | AUC best-so-far | reached target "
            "| evals to target | wall s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for a, s in sorted(sums.items(), key=lambda kv: -kv[1]["final"][0]):
            reach = f"{s['reach_median']:.0f}" if s["reach_median"] is not None else "-"
            true = _fmt(s["true"]) if s["true"] is not None else _fmt(s["test"]) if s["test"] is not None else "-"
            lines.append(
                f"| {a} | {_fmt(s['final'])} | {true} | {s['final_iqm']:.3f} | {_fmt(s['auc'])} | "
                f"{s['reach_frac']:.0%} | {reach} | {s['wall']:.1f} |"
            )
        lines.append("")
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        x = np.arange(1, budget + 1)
        for a in order:
            if a not in sums:
                continue
            c = sums[a]["curves"]
            m = c.mean(axis=0)
            rng = np.random.default_rng(0)
            boots = c[rng.integers(0, len(c), size=(500, len(c)))].mean(axis=1)
            lo, hi = np.percentile(boots, [2.5, 97.5], axis=0)
            ax.plot(x, m, label=a, lw=1.6 if a.startswith("ma2ml") else 1.1)
            ax.fill_between(x, lo, hi, alpha=0.15)
        if opt is not None and not per_seed:
            ax.axhline(opt, color="k", ls=":", lw=1, label="optimum")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best-so-far score" + norm)
        ax.set_title(task)
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        png = out / f"curves-{task}.png"
        fig.savefig(png, dpi=110)
        plt.close(fig)
        lines += [f"![{task}](curves-{task}.png)", ""]
    if throughput:
        lines += ["## Throughput", "", "```", throughput.strip(), "```", ""]
    report = out / "REPORT.md"
    report.write_text("\n".join(lines))
    return report


def throughput_section() -> str:
    parts = []
    for script, args in (("bench_env.py", ["--steps", "20000", "--batch", "200000"]), ("bench_training.py", [])):
        path = ROOT / "benchmarks" / script
        if not path.exists():
            continue
        res = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, cwd=ROOT)
        parts.append(f"$ python benchmarks/{script} {' '.join(args)}\n{res.stdout}{res.stderr[-2000:]}")
    return "\n".join(parts)
