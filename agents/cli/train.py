"""``ma2ml train``: train the best pipeline of a search run on train + validation; report its test accuracy.

    ma2ml search --algo tpe --reward train --dataset digits --budget 50 --out runs/digits
    ma2ml train runs/digits                       # writes runs/digits/final.json
    ma2ml train runs/digits --device cuda --epoch-scale 1 --overwrite

The search's reward only ever saw the validation split, so the test accuracy of the pipeline it chose is
an unbiased estimate. :func:`train_best` reads the run folder (its store, else ``trials.jsonl``), takes the
best trial whose status is ``ok`` (:func:`agents.base.best_trial` among them), decodes its joint action with
the run's modules, and calls :func:`ma2ml_env.rewards.train.train_final` with the run's dataset settings
(``config.json``'s ``reward_kwargs``: dataset, data root, ``epoch_scale``, dataset options; the device and
seed of the search) unless overridden. Search-only settings (FLOPs budget, time limit, failure score) do
not apply; neither does the search's ``max_train`` subset: the final training uses the whole training set.
Every check runs before anything is trained or written; ``final.json`` is
written (atomically) only when the training succeeded.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
from pathlib import Path
from typing import Any

from agents.base import best_trial
from agents.cli.args import UsageError
from agents.cli.runs import read_config, read_run, search_running, trial_pipeline
from agents.jsonio import jsonable

__all__ = ["add_train_command", "final_settings", "train_best"]

FINAL_FILE = "final.json"
#: TrainEvaluator settings that only mean something during a search
_SEARCH_ONLY = ("budget", "time_limit", "failure_score", "max_train", "device", "epoch_scale")


def _check_run(run_dir: Path, overwrite: bool) -> dict[str, Any]:
    config = read_config(run_dir)
    reward = config.get("reward")
    if config.get("benchmark") or reward != "train":
        what = f"--benchmark {config['benchmark']}" if config.get("benchmark") else f"--reward {reward}"
        raise UsageError(f"the run {str(run_dir)!r} searched with {what}, which has no data to train on (its "
                         "scores come from a model or a table, not from training); `ma2ml train` needs a "
                         "run of `ma2ml search --reward train`")
    store = Path(str(config.get("store") or run_dir / "search.db"))
    for path in dict.fromkeys((run_dir / "search.db", store)):
        if search_running(path):
            raise UsageError(f"a search is still running on {str(run_dir)!r} (its store {path} is locked by a live "
                             "process); its best pipeline may still change, so training it now would report a "
                             "stale best: wait for the search to finish, or stop it, then run `ma2ml train` again")
    if (run_dir / FINAL_FILE).exists() and not overwrite:
        raise UsageError(f"{run_dir / FINAL_FILE} already exists; pass --overwrite to train again and "
                         "replace it")
    return config


def final_settings(config: dict[str, Any], *, device: str | None = None, seed: int | None = None,
                   epoch_scale: float | None = None) -> dict[str, Any]:
    """The keyword arguments of :func:`~ma2ml_env.rewards.train.train_final` for a run's ``config.json``:
    its ``reward_kwargs`` minus the search-only settings, with the search's device, seed and epoch scale
    unless given (imports torch)."""
    from ma2ml_env.rewards.train import TrainEvaluator, train_final

    search = dict(config.get("reward_kwargs") or {})
    evaluator = inspect.signature(TrainEvaluator).parameters
    final = inspect.signature(train_final).parameters
    from ma2ml_env.data import load_dataset

    loader = inspect.signature(load_dataset).parameters
    kw: dict[str, Any] = {}
    for key, value in search.items():
        if key in _SEARCH_ONLY or key in ("pipeline", "seed"):
            continue
        if key in final or key in loader or key not in evaluator:  # the rest of TrainEvaluator: search only
            kw[key] = value
    kw.pop("name_or_spec", None)
    default_scale = evaluator["epoch_scale"].default
    kw["device"] = device if device is not None else str(search.get("device") or "auto")
    kw["seed"] = int(seed if seed is not None else config.get("seed", 0))
    if epoch_scale is None:
        epoch_scale = search.get("epoch_scale", default_scale)
    kw["epoch_scale"] = float(epoch_scale)
    kw.setdefault("dataset", evaluator["dataset"].default)
    return kw


def train_best(run_dir: str | os.PathLike, *, device: str | None = None, seed: int | None = None,
               epoch_scale: float | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train the best ``ok`` pipeline of the search run ``run_dir`` on train + validation, write
    ``run_dir/final.json`` and return its content: the :func:`~ma2ml_env.rewards.train.train_final` dict
    (``test_accuracy``, ``train_images``, ``test_images``, ``flops``, ``params``, ``seconds``, ...) plus
    ``pipeline`` (its ``to_dict()``), ``trial`` (index, round, seed, score, status, accuracy, actions of the
    trial it was) and ``settings`` (the keyword arguments of ``train_final`` used) and ``run``.

    Args:
        run_dir: a folder written by ``ma2ml search --reward train``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``... (default: the search's device, else auto).
        seed: training seed (default: the search's seed).
        epoch_scale: training passes = the pipeline's epochs * this (default: the search's).
        overwrite: replace an existing ``final.json``.

    Raises:
        UsageError: not a run folder, a run whose reward was not ``train``, no ``ok`` trial, or
            ``final.json`` exists without ``overwrite`` (all before anything is trained or written).
        Exceptions of the training itself (e.g. FileNotFoundError for missing data) propagate; nothing
        is written then.
    """
    run_dir = Path(run_dir)
    config = _check_run(run_dir, overwrite)
    run = read_run(run_dir)
    ok = [t for t in run.trials if t.status == "ok"]
    if not ok:
        seen = sorted({t.status for t in run.trials})
        raise UsageError(f"no trial of {str(run_dir)!r} finished with status ok ({len(run.trials)} trials"
                         f"{', statuses ' + ', '.join(seen) if seen else ''}): there is no pipeline to train")
    best = best_trial(ok)
    modules = config.get("modules")
    if not isinstance(modules, list) or not modules:
        raise UsageError(f"{run_dir / 'config.json'} names no modules: cannot decode the run's pipelines")
    from ma2ml_env import SearchSpace, make_module

    try:
        space = SearchSpace([make_module(name) for name in modules])
        pipeline = trial_pipeline(space.decode, best)
    except (KeyError, ValueError) as exc:
        raise UsageError(f"cannot decode trial {best.index} of {str(run_dir)!r} with its modules {modules}: "
                         f"{exc}") from None
    settings = final_settings(config, device=device, seed=seed, epoch_scale=epoch_scale)
    from agents.cli.spec import check_device

    check_device(settings["device"], "--device" if device is not None else "the search's --device")

    from ma2ml_env.rewards.train import train_final

    result = train_final(pipeline, **settings)
    doc = jsonable({
        **result,
        "run": str(run_dir),
        "trial": {k: v for k, v in best.to_dict().items() if k not in ("info",)},
        "pipeline": pipeline.to_dict(),
        "settings": settings,
        "search_max_train": (config.get("reward_kwargs") or {}).get("max_train"),
        "trials_source": str(run.source),
    })
    tmp = run_dir / (FINAL_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, run_dir / FINAL_FILE)
    return doc


