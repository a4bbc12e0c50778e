"""``ma2ml search``'s arguments as one typed, frozen :class:`SearchSpec`, checked completely before anything
on disk is created.

:func:`build_spec` reads the parsed options once (the ``argparse.Namespace`` is never changed) and applies
every rule that needs nothing but the options; :func:`preflight` then builds the algorithm and the env and
checks what needs them: the algorithm's options, the dataset (loaded and validated), the device, a hard
cost budget that some pipeline can meet, TensorBoard, and the store (a search already running on it, a
different search, a ``--resume --budget`` below what it holds). Only then does :mod:`agents.cli.search`
write anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.cli.args import BACKEND_OPTIONS, PROG, REWARD_OPTIONS, UsageError

__all__ = ["EnvSpec", "Prepared", "SearchSpec", "build_env", "build_spec", "preflight", "seed_dependent"]

DEFAULT_BATCH_SIZE = 8
#: the README's rule for --dedupe (section "Durable searches")
DEDUPE_RULE = "--dedupe serves a pipeline already evaluated from the store, for seed-independent rewards only"


def _frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(d))


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """The environment of a search.

    Attributes:
        modules: the AutoML modules, one agent each (a benchmark's own agents with ``benchmark``); empty: the
            env's default (the reward's own agents when it has them, else the built-in three).
        reward: the reward backend's registered name (``"tabular"`` for a benchmark).
        reward_kwargs: its keyword arguments (the options of :data:`REWARD_OPTIONS`, the cost budget and
            ``--reward-config``); empty for a benchmark.
        benchmark: a tabular task of recorded trainings (``--benchmark``), else ``None``.
        seed_mean: with ``benchmark``: score the mean over recorded seeds.
        backend: the evaluation backend (``serial``, ``local``, ``ray``).
        workers: its concurrent evaluations (``None``: its default).
        backend_kwargs: its other keyword arguments (the options of :data:`BACKEND_OPTIONS`).
    """

    modules: tuple[str, ...]
    reward: str
    reward_kwargs: Mapping[str, Any]
    benchmark: str | None = None
    seed_mean: bool = False
    backend: str = "serial"
    workers: int | None = None
    backend_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _frozen({}))

    @property
    def label(self) -> str:
        """What is searched, for folder names: the benchmark, the learning-curve task or the reward."""
        if self.benchmark:
            return self.benchmark.replace("/", "-")
        return f"lcbench-{self.reward_kwargs['task']}" if self.reward == "learning-curves" else self.reward

    @property
    def cost_budget(self) -> Any:
        """The :class:`~ma2ml_env.CostBudget` of the reward, or ``None``."""
        return self.reward_kwargs.get("budget")

    def reward_kwargs_json(self) -> dict[str, Any]:
        """The reward's keyword arguments as written to ``config.json`` (the budget as a dict)."""
        return {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v)
                for k, v in self.reward_kwargs.items()}


@dataclasses.dataclass(frozen=True)
class SearchSpec:
    """Everything ``ma2ml search`` was asked to do.

    Attributes:
        algo: the registered algorithm name. algo_config: its options (``--algo-config``).
        env: the environment. budget, seed, batch_size: of :func:`agents.base.run`.
        out: the results folder. store: the SQLite store (default ``out/search.db``).
        resume, overwrite, dedupe: what to do with an existing store, and serving repeated pipelines.
        tensorboard: TensorBoard log folder, or ``None``. progress: show a progress bar.
        argv: the command line (``config.json`` and the resume hint).
        scheduler, eta, min_level, sim_workers, budget_seconds: a multi-fidelity search
            (:mod:`agents.multifidelity`); ``scheduler`` ``None``: every child trained fully.
    """

    algo: str
    algo_config: Mapping[str, Any]
    env: EnvSpec
    budget: int
    seed: int
    batch_size: int
    out: Path
    store: Path
    resume: bool = False
    overwrite: bool = False
    dedupe: bool = False
    tensorboard: Path | None = None
    progress: bool = True
    argv: tuple[str, ...] = ()
    scheduler: str | None = None
    eta: float = 3.0
    min_level: float | None = None
    sim_workers: int = 1
    budget_seconds: float | None = None

    def make_scheduler(self) -> Any:
        """The :mod:`agents.schedulers` scheduler of the search, or ``None``."""
        from agents.schedulers import make_scheduler

        if self.scheduler is None:
            return None
        try:
            return make_scheduler(self.scheduler, eta=self.eta, min_level=self.min_level)
        except ValueError as exc:
            raise UsageError(f"--scheduler {self.scheduler}: {exc}") from None

    def meta(self, agents: Sequence[str]) -> dict[str, Any]:
        """What ``config.json`` and ``best.json`` say about the search (``agents``: the env's, its modules)."""
        e = self.env
        return {"algorithm": self.algo, "reward": e.reward, "seed": self.seed, "budget": self.budget,
                "batch_size": self.batch_size, "modules": list(agents),
                **({"benchmark": e.benchmark, "seed_mean": e.seed_mean} if e.benchmark else {}),
                **({"scheduler": self.scheduler, "eta": self.eta, "min_level": self.min_level,
                    "sim_workers": self.sim_workers, "budget_seconds": self.budget_seconds}
                   if self.scheduler else {})}

    def resume_command(self) -> str:
        """The command that continues this search."""
        argv = [a for a in self.argv if a not in ("--resume", "--overwrite")]
        return " ".join([PROG, *(_quote(a) for a in argv), "--resume"])


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


