"""The ``ma2ml`` command-line application (the library is :mod:`ma2ml_env` and the rest of :mod:`agents`).

    ma2ml list                                             # algorithms, modules, reward backends
    ma2ml search --algo tpe --reward surrogate --budget 200 --seed 0
    ma2ml search --algo ma2ml --reward train --dataset digits --budget 50 --max-flops 5M
    ma2ml train runs/ma2ml-train-seed0                     # the best pipeline on train + validation
    ma2ml report runs/tpe-surrogate-seed0                  # table and best-so-far curves

Modules: :mod:`~agents.cli.main` (the parser, ``list``, the entry point :func:`main`),
:mod:`~agents.cli.args` (every option declared once), :mod:`~agents.cli.spec` (the typed, frozen
:class:`~agents.cli.spec.SearchSpec` and the preflight checks), :mod:`~agents.cli.search` (``search``),
:mod:`~agents.cli.train` (``train``), :mod:`~agents.cli.report` (``report``) and :mod:`~agents.cli.runs`
(reading a run folder without changing it). A bad value raises :class:`UsageError`, reported like argparse
errors with exit code 2, before anything on disk is created.
"""

from agents.cli.args import UsageError
from agents.cli.main import build_parser, load_plugin, main, plugins_in
from agents.cli.spec import SearchSpec, build_spec

__all__ = ["SearchSpec", "UsageError", "build_parser", "build_spec", "load_plugin", "main", "plugins_in"]
