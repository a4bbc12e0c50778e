"""What stopping and continuing a real training costs, against one uninterrupted full training.

For each of ``--children`` pipelines of the ``hpo`` agent (their epochs set to the longest schedule), in one
process and on one device, timed with the evaluator's own ``seconds``:

* ``full``: ``evaluate(rows, seeds)``, the full training without a fidelity request (the reference);
* ``straight``: ``levels=top``, the same training validating at every level on the way (``info["curve"]``);
* ``low + continued``: ``levels=low`` (saving the state), then ``levels=top, start=low``.

Printed: seconds of each, and the ratios ``straight / full`` (the cost of the learning curve) and
``(low + continued) / full`` (the cost of stopping and continuing: state save and load, one more model
build and validation); the continued accuracy must equal the straight one (checked).

Usage::

    python benchmarks/bench_train_fidelity.py                      # digits, CPU
    python benchmarks/bench_train_fidelity.py --device cuda --epoch-scale 1
"""

from __future__ import annotations

import argparse

import numpy as np

from ma2ml_env.modules import resolve_modules
from ma2ml_env.pipeline import Pipeline
from ma2ml_env.rewards.train import TrainEvaluator
from ma2ml_env.space import SearchSpace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--children", type=int, default=4)
    ap.add_argument("--epoch-scale", type=float, default=0.5)
    ap.add_argument("--low", type=int, default=1, help="the level index children stop at first")
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats (the median is reported)")
    a = ap.parse_args()
    ev = TrainEvaluator(device=a.device, epoch_scale=a.epoch_scale)
    space = SearchSpace(resolve_modules(("hpo",)), base=Pipeline())
    ev.bind(space)
    top = ev.fidelity.top
    names = [d.name for d in space.modules[0].decisions]
    rows = space.codec.sample(np.random.default_rng(0), a.children)
    rows[:, names.index("epochs")] = len(space.modules[0].decisions[names.index("epochs")].choices) - 1
    rows[:, names.index("lr")] = 4  # 0.1: every child learns
    seeds = np.arange(a.children, dtype=np.int64)
    k = a.children
    ev.evaluate(rows[:1], seeds[:1])  # load the data, warm up
    times: dict[str, list[float]] = {"full": [], "straight": [], "low + continued": []}
    for _ in range(a.repeats):
        full = ev.evaluate(rows, seeds)
        straight = ev.evaluate(rows, seeds, levels=np.full(k, top))
        low = ev.evaluate(rows, seeds, levels=np.full(k, a.low))
        went_on = ev.evaluate(rows, seeds, levels=np.full(k, top), start=np.full(k, a.low))
        if not np.array_equal(went_on.score, straight.score) and ev.deterministic:
            raise SystemExit(f"continued scores {went_on.score} differ from straight {straight.score}")
        times["full"].append(float(full.seconds.sum()))
        times["straight"].append(float(straight.seconds.sum()))
        times["low + continued"].append(float(low.seconds.sum() + went_on.seconds.sum()))
    med = {n: float(np.median(t)) for n, t in times.items()}
    print(f"device={ev.device}, {k} children of {ev.fidelity.levels[top]} epochs (epoch_scale {a.epoch_scale}), "
          f"levels {ev.fidelity.levels}, stop at {ev.fidelity.levels[a.low]} then continue; median of "
          f"{a.repeats}; continued accuracy == straight: {bool(np.array_equal(went_on.score, straight.score))}")
    for n, s in med.items():
        print(f"  {n:16s} {s:8.2f} s   ratio to full {s / med['full']:.3f}")


if __name__ == "__main__":
    main()