# ---------------------------------------------------------------------------------------------------
# Options -> spec (no file is read or written here, except --algo-config/--reward-config @files by argparse)
# ---------------------------------------------------------------------------------------------------
def _env_spec(args: argparse.Namespace) -> EnvSpec:
    from ma2ml_env import BENCHMARKS, CostBudget

    backend = args.backend
    bkw: dict[str, Any] = {}
    for o in BACKEND_OPTIONS:
        value = getattr(args, o.dest)
        if value is not None:
            if backend not in o.backends:
                raise UsageError(f"{o.flag} applies to --backend {'/'.join(o.backends)} only (got --backend "
                                 f"{backend})")
            bkw[o.kwarg] = value
    common = {"backend": backend, "workers": args.workers, "backend_kwargs": _frozen(bkw)}
    if (args.curves_folder is not None) != (args.learning_curves is not None):
        raise UsageError("--learning-curves TASK and --curves-folder DIR go together: give both")
    if args.learning_curves is not None and args.benchmark is not None:
        raise UsageError("give --benchmark or --learning-curves, not both")
    if args.benchmark is not None or args.learning_curves is not None:
        task = f"--benchmark {args.benchmark}" if args.benchmark else f"--learning-curves {args.learning_curves}"
        flags = {"reward": "--reward", "modules": "--modules", "max_flops": "--max-flops",
                 "max_params": "--max-params", "budget_mode": "--budget-mode", "reward_config": "--reward-config",
                 **{o.dest: o.flag for o in REWARD_OPTIONS}}
        given = [flag for dest, flag in flags.items() if getattr(args, dest) is not None]
        if given:
            raise UsageError(f"{task} sets the agents and the reward itself (a table of recorded trainings); "
                             f"drop {', '.join(given)}")
        if args.learning_curves is not None:
            if args.seed_mean:
                raise UsageError("--seed-mean applies to --benchmark only (learning curves are noise-free)")
            from ma2ml_env.rewards.learning_curves import AGENTS

            folder = _folder_option("--curves-folder", args.curves_folder)
            return EnvSpec(modules=tuple(a for a, _ in AGENTS), reward="learning-curves",
                           reward_kwargs=_frozen({"task": args.learning_curves, "folder": str(folder)}), **common)
        return EnvSpec(modules=tuple(a for a, _ in BENCHMARKS[args.benchmark].agents), reward="tabular",
                       reward_kwargs=_frozen({}), benchmark=args.benchmark, seed_mean=args.seed_mean, **common)
    if args.seed_mean:
        raise UsageError("--seed-mean applies to --benchmark only")
    reward = args.reward or "train"
    for o in REWARD_OPTIONS:
        if getattr(args, o.dest) is not None and reward != o.backend:
            raise UsageError(f"{o.flag} applies to --reward {o.backend} only (got --reward {reward})")
    if args.budget_mode is not None and args.max_flops is None and args.max_params is None:
        raise UsageError("--budget-mode needs a budget: give --max-flops and/or --max-params")
    kw: dict[str, Any] = {}
    if args.max_flops is not None or args.max_params is not None:
        kw["budget"] = CostBudget(max_flops=args.max_flops, max_params=args.max_params,
                                  mode=args.budget_mode or "hard")
    kw.update({o.kwarg: getattr(args, o.dest) for o in REWARD_OPTIONS if getattr(args, o.dest) is not None})
    extra = args.reward_config or {}
    clash = sorted(set(extra) & set(kw))
    if clash:
        raise UsageError(f"--reward-config sets {clash}, which options on the command line already set")
    merged = {**kw, **extra}
    if merged.get("budget") is not None:  # a JSON budget of --reward-config: one type from here on
        try:
            merged["budget"] = CostBudget.coerce(merged["budget"])
        except (ValueError, TypeError) as exc:
            raise UsageError(f"--reward-config budget: {exc}") from None
    # no --modules: the env's choice (the evaluator's own agents when it has them, else the built-in three)
    return EnvSpec(modules=tuple(args.modules or ()), reward=reward, reward_kwargs=_frozen(merged), **common)


