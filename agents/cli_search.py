"""``ma2ml search``: from parsed options to the env and the algorithm, every input checked before anything on
disk changes, then :func:`agents.base.run` into the run's store, with ``trials.jsonl`` (:class:`TrialsFile`)
and ``best.json`` derived from the store."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from agents.base import SearchAlgorithm, Trial, algorithm_config, best_trial, run, search_config
from agents.cli_args import PROG, REWARD_OPTIONS, UsageError
from agents.registry import make_algorithm

__all__ = ["Callbacks", "TrialsFile", "build_algorithm", "build_env", "cmd_search", "reward_kwargs", "write_best"]

# ---------------------------------------------------------------------------------------------------
# From arguments to objects
# ---------------------------------------------------------------------------------------------------
def resolve_env_options(args: argparse.Namespace) -> None:
    """Fill in ``--reward`` / ``--modules`` defaults, or check that ``--benchmark`` stands alone.

    Raises:
        UsageError: ``--benchmark`` given with options that set the agents or the reward.
    """
    from ma2ml_env import DEFAULT_MODULES
    from ma2ml_env.rewards.tabular import BENCHMARKS

    if getattr(args, "_env_resolved", False):
        return
    args._env_resolved = True
    bench = getattr(args, "benchmark", None)
    if bench is None:
        if getattr(args, "seed_mean", False):
            raise UsageError("--seed-mean applies to --benchmark only")
        args.reward = args.reward or "train"
        args.modules = args.modules or DEFAULT_MODULES
        return
    flags = {"reward": "--reward", "modules": "--modules", "max_flops": "--max-flops", "max_params": "--max-params",
             "budget_mode": "--budget-mode", "reward_config": "--reward-config",
             **{o.dest: o.flag for o in REWARD_OPTIONS}}
    given = [flag for dest, flag in flags.items() if getattr(args, dest, None) is not None]
    if given:
        raise UsageError(f"--benchmark {bench} sets the agents and the reward itself (a table of recorded "
                         f"trainings); drop {', '.join(given)}")
    args.reward = "tabular"
    args.modules = tuple(agent for agent, _ in BENCHMARKS[bench].agents)


def reward_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The reward backend's keyword arguments from the parsed options.

    Raises:
        UsageError: an option of the other backend was given, or a budget mode without a budget.
    """
    from ma2ml_env import CostBudget

    for o in REWARD_OPTIONS:
        if getattr(args, o.dest, None) is not None and args.reward != o.backend:
            raise UsageError(f"{o.flag} applies to --reward {o.backend} only (got --reward {args.reward})")
    if args.budget_mode is not None and args.max_flops is None and args.max_params is None:
        raise UsageError("--budget-mode needs a budget: give --max-flops and/or --max-params")
    kw: dict[str, Any] = {}
    if args.max_flops is not None or args.max_params is not None:
        kw["budget"] = CostBudget(max_flops=args.max_flops, max_params=args.max_params,
                                  mode=args.budget_mode or "hard")
    kw.update({o.kwarg: getattr(args, o.dest) for o in REWARD_OPTIONS if getattr(args, o.dest, None) is not None})
    extra = args.reward_config or {}
    clash = sorted(set(extra) & set(kw))
    if clash:
        raise UsageError(f"--reward-config sets {clash}, which options on the command line already set")
    return {**kw, **extra}


def build_env(args: argparse.Namespace) -> Any:
    """The PettingZoo env described by the parsed options.

    Raises:
        UsageError: the env or its reward backend rejected a value.
    """
    import ma2ml_env

    resolve_env_options(args)
    kw = {} if args.benchmark else reward_kwargs(args)
    backend, bkw = getattr(args, "backend", "serial"), {}
    for dest, key, backends in (("max_retries", "max_retries", "serial,local,ray"),
                                ("trial_timeout", "time_limit", "local,ray"),
                                ("ray_address", "address", "ray"), ("gpus_per_trial", "num_gpus_per_trial", "ray")):
        if getattr(args, dest, None) is not None:
            if backend not in backends.split(","):
                raise UsageError(f"--{dest.replace('_', '-')} applies to --backend {backends.replace(',', '/')} only")
            bkw[key] = getattr(args, dest)
    try:
        if args.benchmark:
            return ma2ml_env.benchmark_env(args.benchmark, seed_mean=args.seed_mean, backend=backend,
                                           workers=getattr(args, "workers", None), backend_kwargs=bkw)
        return ma2ml_env.parallel_env(modules=args.modules, reward=args.reward, reward_kwargs=kw, backend=backend,
                                      workers=getattr(args, "workers", None), backend_kwargs=bkw)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"cannot build the environment: {exc}") from None


