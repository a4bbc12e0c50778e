"""How much like real training is the analytic surrogate? Variance shares and rank correlation.

1. Sobol indices of the surrogate's accuracy over uniformly random joint actions, per module (agent):
   first-order ``S_g`` (the share of variance explained by module ``g`` alone, its internal interactions
   included) and total ``ST_g``; ``1 - sum_g S_g`` is the share of cross-module interactions, what
   MA2ML's credit assignment is for. Janon et al. (2014) (first order) and Jansen (total) estimators on
   ``N`` pairs of samples, with 95% bootstrap intervals.
2. Rank correlation with real training: ``N`` uniformly random pipelines trained for real on digits (the
   embedded dataset, CPU) and scored by the surrogate; Spearman's rho with a 95% bootstrap interval.
   The real trainings are recorded in ``OUT/real-digits-random.json`` (resumed, never redone), so a new
   surrogate version is re-measured without training again.

    python benchmarks/surrogate_realism.py                   # ~10 min the first time (200 real trainings)
    python benchmarks/surrogate_realism.py --real 0          # Sobol indices only

Writes ``OUT/surrogate-realism.md``, which ``benchmarks/suite.py report`` includes in ``REPORT.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def janon(y: np.ndarray, y_g: np.ndarray) -> float:
    """First-order index from outputs at B and at A-with-group-g-from-B, which share only group g's inputs
    (Janon, Klein, Lagnoux, Nodet, Prieur 2014: the asymptotically efficient estimator)."""
    m = np.mean((y + y_g) / 2)
    return float((np.mean(y * y_g) - m * m) / (np.mean((y * y + y_g * y_g) / 2) - m * m))


def sobol_groups(evaluate: Any, nvec: np.ndarray, groups: dict[str, np.ndarray], n: int, seed: int = 0,
                 boots: int = 500) -> dict[str, dict[str, tuple[float, float, float]]]:
    """First-order and total Sobol indices of column groups of a function of uniform discrete inputs.

    Args:
        evaluate: ``[K, D]`` int array -> ``[K]`` values.
        nvec: choices per column.
        groups: name -> column indices (disjoint).
        n: base samples (the function is called ``n * (2 + len(groups))`` times).

    Returns:
        ``{group: {"S": (mean, lo, hi), "ST": (...)}}`` plus ``"interactions": {"S": 1 - sum S}``.
    """
    rng = np.random.default_rng(seed)
    A = (rng.random((n, nvec.size)) * nvec).astype(np.int64)
    B = (rng.random((n, nvec.size)) * nvec).astype(np.int64)
    fA, fB = evaluate(A), evaluate(B)
    fAB = {}
    for g, cols in groups.items():
        AB = A.copy()
        AB[:, cols] = B[:, cols]
        fAB[g] = evaluate(AB)

    def estimate(idx: np.ndarray) -> dict[str, tuple[float, float]]:
        a, b = fA[idx], fB[idx]
        var = np.var(np.concatenate([a, b]))
        out = {}
        for g in groups:
            ab = fAB[g][idx]
            out[g] = (janon(b, ab), float(np.mean((a - ab) ** 2) / (2 * var)))
        return out

    point = estimate(np.arange(n))
    reps = [estimate(rng.integers(0, n, n)) for _ in range(boots)]
    res: dict[str, dict[str, tuple[float, float, float]]] = {}
    for g in groups:
        for k, j in (("S", 0), ("ST", 1)):
            vals = np.array([r[g][j] for r in reps])
            res.setdefault(g, {})[k] = (point[g][j], *np.percentile(vals, [2.5, 97.5]).tolist())
    inter = np.array([1 - sum(r[g][0] for g in groups) for r in reps])
    res["interactions"] = {"S": (1 - sum(point[g][0] for g in groups), *np.percentile(inter, [2.5, 97.5]).tolist())}
    return res


def real_digits(path: Path, n: int, seed: int = 0) -> list[dict]:
    """``n`` uniformly random pipelines of the default env trained for real on digits, recorded in ``path``
    (appended one by one, so a killed run resumes)."""
    import ma2ml_env

    env = ma2ml_env.parallel_env(reward="train", reward_kwargs={"device": "cpu"})
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    rng = np.random.default_rng(seed)
    flats = env.unwrapped.space.codec.sample(rng, n)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for i in range(len(rows), n):
            t0 = time.perf_counter()
            r = env.unwrapped.evaluate(flats[i:i + 1], seeds=[i])[0]
            row = {"index": i, "flat": flats[i].tolist(), "accuracy": r.accuracy, "status": r.status,
                   "flops": r.flops, "seconds": time.perf_counter() - t0}
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
            rows.append(row)
            print(f"[{i + 1}/{n}] real accuracy {r.accuracy:.3f} ({r.status})", flush=True)
    return rows[:n]


def spearman_ci(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    from scipy.stats import bootstrap, spearmanr

    rho = float(spearmanr(x, y).statistic)
    res = bootstrap((x, y), lambda a, b: spearmanr(a, b).statistic, paired=True, vectorized=False,
                    n_resamples=1000, method="percentile", random_state=0)
    return rho, float(res.confidence_interval.low), float(res.confidence_interval.high)


def report(out: Path, n_sobol: int, n_real: int) -> str:
    import ma2ml_env

    env = ma2ml_env.parallel_env(reward="surrogate")
    ev, space = env.unwrapped.evaluator, env.unwrapped.space
    groups = {m: np.arange(o, o + s) for m, o, s in zip(space.names, space.offsets, space.sizes)}

    def f(A):
        return ev.evaluate(A, np.zeros(len(A), np.int64)).accuracy

    sob = sobol_groups(f, space.joint_nvec, groups, n_sobol)
    hpo = space.modules[space.names.index("hpo")]
    o = space.offsets[space.names.index("hpo")]
    names = [d.name for d in hpo.decisions]
    pair = {"optimizer x lr": np.array([o + names.index("optimizer"), o + names.index("lr")])}
    sob_pair = sobol_groups(f, space.joint_nvec, pair, n_sobol)["optimizer x lr"]["S"]
    lines = [
        f"## The analytic surrogate ({env.metadata['name']}): how much like real training",
        "",
        f"Sobol indices of the default surrogate task's accuracy over uniformly random joint actions ({n_sobol:,}",
        "base samples, Janon/Jansen estimators, 95% bootstrap intervals). First-order S of a module: the share",
        "of variance it explains alone (its internal interactions included); total ST: with every interaction it",
        "takes part in; cross-module interactions: 1 - sum of the modules' S.",
        "",
        "| module | first-order S | total ST |",
        "|---|---|---|",
    ]
    for g in groups:
        s, st = sob[g]["S"], sob[g]["ST"]
        lines.append(f"| {g} | {s[0]:.3f} [{s[1]:.3f}, {s[2]:.3f}] | {st[0]:.3f} [{st[1]:.3f}, {st[2]:.3f}] |")
    i = sob["interactions"]["S"]
    lines += [f"| cross-module interactions | {i[0]:.3f} [{i[1]:.3f}, {i[2]:.3f}] | |",
              f"| (the HPO pair optimizer x lr, closed) | {sob_pair[0]:.3f} [{sob_pair[1]:.3f}, {sob_pair[2]:.3f}] | |",
              ""]
    if n_real:
        rows = real_digits(out / "real-digits-random.json", n_real)
        flats = np.array([r["flat"] for r in rows])
        real = np.array([r["accuracy"] if np.isfinite(r["accuracy"]) else 0.0 for r in rows])
        sur = ev.evaluate(flats, np.zeros(len(flats), np.int64)).accuracy
        rho, lo, hi = spearman_ci(sur, real)
        lines += [
            f"Rank correlation with real training: {len(rows)} uniformly random pipelines of the default env trained",
            "for real on digits (CPU, the training backend's defaults; recorded in `real-digits-random.json`) and",
            f"scored by the surrogate: Spearman rho = {rho:.2f} [{lo:.2f}, {hi:.2f}]. Real validation accuracy: median",
            f"{np.median(real):.3f}, {np.mean(real < 0.2):.0%} of the children below 0.2 (failed to learn).",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sobol", type=int, default=20_000, help="Sobol base samples (default 20000)")
    p.add_argument("--real", type=int, default=200, help="real digits trainings (default 200; 0 to skip)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.sobol < 100 or args.real < 0:
        p.error("--sobol must be >= 100 and --real >= 0")
    import torch

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    text = report(args.out, args.sobol, args.real)
    (args.out / "surrogate-realism.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