def seed_dependent(env: EnvSpec) -> bool:
    """Whether the reward of a pipeline depends on its evaluation seed (known backends only): real
    training, surrogate noise, one recorded training seed drawn per evaluation."""
    if env.benchmark is not None:
        return not env.seed_mean
    if env.reward == "train":
        return True
    if env.reward == "learning-curves":
        return False
    return env.reward == "surrogate" and float(env.reward_kwargs.get("noise_std") or 0) > 0


def _folder_option(flag: str, text: str | None) -> Path | None:
    if text is None:
        return None
    if not text.strip():
        raise UsageError(f"{flag} is empty: give a folder (an empty path would mean the current folder)")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {text!r} is a file, not a folder; give a folder path")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag} {text!r}: {str(parent)!r} is a file, so the folder cannot be created")
            break
    return path


def build_spec(args: argparse.Namespace) -> SearchSpec:
    """The :class:`SearchSpec` of parsed ``ma2ml search`` options, every rule that needs only the options
    checked (``args`` is not changed).

    Raises:
        UsageError: naming the rule and the fix.
    """
    if args.resume and args.overwrite:
        raise UsageError("--resume continues a search and --overwrite starts it again: give one of them")
    env = _env_spec(args)
    batch_size = DEFAULT_BATCH_SIZE if args.batch_size is None else args.batch_size
    if args.batch_size is not None and args.batch_size > args.budget:
        raise UsageError(f"--batch-size {args.batch_size} is larger than --budget {args.budget}: a round cannot "
                         "propose more pipelines than the search evaluates; give --batch-size <= --budget")
    if args.dedupe and seed_dependent(env):
        why = ("its score depends on the training seed" if env.reward == "train" else
               "its noise depends on the evaluation seed" if env.benchmark is None else
               "one recorded training seed is drawn per evaluation (add --seed-mean)")
        raise UsageError(f"{DEDUPE_RULE}; this reward is seed-dependent ({why}), so a repeated pipeline must be "
                         "evaluated again: drop --dedupe")
    out = (_folder_option("--out", args.out) if args.out is not None
           else Path("runs") / f"{args.algo}-{env.label}-seed{args.seed}")
    mf = {"eta": args.eta, "min_level": args.min_level, "sim_workers": args.sim_workers,
          "budget_seconds": args.budget_seconds}
    if args.scheduler is None and any(v is not None for v in mf.values()):
        given = [f"--{k.replace('_', '-')}" for k, v in mf.items() if v is not None]
        raise UsageError(f"{', '.join(given)} set a multi-fidelity search: give --scheduler (sh, hyperband, asha "
                         "or full) too")
    if args.scheduler is not None and args.dedupe:
        raise UsageError("--dedupe is for full-fidelity searches: drop it (a multi-fidelity search continues "
                         "children instead of evaluating them again)")
    mf = {k: v for k, v in mf.items() if v is not None}
    if args.scheduler is not None and env.reward == "train" and "state_dir" not in env.reward_kwargs:
        # children stopped early keep their training state in the run folder: a promotion continues it on any
        # worker (and after --resume) instead of training from scratch
        env = dataclasses.replace(env, reward_kwargs=_frozen({**env.reward_kwargs,
                                                               "state_dir": str((out / "states").absolute())}))
    if args.store is not None and not args.store.strip():
        raise UsageError("--store is empty: give the path of the SQLite file (default: <out>/search.db)")
    store = Path(args.store).expanduser() if args.store is not None else out / "search.db"
    if env.backend == "ray" and not {"address", "temp_dir"} & set(env.backend_kwargs):
        # a local Ray instance writes its session files into the run folder, never into the temp folder
        env = dataclasses.replace(env, backend_kwargs=_frozen({**env.backend_kwargs,
                                                               "temp_dir": str((out / "ray").absolute())}))
    if store.exists() and not store.is_file():
        raise UsageError(f"--store {str(store)!r} is a folder; give the path of a file")
    return SearchSpec(
        algo=args.algo, algo_config=_frozen(args.algo_config or {}), env=env, budget=args.budget, seed=args.seed,
        batch_size=batch_size, out=out, store=store, resume=args.resume, overwrite=args.overwrite,
        dedupe=args.dedupe, tensorboard=_folder_option("--tensorboard", args.tensorboard),
        progress=not args.no_progress, argv=tuple(getattr(args, "argv", None) or sys.argv[1:]),
        scheduler=args.scheduler, **mf)


