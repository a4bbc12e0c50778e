"""Record real learning curves on digits: validation accuracy at every fidelity level of random pipelines.

Trains pipelines of the default env for real on digits (the embedded dataset; CPU, 1 torch thread) with
the training backend's fidelity (``TrainEvaluator(fidelity_epochs=(1, 2, 4, 8))``), each straight to the
top level, and stores each one's curve (``info["curve"]``: the validation accuracy after 1, 2, 4 and 8
epochs of its own schedule, a level past its schedule being its full training) and its cost in
``OUT/digits-curves.json``. These curves calibrate the surrogate's learning-curve model
(``benchmarks/surrogate_curves.py``, :mod:`ma2ml_env.rewards.surrogate_curves`).

The pipelines are those of ``benchmarks/surrogate_realism.py`` (the first uniformly random joint actions
of ``codec.sample(default_rng(0), ...)``, seed = index), so the top level repeats the full training recorded
in ``real-digits-random.json`` (the script reports how many agree). To fit the CPU budget, pipelines whose
simulated training cost (the surrogate's ``seconds``, Spearman 0.97 with the measured cost of the 200
recorded trainings) is above ``--max-sim-seconds`` are skipped: the sample is uniform among the cheaper
pipelines (fewer long, large children; the report says so). The file is rewritten after every training,
so a killed run resumes where it stopped.

    PYTHONPATH=$PWD python benchmarks/record_digits_curves.py              # 36 pipelines, ~6 min of CPU
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (1, 2, 4, 8)


def pipelines(n: int, max_sim_seconds: float, pool: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, flats)`` of the first ``n`` random joint actions (sample seed 0) whose simulated training
    cost is at most ``max_sim_seconds``."""
    import ma2ml_env

    env = ma2ml_env.parallel_env(reward="surrogate")
    flats = env.unwrapped.space.codec.sample(np.random.default_rng(0), pool)
    sim = env.unwrapped.evaluator.evaluate(flats, np.zeros(pool, np.int64)).seconds
    idx = np.flatnonzero(sim <= max_sim_seconds)[:n]
    if len(idx) < n:
        raise ValueError(f"only {len(idx)} of {pool} pipelines cost <= {max_sim_seconds} simulated seconds; "
                         "raise --max-sim-seconds or lower --n")
    return idx, flats[idx]


def record(out: Path, n: int, max_sim_seconds: float) -> dict:
    import ma2ml_env

    path = out / "digits-curves.json"
    doc = json.loads(path.read_text()) if path.exists() else None
    settings = {"dataset": "digits", "device": "cpu", "num_threads": 1, "fidelity_epochs": list(LEVELS),
                "sample": "codec.sample(np.random.default_rng(0), 2000), seed = index",
                "max_sim_seconds": max_sim_seconds}
    if doc is None or doc.get("settings") != settings:
        doc = {"settings": settings, "levels": list(LEVELS), "rows": []}
    env = ma2ml_env.parallel_env(reward="train", reward_kwargs={"device": "cpu", "num_threads": 1,
                                                                "fidelity_epochs": list(LEVELS)})
    ev = env.unwrapped.evaluator
    hpo = env.unwrapped.space.modules[env.unwrapped.space.names.index("hpo")]
    epochs_of = dict(zip(range(len(hpo.decisions[-1].choices)), hpo.decisions[-1].choices))
    idx, flats = pipelines(n, max_sim_seconds)
    top = len(LEVELS) - 1
    for i, flat in zip(idx.tolist()[len(doc["rows"]):], flats[len(doc["rows"]):]):
        t0, c0 = time.perf_counter(), time.process_time()
        r = ev.evaluate(flat[None], np.array([i]), levels=np.array([top]), start=np.array([-1]))[0]
        cpu = time.process_time() - c0
        curve = r.info.get("curve", {})
        row = {"index": i, "flat": flat.tolist(), "epochs": int(epochs_of[int(flat[-1])]), "status": r.status,
               "curve": [curve.get(f"{v:g}", float("nan")) for v in LEVELS], "accuracy": r.accuracy,
               "flops": r.flops, "seconds": time.perf_counter() - t0, "cpu_seconds": cpu}
        doc["rows"].append(row)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=None) + "\n")
        os.replace(tmp, path)
        print(f"[{len(doc['rows'])}/{n}] #{i} {row['epochs']} epochs: "
              + " ".join(f"{a:.3f}" for a in row["curve"]) + f" ({r.status}, {cpu:.1f} s CPU)", flush=True)
    return doc


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=36, help="pipelines to train (default 36)")
    p.add_argument("--max-sim-seconds", type=float, default=12.0,
                   help="skip pipelines whose simulated full training costs more (default 12)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.n < 1 or not args.max_sim_seconds > 0:
        p.error("--n must be >= 1 and --max-sim-seconds > 0")
    import torch

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = record(args.out, args.n, args.max_sim_seconds)
    old = args.out / "real-digits-random.json"
    if old.exists():  # the top level is the full training recorded by surrogate_realism.py (same seed)
        full = {r["index"]: r["accuracy"] for r in map(json.loads, old.read_text().splitlines())}
        both = [(r["accuracy"], full[r["index"]]) for r in doc["rows"] if r["index"] in full]
        diff = np.abs(np.subtract(*np.array(both).T)) if both else np.zeros(0)
        print(f"top level vs the full training recorded in {old.name}: equal for {int(np.sum(diff == 0))} of "
              f"{len(both)}, mean |difference| {diff.mean() if both else float('nan'):.3f} (that file predates "
              "later changes of the training code)")
    print(f"{len(doc['rows'])} curves, {sum(r['cpu_seconds'] for r in doc['rows']):.0f} s of CPU in all")


if __name__ == "__main__":
    main()
