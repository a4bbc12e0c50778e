"""Calibrate the analytic surrogate's coefficients on recorded real trainings (digits).

Reads the real trainings recorded by ``benchmarks/surrogate_realism.py`` (``real-digits-random.json``:
uniformly random pipelines of the default env trained for real) and fits the coefficients of the
surrogate's score (:class:`ma2ml_env.rewards.surrogate.SurrogateTask`) to them:

- the surrogate's formula is linear in most coefficients once ``omega, lam, rho`` (the regulariser
  balance) and ``lr0`` (the optimal learning rate per optimizer) are fixed; for every point of a grid of
  those, bounded least squares (``scipy.optimize.lsq_linear``: ``b_c, a_q, kappa, a_lr >= 0``) fits the
  linear ones to ``logit`` of the real accuracy (clipped to the surrogate's ``[floor, ceil]``);
- the grid point with the best cross-validated Spearman correlation (5 folds) wins; its coefficients are
  refitted on all rows.

    python benchmarks/calibrate_surrogate.py                 # prints the fitted SurrogateTask and its fit

The printed coefficients are the defaults of ``SurrogateTask`` (with the measured fit in its docstring).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LINEAR = ("a_c", "b_c", "a_e", "a_q", "g_sc", "g_se", "kappa", "a_lr", "b_opt1", "b_opt2", "b_sched1", "b_sched2", "z0")
# lower bounds (upper: +inf): a_c, b_c >= 0, a_e, a_q >= 0, g_sc, g_se, kappa >= 0, a_lr >= 0, biases, z0
LOWER = (-np.inf, 0.0, -np.inf, 0.0, -np.inf, -np.inf, 0.0, 0.0, -np.inf, -np.inf, -np.inf, -np.inf, -np.inf)


def features(flats: np.ndarray) -> dict[str, np.ndarray]:
    """The surrogate's feature values of flat joint actions of the default env."""
    import ma2ml_env

    env = ma2ml_env.parallel_env(reward="surrogate")
    ev = env.unwrapped.evaluator
    s, q = ev._aug_features(flats)
    flops, _ = ev._nas_costs(flats)
    h = ev._hpo_features(flats)
    return dict(c=ev.capacity(flops), s=s, q=q, **h)


def design(f: dict[str, np.ndarray], omega: float, lam: float, rho: float, log_lr0: np.ndarray) -> np.ndarray:
    """Columns of the linear coefficients in :data:`LINEAR` order (the surrogate's formula, term by term)."""
    c, s, q, e = f["c"], f["s"], f["q"], f["e"]
    d = s + omega * f["w"] + lam * f["ls"] - rho * c
    lr_star = log_lr0[f["opt"]] + 0.5 * np.log10(f["bs"] / 128.0)
    cols = [c, -c * c, e, q, (2 * s - 1) * (2 * c - 1), (2 * s - 1) * (2 * e - 1), -d * d,
            -(f["log_lr"] - lr_star) ** 2, (f["opt"] == 1) * 1.0, (f["opt"] == 2) * 1.0,
            (f["sched"] == 1) * 1.0, (f["sched"] == 2) * 1.0, np.ones_like(c)]
    return np.stack(cols, axis=1)


def fit(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.optimize import lsq_linear

    return lsq_linear(X, y, bounds=(np.array(LOWER), np.full(len(LOWER), np.inf))).x


def main(argv: list[str] | None = None) -> None:
    from scipy.stats import spearmanr

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "results" / "real-digits-random.json")
    args = p.parse_args(argv)
    rows = [json.loads(line) for line in args.data.read_text().splitlines()]
    flats = np.array([r["flat"] for r in rows], dtype=np.int64)
    acc = np.array([r["accuracy"] if np.isfinite(r["accuracy"]) else 0.0 for r in rows])
    floor, ceil = 0.1, 0.99
    frac = np.clip((acc - floor) / (ceil - floor), 0.02, 0.98)
    y = np.log(frac / (1 - frac))
    f = features(flats)
    rng = np.random.default_rng(0)
    folds = rng.permutation(len(rows)) % 5
    best = None
    grid = itertools.product((0.25, 0.5, 1.0), (0.15, 0.3, 0.6), (0.5, 1.0, 1.5), (0.03, 0.1, 0.3), (1e-3, 3e-3, 1e-2),
                             (3e-4, 1e-3, 3e-3))
    for omega, lam, rho, l0, l1, l2 in grid:
        lr0 = np.log10(np.array([l0, l1, l2]))
        X = design(f, omega, lam, rho, lr0)
        pred = np.zeros(len(rows))
        for k in range(5):
            tr = folds != k
            pred[~tr] = X[~tr] @ fit(X[tr], y[tr])
        rho_cv = float(spearmanr(pred, acc).statistic)
        if best is None or rho_cv > best[0]:
            best = (rho_cv, (omega, lam, rho, (l0, l1, l2)))
    rho_cv, (omega, lam, rho, lr0) = best
    X = design(f, omega, lam, rho, np.log10(np.array(lr0)))
    theta = dict(zip(LINEAR, fit(X, y)))
    rho_in = float(spearmanr(X @ np.array(list(theta.values())), acc).statistic)
    print(f"{len(rows)} real trainings; cross-validated Spearman {rho_cv:.3f}, in-sample {rho_in:.3f}")
    print(f"omega={omega}, lam={lam}, rho={rho}, lr0={lr0}")
    print(", ".join(f"{k}={v:.3f}" for k, v in theta.items()))


if __name__ == "__main__":
    main()