# ---------------------------------------------------------------------------------------------------
# Spec -> objects, and the checks that need them
# ---------------------------------------------------------------------------------------------------
def build_env(env: EnvSpec) -> Any:
    """The PettingZoo env of ``env``.

    Raises:
        UsageError: the env or its reward backend rejected a value.
    """
    import ma2ml_env

    bkw = dict(env.backend_kwargs)
    try:
        if env.benchmark:
            return ma2ml_env.benchmark_env(env.benchmark, seed_mean=env.seed_mean, backend=env.backend,
                                           workers=env.workers, backend_kwargs=bkw)
        if env.reward == "learning-curves":
            return ma2ml_env.learning_curve_env(**env.reward_kwargs, backend=env.backend, workers=env.workers,
                                                backend_kwargs=bkw)
        return ma2ml_env.parallel_env(modules=list(env.modules) or None, reward=env.reward,
                                      reward_kwargs=dict(env.reward_kwargs), backend=env.backend,
                                      workers=env.workers, backend_kwargs=bkw)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"cannot build the environment: {exc}") from None


def build_algorithm(name: str, config: Mapping[str, Any]) -> Any:
    """The search algorithm ``name`` with options ``config``.

    Raises:
        UsageError: unknown option or bad value.
    """
    from agents.registry import make_algorithm

    try:
        return make_algorithm(name, **dict(config))
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--algo-config for {name!r}: {exc}") from None


def check_device(device: Any, flag: str = "--device") -> None:
    """``UsageError`` unless the torch device ``device`` exists on this machine (``auto`` always does)."""
    if device is None or str(device) in ("auto", "cpu"):
        return
    import torch

    text = str(device)
    if text.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(text.split(":", 1)[1]) if ":" in text and text.split(":", 1)[1].isdigit() else 0
        if count == 0:
            raise UsageError(f"{flag} {text}: this machine has no CUDA device (torch.cuda.is_available() is "
                             f"False); use {flag} cpu, or {flag} auto to train on a GPU only where there is one")
        if index >= count:
            raise UsageError(f"{flag} {text}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")


def check_dataset(reward_kwargs: Mapping[str, Any]) -> Any:
    """Load the dataset of a ``train`` reward the way the backend will, so that missing or malformed data is
    a usage error before the run (not an ``error`` status in every trial). Returns the loaded data.

    Raises:
        UsageError: naming the dataset, what is wrong and the fix.
    """
    from ma2ml_env.data import load_dataset

    dataset = reward_kwargs.get("dataset", "digits")
    spec: dict[str, Any] = dict(dataset) if isinstance(dataset, Mapping) else {"name": dataset}
    for key in ("root", "download", "max_train"):
        if key in reward_kwargs and key not in spec:
            spec[key] = reward_kwargs[key]
    spec.update({k: v for k, v in (reward_kwargs.get("dataset_kwargs") or {}).items() if k not in spec})
    if not isinstance(spec.get("name"), str):
        return None  # an ImageData or a user's object: the backend checks it
    try:
        return load_dataset(spec)
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise UsageError(f"the dataset of --reward train cannot be used: {type(exc).__name__}: {exc}") from None


def check_budget_reachable(env: Any, budget: Any, samples: int = 256) -> float:
    """The fraction of pipelines of ``env``'s space within a hard cost ``budget`` (the smallest-index action
    and ``samples`` uniform random ones; costs counted for one input channel and two classes, a lower
    bound, so a reachable budget is never refused). Nothing is evaluated: only the architectures' costs
    are counted.

    Raises:
        UsageError: none of them fits (every trial would be over budget).
    """
    base = env.unwrapped
    space = getattr(base, "space", None)
    if space is None or budget is None or budget.mode != "hard" or not budget.active:
        return 1.0
    flats = [np.zeros(space.joint_nvec.size, np.int64), *space.codec.sample(np.random.default_rng(0), samples)]
    costs = [(a.flops(1, 2), a.params(1, 2)) for a in (space.build(f).arch for f in flats)]
    fits = sum(not budget.over(f, p) for f, p in costs)
    if not fits:
        f, p = min(costs)
        raise UsageError(f"no pipeline fits the budget: none of {len(flats)} sampled pipelines of this space is "
                         f"within it (the smallest needs {f / 1e6:.2f}M FLOPs, {p / 1e6:.3f}M parameters), so "
                         "every trial would be over budget; raise --max-flops / --max-params")
    return fits / len(flats)


