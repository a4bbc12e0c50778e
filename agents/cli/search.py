"""``ma2ml search``: the :class:`~agents.cli.spec.SearchSpec` of the options, checked completely (with the
:func:`~agents.cli.spec.preflight`) before anything on disk is created; then :func:`agents.base.run` into the
run's store, with ``trials.jsonl`` (:class:`TrialsFile`) and ``best.json`` derived from the store.

SIGINT and SIGTERM stop the search between two commits: the store keeps every completed evaluation, the
output files are written for the completed rounds, the command says how to resume and exits with 130
(SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from agents.base import Trial, algorithm_config, best_trial, run
from agents.cli.args import PROG, UsageError
from agents.cli.runs import trial_pipeline
from agents.cli.spec import Prepared, build_spec, preflight
from agents.jsonio import jsonable

__all__ = ["Callbacks", "TrialsFile", "cmd_search", "write_best"]


# ---------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------
class TrialsFile:
    """``<out>/trials.jsonl``, derived from the search's store: one JSON object per trial (the trial's
    fields, its evaluator result unchanged, and the readable pipeline), appended (flushed and fsynced) when
    its round completes. A search callback: when a stored search resumes it is first rewritten, atomically,
    from the store's completed rounds (:func:`agents.base.run` reports a round interrupted half-way, once,
    when it completes), so it never holds a trial twice or one the store lacks.

    Args:
        path: the file.
        decode: joint action -> :class:`~ma2ml_env.Pipeline` (``None``: no ``pipeline`` field).
    """

    def __init__(self, path: Path, decode: Callable[[Mapping[str, Any]], Any] | None = None) -> None:
        self.path = Path(path)
        self.decode = decode
        self._f: IO[str] | None = None

    def row(self, trial: Trial) -> dict[str, Any]:
        row = trial.to_dict()
        if self.decode is not None:
            row["pipeline"] = trial_pipeline(self.decode, trial).to_dict()
        return row

    def _lines(self, trials: Sequence[Trial]) -> str:
        return "".join(json.dumps(jsonable(self.row(t)), allow_nan=False) + "\n" for t in trials)

    def resume(self, trials: Sequence[Trial]) -> None:
        """Rewrite the file with exactly ``trials`` (the store's completed rounds), then append from here."""
        self.close()
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self._lines(trials))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def __call__(self, trials: Sequence[Trial]) -> None:
        if self._f is None:
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across rounds
        self._f.write(self._lines(trials))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class Callbacks:
    """Several search callbacks as one (each called in order, ``resume`` passed on to those that have it)."""

    def __init__(self, callbacks: Sequence[Callable[[list[Trial]], None]]) -> None:
        self.callbacks = list(callbacks)

    def __call__(self, new: list[Trial]) -> None:
        for cb in self.callbacks:
            cb(new)

    def resume(self, done: list[Trial]) -> None:
        for cb in self.callbacks:
            if callable(getattr(cb, "resume", None)):
                cb.resume(done)


def write_best(out: Path, trials: Sequence[Trial], env: Any, meta: Mapping[str, Any]) -> tuple[Trial, Any]:
    """Write ``best.json`` / ``best.txt`` for the best of ``trials``; returns it and its pipeline."""
    best = best_trial(trials)
    pipeline = trial_pipeline(env.unwrapped.decode, best)
    doc = {**meta, "evaluations": len(trials), "best": {**best.to_dict(), "pipeline": pipeline.to_dict()}}
    (out / "best.json").write_text(json.dumps(jsonable(doc), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (out / "best.txt").write_text(_best_text(best, pipeline, len(trials)) + "\n", encoding="utf-8")
    return best, pipeline


def _best_text(best: Trial, pipeline: Any, n: int) -> str:
    return (f"best score {best.score:.4f} (status {best.status}; trial {best.index + 1} of {n}, "
            f"index {best.index})\n"
            f"{pipeline.describe()}")


# ---------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------
class Interrupted(BaseException):
    """Raised in the search by SIGINT or SIGTERM (a ``BaseException``, like ``KeyboardInterrupt``, so that no
    ``except Exception`` in an algorithm or backend swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` for the block (main thread only)."""
    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def cmd_search(args: argparse.Namespace) -> int:
    from agents.store import TrialStore

    # 1. every input is checked before anything on disk is created, truncated or deleted
    spec = build_spec(args)
    prepared = preflight(spec)
    # 2. from here on, files are written
    try:
        try:
            spec.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the results folder {str(spec.out)!r}: {exc.strerror}") from None
        if prepared.store is None:
            prepared.store = TrialStore(spec.store)
            prepared.store.lock()  # before any other file is written: a second process starting now is refused
        elif prepared.fresh:
            prepared.store.clear()
        return _search(prepared)
    finally:
        prepared.close()


def _write_config(p: Prepared) -> None:
    spec = p.spec
    config = {**spec.meta(p.env.possible_agents), "algorithm_config": algorithm_config(p.algorithm),
              "reward_kwargs": spec.env.reward_kwargs_json(), "store": str(p.store.path), "argv": list(spec.argv)}
    (spec.out / "config.json").write_text(json.dumps(jsonable(config), indent=2, allow_nan=False) + "\n",
                                          encoding="utf-8")


def _search(p: Prepared) -> int:
    spec, env = p.spec, p.env
    if not spec.resume or not (spec.out / "config.json").exists():
        _write_config(p)
    from agents.tracking import SearchLogger

    trials_file = TrialsFile(spec.out / "trials.jsonl", env.unwrapped.decode)
    logger = SearchLogger(p.algorithm, spec.budget, tensorboard=spec.tensorboard, progress=spec.progress,
                          desc=spec.algo)
    t0 = time.perf_counter()
    signum = None
    try:
        with _stop_on_signals():
            run(p.algorithm, env, budget=spec.budget, seed=spec.seed, batch_size=spec.batch_size,
                callback=Callbacks([trials_file, logger]), store=p.store, resume=spec.resume, dedupe=spec.dedupe,
                scheduler=spec.make_scheduler(), workers=spec.sim_workers, budget_seconds=spec.budget_seconds)
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
    finally:
        logger.close()
        trials_file.close()
    trials = p.store.completed_trials()  # exactly what trials.jsonl holds
    if signum is not None:  # the signal may have come while a round was being appended: write it whole
        trials_file.resume(trials)
        trials_file.close()
        name = signal.Signals(signum).name
        done = f"after {len(trials)} of {spec.budget} evaluations" if trials else "before any round completed"
        print(f"{PROG}: interrupted by {name} {done}; every completed evaluation is in {spec.store}. Resume "
              f"with:\n  {spec.resume_command()}", file=sys.stderr)
    if not trials:
        return 128 + signum if signum is not None else 1
    best, pipeline = write_best(spec.out, trials, env, spec.meta(env.possible_agents))
    head = (f"interrupted after {len(trials)} of {spec.budget} evaluations (continue with --resume)" if signum
            else f"{spec.algo}: {len(trials)} evaluations in {time.perf_counter() - t0:.1f}s")
    print(f"{head}\n{_best_text(best, pipeline, len(trials))}\nresults: {spec.out}")
    return 128 + signum if signum is not None else 0
