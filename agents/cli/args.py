"""The ``ma2ml`` command line's options: argument types, the reward-backend and evaluation-backend options
(each declared once, in :data:`REWARD_OPTIONS` and :data:`BACKEND_OPTIONS`, with their help defaults read
from the code they configure) and the argument groups of ``ma2ml search``. :mod:`agents.cli.main`
assembles the parser; :mod:`agents.cli.spec` turns the parsed options into a :class:`~agents.cli.spec.SearchSpec`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.registry import registered_algorithms

PROG = "ma2ml"
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


@dataclasses.dataclass(frozen=True)
class BackendOption:
    """A command-line option that sets one keyword argument of the evaluation backends (``--backend``) it
    applies to. Declared once: the parser, the check that it matches ``--backend`` and the backend's
    keyword arguments all come from :data:`BACKEND_OPTIONS`."""

    flag: str
    kwarg: str
    backends: tuple[str, ...]
    help: str
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    default_help: Callable[[], str] | None = None

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


def positive_int(text: str) -> int:
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


def positive_float(text: str) -> float:
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


def nonneg_int(text: str) -> int:
    """An integer >= 0 (an argparse type)."""
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _datasets() -> tuple[str, ...]:
    from ma2ml_env.data import DATASETS

    return tuple(DATASETS)


#: Every evaluation-backend option of ``ma2ml search`` (``--workers`` is an argument of every backend).
BACKEND_OPTIONS = (
    BackendOption("--max-retries", "max_retries", ("serial", "local", "ray"),
                  "retries of a pipeline whose worker crashed, hung past --trial-timeout or ran out of memory",
                  nonneg_int, "N", lambda: f"{_backend_default('local', 'max_retries')} with --backend local/ray, "
                                           "none with serial"),
    BackendOption("--trial-timeout", "time_limit", ("local", "ray"),
                  "hard time limit per evaluation with --backend local/ray: the worker is killed",
                  positive_float, "SECONDS", lambda: _backend_default("local", "time_limit")),
    BackendOption("--ray-address", "address", ("ray",),
                  "Ray cluster: auto (this machine's cluster) or ray://HEAD:10001", None, "ADDR",
                  lambda: "a local Ray"),
    BackendOption("--gpus-per-trial", "num_gpus_per_trial", ("ray",), "GPUs of each Ray task",
                  _nonneg_float, "G", lambda: _backend_default("ray", "num_gpus_per_trial")),
    BackendOption("--ray-temp-dir", "temp_dir", ("ray",),
                  "folder for the session files (logs, sockets) of the local Ray instance a search starts "
                  "(at most 48 characters: Ray's socket paths)", None, "DIR", lambda: "<out>/ray"),
)

#: Every reward-backend option of ``ma2ml search``.
REWARD_OPTIONS = (
    RewardOption("--task", "surrogate", "task", "surrogate task: 'default' or an integer seed of a random task",
                 _task, "default|INT"),
    RewardOption("--noise", "surrogate", "noise_std", "standard deviation of the seeded evaluation noise",
                 _nonneg_float, "STD"),
    RewardOption("--dataset", "train", "dataset",
                 f"dataset: {', '.join(_datasets())} (digits is built in; the others read --data-root; "
                 "fashion_mnist defaults to Debian's dataset-fashion-mnist files)", choices=_datasets()),
    RewardOption("--data-root", "train", "root", "data folder for cifar10/cifar100/imagefolder/mnist/"
                 "fashion_mnist, or the .npz file for npz (stored as an absolute path)", _abspath, "PATH"),
    RewardOption("--device", "train", "device", "where children train: auto = cuda if available",
                 choices=("auto", "cpu", "cuda")),
    RewardOption("--max-train", "train", "max_train", "train on at most N images (seeded subset; quick searches)",
                 positive_int, "N"),
    RewardOption("--time-limit", "train", "time_limit",
                 "time limit per evaluation; slower children get status timeout", positive_float, "SECONDS"),
    RewardOption("--epoch-scale", "train", "epoch_scale", "training passes = the pipeline's epochs * X",
                 positive_float, "X"),
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
class HelpFormatter(argparse.RawDescriptionHelpFormatter):
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
    from ma2ml_env import BENCHMARKS, DEFAULT_MODULES, registered_evaluators

    g = p.add_argument_group("environment")
    g.add_argument("--reward", default=None, choices=registered_evaluators(), metavar="BACKEND",
                   help=f"reward backend: {', '.join(registered_evaluators())} (default: train)")
    g.add_argument("--modules", type=_modules, default=None, metavar="LIST",
                   help=f"comma-separated AutoML modules, one agent each, in pipeline order "
                        f"(default: {','.join(DEFAULT_MODULES)})")
    g.add_argument("--benchmark", default=None, choices=tuple(BENCHMARKS), metavar="NAME",
                   help="search a tabular task of recorded real trainings instead (its own agents and reward; "
                        "`ma2ml list benchmarks`), e.g. nb201/cifar10 (default: none)")
    g.add_argument("--learning-curves", default=None, metavar="TASK",
                   help="search a learning-curve task (LCBench; agents net, reg, opt; fidelity: epochs) from "
                        "--curves-folder, e.g. 7593 (default: none)")
    g.add_argument("--curves-folder", default=None, metavar="DIR",
                   help="the folder holding lcbench_<TASK>.npz, needed with --learning-curves (default: none)")
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
    g.add_argument("--budget", type=positive_int, default=100, metavar="N",
                   help="number of pipelines to evaluate (default: 100)")
    g.add_argument("--seed", type=nonneg_int, default=0, metavar="S",
                   help="seed of the algorithm and of the evaluations, >= 0 (default: 0)")
    g.add_argument("--batch-size", type=positive_int, default=None, metavar="K",
                   help="joint actions proposed and evaluated per round, at most --budget (default: 8)")
    m = p.add_argument_group("multi-fidelity: stop weak children early (a reward with fidelity levels, e.g. "
                             "--learning-curves)")
    m.add_argument("--scheduler", default=None, choices=("sh", "hyperband", "asha", "full"),
                   help="sh: successive halving; hyperband; asha: asynchronous successive halving; full: no early "
                        "stopping, on the same simulated clock; --budget then counts full trainings "
                        "(default: none, every child trained fully)")
    m.add_argument("--eta", type=positive_float, default=None, metavar="ETA",
                   help="keep the best 1/ETA of each rung; rungs ETA apart, > 1 (default: 3)")
    m.add_argument("--min-level", type=positive_float, default=None, metavar="R",
                   help="the lowest rung's resource, e.g. epochs (default: the reward's lowest level)")
    m.add_argument("--sim-workers", type=positive_int, default=None, metavar="W",
                   help="simulated parallel workers sharing the clock (default: 1)")
    m.add_argument("--budget-seconds", type=positive_float, default=None, metavar="S",
                   help="also stop at S simulated training seconds (default: no time limit)")


def add_parallel_arguments(p: argparse.ArgumentParser) -> None:
    from ma2ml_env.rewards.parallel import BACKENDS

    g = p.add_argument_group("parallel evaluation, durable searches, logging")
    g.add_argument("--backend", choices=tuple(BACKENDS), default="serial",
                   help="how a round's pipelines are evaluated: serial, local (worker processes; one per GPU "
                        "with --device cuda) or ray (Ray tasks) (default: serial)")
    g.add_argument("--workers", type=positive_int, default=None, metavar="K",
                   help="concurrent evaluations of --backend local/ray (default: local: one per GPU or per "
                        "CPU core; ray: what the cluster holds)")
    for o in BACKEND_OPTIONS:
        a = g.add_argument(o.flag, type=o.type, default=None, metavar=o.metavar, help=o.help)
        a.code_default = o.default_help  # type: ignore[attr-defined]
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


def add_plugin_argument(p: argparse.ArgumentParser) -> None:
    """``--plugin``, for every command that builds modules or rewards (:mod:`agents.cli` imports the plugins
    before the parser is built)."""
    x = p.add_argument_group("plugins")
    x.add_argument("--plugin", action="append", default=None, metavar="MODULE",
                   help="import a module path or .py file first, e.g. one that registers your AutoML modules "
                        "(register_module) or reward backends (register_evaluator); repeatable (default: none)")


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    add_plugin_argument(p)
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="results folder: trials.jsonl, best.json, best.txt, config.json "
                        "(default: runs/<algo>-<reward>-seed<S>)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in --out (default: refuse to)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (default: show it)")