def check_budget_reachable(env: Any, budget: Any, samples: int = 256) -> float:
    """The fraction of pipelines of ``env``'s space within a hard cost ``budget`` (the smallest-index action
    and ``samples`` uniform random ones; costs counted for one input channel and two classes, a lower
    bound, so a reachable budget is never refused).

    Raises:
        UsageError: none of them fits (every trial would be over budget).
    """
    base = env.unwrapped
    space = getattr(base, "space", None)
    if space is None or budget is None or budget.mode != "hard" or not budget.active:
        return 1.0
    flats = [np.zeros(space.joint_nvec.size, np.int64), *space.codec.sample(np.random.default_rng(0), samples)]
    costs = [(a.flops(1, 2), a.params(1, 2)) for a in (space.decode(f).arch for f in flats)]
    fits = sum(not budget.over(f, p) for f, p in costs)
    if not fits:
        f, p = min(costs)
        raise UsageError(f"no pipeline fits the budget: none of {len(flats)} sampled pipelines of this space is "
                         f"within it (the smallest needs {f / 1e6:.2f}M FLOPs, {p / 1e6:.3f}M parameters), so "
                         "every trial would be over budget; raise --max-flops / --max-params")
    return fits / len(flats)


def build_algorithm(args: argparse.Namespace) -> SearchAlgorithm:
    """The search algorithm described by ``--algo`` and ``--algo-config``.

    Raises:
        UsageError: unknown option or bad value in ``--algo-config``.
    """
    try:
        return make_algorithm(args.algo, **(args.algo_config or {}))
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--algo-config for {args.algo!r}: {exc}") from None


def default_out(args: argparse.Namespace) -> Path:
    what = args.benchmark.replace("/", "-") if getattr(args, "benchmark", None) else args.reward
    return Path("runs") / f"{args.algo}-{what}-seed{args.seed}"