@dataclasses.dataclass
class Prepared:
    """What :func:`preflight` built and checked: close it (``env``, and ``store`` when one was opened)."""

    spec: SearchSpec
    algorithm: Any
    env: Any
    config: dict[str, Any]
    store: Any = None  # an existing store, opened and locked; None: a new one is to be created
    fresh: bool = True  # no evaluation to keep: start the search (again) in the store

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
        self.env.close()


def preflight(spec: SearchSpec) -> Prepared:
    """Build the algorithm and the env of ``spec`` and run every check that needs them, before anything on
    disk is created: the algorithm's options, the device and the dataset (``--reward train``), a hard cost
    budget some pipeline meets, TensorBoard, and the store.

    Raises:
        UsageError: naming the rule and the fix. ImportError: a missing optional dependency.
        agents.store.StoreError, StoreMismatchError, RuntimeError: from the store.
    """
    from agents.base import search_config

    algorithm = build_algorithm(spec.algo, spec.algo_config)
    if spec.tensorboard is not None:
        from agents.tracking import check_tensorboard

        check_tensorboard()
    if spec.env.reward == "train":
        # with Ray the children train on the cluster's machines: their devices (and, on a remote cluster,
        # their data) are not this machine's
        remote = spec.env.backend == "ray"
        if not remote:
            check_device(spec.env.reward_kwargs.get("device"))
        if not (remote and spec.env.backend_kwargs.get("address") is not None):
            check_dataset(spec.env.reward_kwargs)
    env = build_env(spec.env)
    try:
        share = check_budget_reachable(env, spec.env.cost_budget)
        if share < 0.1:
            print(f"{PROG}: warning: only {100 * share:.0f}% of sampled pipelines fit the budget; most trials "
                  "will be over budget (not trained, score 0)", file=sys.stderr)
        config = search_config(algorithm, env, spec.seed, spec.batch_size)
        scheduler = spec.make_scheduler()
        if scheduler is not None:
            from agents.multifidelity import check_fidelity_arguments, fidelity_config

            try:
                check_fidelity_arguments(env, scheduler, spec.sim_workers, spec.budget_seconds)
            except ValueError as exc:
                raise UsageError(f"--scheduler {spec.scheduler}: {exc}") from None
            config.update(fidelity_config(scheduler, spec.sim_workers))
        prepared = Prepared(spec, algorithm, env, config)
        _check_outputs(spec)
        _open_store(prepared)
    except BaseException:
        env.close()
        raise
    return prepared


def _check_outputs(spec: SearchSpec) -> None:
    trials = spec.out / "trials.jsonl"
    if spec.resume or spec.overwrite:
        return
    if trials.exists() and trials.stat().st_size > 0 and not _nothing_done(spec.store):
        raise UsageError(f"{trials} already holds results of an earlier run; pass --resume to continue it, "
                         "--overwrite to replace it, or choose another --out")


def _nothing_done(store_path: Path) -> bool:
    """Whether the store at ``store_path`` exists and holds no trial and no round (a run that stopped before
    its first evaluation: nothing to lose by starting it again)."""
    from agents.cli.runs import stored_counts

    counts = stored_counts(store_path)
    return counts is not None and counts == (0, 0)


def _open_store(p: Prepared) -> None:
    from agents.store import TrialStore

    spec, path = p.spec, p.spec.store
    if not path.exists():
        if spec.resume:
            raise UsageError(f"nothing to resume: there is no search store at {path} (start the search without "
                             "--resume, or give the --out/--store of the search to continue)")
        return
    empty = _nothing_done(path)
    if not (spec.resume or spec.overwrite or empty):
        raise UsageError(f"the store {path} already exists; pass --resume to continue that search, "
                         "--overwrite to start again, or choose another --out/--store")
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise UsageError(f"the store {path} is read-only, and a search writes every evaluation into it; make it "
                         f"and its folder writable (chmod u+w) or start the search in another --out/--store")
    store = TrialStore(path, create=False)
    try:
        store.lock()
        if spec.resume:
            store.check(p.config)
            done = len(store)
            if spec.budget < done and spec.scheduler is None:  # a multi-fidelity budget counts full trainings
                raise UsageError(f"--budget {spec.budget} is below the {done} evaluations the store {path} already "
                                 f"holds; give --budget {done} or more to continue the search")
    except BaseException:
        store.close()
        raise
    p.store = store
    p.fresh = not spec.resume