def _summary(doc: dict[str, Any]) -> str:
    t, s = doc["trial"], doc["settings"]
    return (f"trial {t['index']} (validation score {t['score']:.4f}) trained on {doc['train_images']} "
            f"{doc['dataset']} images ({doc['device']}, seed {s['seed']}, epoch scale {s['epoch_scale']:g}, "
            f"{doc['seconds']:.1f}s)\n"
            f"test accuracy {doc['test_accuracy']:.4f} on {doc['test_images']} test images\n"
            f"wrote {Path(doc['run']) / FINAL_FILE}")


def cmd_train(args: argparse.Namespace) -> int:
    doc = train_best(args.RUN_DIR, device=args.device, seed=args.seed, epoch_scale=args.epoch_scale,
                     overwrite=args.overwrite)
    print(_summary(doc))
    return 0


def add_train_command(sub: Any) -> argparse.ArgumentParser:
    """Register ``ma2ml train`` on the CLI's subparsers."""
    from agents.cli.args import HelpFormatter, add_plugin_argument, nonneg_int, positive_float

    p = sub.add_parser(
        "train", formatter_class=HelpFormatter,
        help="train the best pipeline of a --reward train search on train+validation; report test accuracy",
        description="Train the best pipeline (the best trial with status ok) of a `ma2ml search --reward "
                    "train` run on the full training set (train + validation) with the run's dataset "
                    "settings, report its test accuracy and write RUN_DIR/final.json (the result, the "
                    "pipeline, the trial it was and the settings used).",
        epilog="examples:\n"
               "  ma2ml train runs/ma2ml-train-seed0\n"
               "  ma2ml train runs/ma2ml-train-seed0 --device cuda --epoch-scale 1 --overwrite",
    )
    p.add_argument("RUN_DIR",
                   help="folder written by `ma2ml search --reward train --out` (no default: required)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="where to train: auto = cuda if available "
                        "(default: the search's --device, else auto)")
    p.add_argument("--seed", type=nonneg_int, default=None, metavar="S",
                   help="training seed, >= 0 (default: the search's --seed)")
    p.add_argument("--epoch-scale", type=positive_float, default=None, metavar="X",
                   help="training passes = the pipeline's epochs * X (default: the search's --epoch-scale)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing RUN_DIR/final.json (default: refuse to)")
    add_plugin_argument(p)  # the run's own modules, when a plugin registered them
    p.set_defaults(func=cmd_train, command_parser=p)
    return p