# ---------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------
def _jsonable(x: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays to Python, non-finite floats to ``None``."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)


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
            row["pipeline"] = self.decode({k: np.asarray(v) for k, v in trial.actions.items()}).to_dict()
        return _jsonable(row)

    def _lines(self, trials: Sequence[Trial]) -> str:
        return "".join(json.dumps(self.row(t)) + "\n" for t in trials)

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
    pipeline = env.unwrapped.decode({k: np.asarray(v) for k, v in best.actions.items()})
    doc = {**meta, "evaluations": len(trials), "best": {**best.to_dict(), "pipeline": pipeline.to_dict()}}
    (out / "best.json").write_text(json.dumps(_jsonable(doc), indent=2) + "\n", encoding="utf-8")
    (out / "best.txt").write_text(_best_text(best, pipeline, len(trials)) + "\n", encoding="utf-8")
    return best, pipeline


def _best_text(best: Trial, pipeline: Any, n: int) -> str:
    return (f"best score {best.score:.4f} (status {best.status}; trial {best.index + 1} of {n}, "
            f"index {best.index})\n"
            f"{pipeline.describe()}")


# ---------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------
def _open_store(args: argparse.Namespace, path: Path, config: Mapping[str, Any]) -> Any:
    """Check the store of this run before anything on disk changes; returns it opened and locked, or
    ``None`` when a new one is to be created.

    Raises:
        UsageError: a store exists without --resume/--overwrite, or --resume has nothing to resume.
        StoreError, StoreMismatchError, RuntimeError: unreadable store, a different search, or a search
            already running on it (all raised before any file is written).
    """
    from agents.store import TrialStore

    if not path.exists():
        if args.resume:
            raise UsageError(f"nothing to resume: there is no search store at {path} (start the search without "
                             "--resume, or give the --out/--store of the search to continue)")
        return None
    if not (args.resume or args.overwrite):
        raise UsageError(f"the store {path} already exists; pass --resume to continue that search, "
                         "--overwrite to start again, or choose another --out/--store")
    store = TrialStore(path, create=False)
    try:
        store.lock()
        if args.resume:
            store.check(config)
    except BaseException:
        store.close()
        raise
    return store


def cmd_search(args: argparse.Namespace) -> int:
    from agents.store import TrialStore

    # 1. every input is checked before anything on disk is created, truncated or deleted
    resolve_env_options(args)
    out = Path(args.out) if args.out is not None else default_out(args)
    trials_path = out / "trials.jsonl"
    store_path = Path(args.store) if args.store is not None else out / "search.db"
    if args.resume and args.overwrite:
        raise UsageError("--resume continues a search and --overwrite starts it again: give one of them")
    if trials_path.exists() and trials_path.stat().st_size > 0 and not args.overwrite and not args.resume:
        raise UsageError(f"{trials_path} already holds results of an earlier run; pass --resume to continue it, "
                         "--overwrite to replace it, or choose another --out")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file, not a folder")
    algorithm = build_algorithm(args)
    if args.tensorboard:
        from agents.tracking import check_tensorboard

        check_tensorboard()
    env = build_env(args)
    try:
        if not args.benchmark:
            from ma2ml_env import CostBudget

            # (the env was built, so the budget is valid)
            share = check_budget_reachable(env, CostBudget.coerce(reward_kwargs(args).get("budget")))
            if share < 0.1:
                print(f"{PROG}: warning: only {100 * share:.0f}% of sampled pipelines fit the budget; most trials "
                      "will be over budget (not trained, score 0)", file=sys.stderr)
        config = search_config(algorithm, env, args.seed, args.batch_size)
        store = _open_store(args, store_path, config)
    except BaseException:
        env.close()
        raise
    # 2. from here on, files are written
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the results folder {str(out)!r}: {exc.strerror}") from None
        if store is None:
            store = TrialStore(store_path)
            store.lock()  # before any other file is written: a second process starting now is refused
        elif args.overwrite:
            store.clear()
        return _search(args, env, algorithm, store, out)
    finally:
        if store is not None:
            store.close()
        env.close()


def _search(args: argparse.Namespace, env: Any, algorithm: SearchAlgorithm, store: Any, out: Path) -> int:
    meta = {
        "algorithm": args.algo, "reward": args.reward, "seed": args.seed, "budget": args.budget,
        "batch_size": args.batch_size, "modules": list(args.modules),
        **({"benchmark": args.benchmark, "seed_mean": args.seed_mean} if args.benchmark else {}),
    }
    if not args.resume or not (out / "config.json").exists():
        config = {**meta, "algorithm_config": algorithm_config(algorithm),
                  "reward_kwargs": {} if args.benchmark else {
                      k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
                      for k, v in reward_kwargs(args).items()},
                  "store": str(store.path), "argv": sys.argv[1:] if args.argv is None else list(args.argv)}
        (out / "config.json").write_text(json.dumps(_jsonable(config), indent=2) + "\n", encoding="utf-8")
    from agents.tracking import SearchLogger

    trials_file = TrialsFile(out / "trials.jsonl", env.unwrapped.decode)
    logger = SearchLogger(algorithm, args.budget, tensorboard=args.tensorboard, progress=not args.no_progress,
                          desc=args.algo)
    t0 = time.perf_counter()
    interrupted = False
    try:
        run(algorithm, env, budget=args.budget, seed=args.seed, batch_size=args.batch_size,
            callback=Callbacks([trials_file, logger]), store=store, resume=args.resume, dedupe=args.dedupe)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        logger.close()
        trials_file.close()
    trials = store.completed_trials()  # exactly what trials.jsonl holds
    if not trials:
        print(f"{PROG}: interrupted before any round completed", file=sys.stderr)
        return 130
    best, pipeline = write_best(out, trials, env, meta)
    head = (f"interrupted after {len(trials)} of {args.budget} evaluations (continue with --resume)" if interrupted
            else f"{args.algo}: {len(trials)} evaluations in {time.perf_counter() - t0:.1f}s")
    print(f"{head}\n{_best_text(best, pipeline, len(trials))}\nresults: {out}")
    return 130 if interrupted else 0


