"""``ma2ml train``: the best pipeline of a real (tiny) training search, trained on train + validation."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from agents.base import best_trial
from agents.cli import main
from agents.cli.train import final_settings, train_best
from agents.store import TrialStore
from tests._cli_helpers import refused

TINY = ["--dataset", "digits", "--batch-size", "2", "--max-train", "200", "--epoch-scale", "0.05",
        "--no-progress"]


def _search(out, *extra, budget=2):
    argv = ["search", "--algo", "random", "--reward", "train", "--budget", str(budget), *TINY, *extra,
            "--out", str(out)]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 2-evaluation digits search (a few seconds), searched once per module; copy before changing it."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield _search(tmp_path_factory.mktemp("search") / "run")
    finally:
        torch.set_num_threads(n)


@pytest.fixture
def run(trained_run, tmp_path, one_torch_thread):
    dst = tmp_path / "run"
    shutil.copytree(trained_run, dst)
    return dst


def test_train_writes_final_json_with_the_best_pipeline_and_its_test_accuracy(run, capsys):
    capsys.readouterr()
    assert main(["train", str(run)]) == 0
    out = capsys.readouterr().out
    final = json.loads((run / "final.json").read_text())
    best = json.loads((run / "best.json").read_text())["best"]
    with TrialStore(run / "search.db", create=False) as store:
        trials = store.completed_trials()
    chosen = best_trial([t for t in trials if t.status == "ok"])

    assert 0.0 <= final["test_accuracy"] <= 1.0
    assert final["pipeline"] == best["pipeline"]
    assert final["trial"]["index"] == chosen.index == best["index"]
    assert final["trial"]["action"] == best["action"]
    assert final["trial"]["score"] == pytest.approx(chosen.score)
    # the search's dataset settings and seed; the whole training set (train + validation), not the
    # search's 200-image subset; the test split
    assert final["settings"] == {"dataset": "digits", "device": "auto", "seed": 0, "epoch_scale": 0.05}
    assert final["search_max_train"] == 200
    from ma2ml_env.rewards.train import resolve_device

    assert final["dataset"] == "digits" and final["device"] == str(resolve_device("auto"))
    assert final["train_images"] == 1438 and final["test_images"] == 359
    assert final["steps"] > 0 and final["params"] > 0 and final["flops"] > 0
    assert f"test accuracy {final['test_accuracy']:.4f} on 359 test images" in out
    assert str(run / "final.json") in out
    assert not (run / "final.json.tmp").exists()


def _fake_train_final(calls):
    def fake(pipeline, **kw):
        calls.append((pipeline, kw))
        return {"test_accuracy": 0.5, "train_images": 1438, "test_images": 359, "flops": 1, "params": 1,
                "seconds": 0.0, "train_loss": 1.0, "steps": 1, "dataset": "digits", "device": kw["device"]}

    return fake


def test_train_overwrite_with_overridden_settings(run, monkeypatch, capsys):
    """--overwrite replaces final.json; --seed/--epoch-scale/--device reach train_final (stubbed here: the
    test above trains for real)."""
    import ma2ml_env.rewards.train as train_mod

    calls = []
    monkeypatch.setattr(train_mod, "train_final", _fake_train_final(calls))
    (run / "final.json").write_text("{}\n")
    assert main(["train", str(run), "--overwrite", "--seed", "3", "--epoch-scale", "0.02",
                 "--device", "cpu"]) == 0
    (pipeline, kw), = calls
    assert kw == {"dataset": "digits", "device": "cpu", "seed": 3, "epoch_scale": 0.02}
    final = json.loads((run / "final.json").read_text())
    assert final["settings"] == kw and final["test_accuracy"] == 0.5
    best = json.loads((run / "best.json").read_text())["best"]
    assert final["pipeline"] == pipeline.to_dict() == best["pipeline"]
    assert "test accuracy 0.5000 on 359 test images" in capsys.readouterr().out


def test_final_settings_drop_search_only_options_and_keep_dataset_options():
    config = {"seed": 4, "reward_kwargs": {
        "dataset": "cifar10", "root": "/data", "max_train": 500, "epoch_scale": 0.25, "device": "cuda",
        "time_limit": 30.0, "failure_score": 0.0,
        "budget": {"max_flops": 5e6, "max_params": None, "mode": "hard"},
        "split_seed": 2, "val_fraction": 0.1, "image_size": 28, "amp": False, "bn_recalibration": 0}}
    assert final_settings(config) == {
        "dataset": "cifar10", "root": "/data", "split_seed": 2, "val_fraction": 0.1, "image_size": 28,
        "amp": False, "bn_recalibration": 0, "device": "cuda", "seed": 4, "epoch_scale": 0.25}
    # no reward_kwargs: train_final's and TrainEvaluator's defaults
    assert final_settings({"reward": "train"}) == {"dataset": "digits", "device": "auto", "seed": 0,
                                                  "epoch_scale": 0.5}


# ---------------------------------------------------------------------------------------------------
# Refusals: exit 2 with the fix named, nothing written
# ---------------------------------------------------------------------------------------------------
def _refused(argv, capsys, folder, *needles):
    return refused(argv, capsys, folder, "usage: ma2ml train", *needles)


def test_train_a_run_of_a_plugin_module_with_the_same_plugin(tmp_path, capsys, one_torch_thread):
    import ma2ml_env

    plugin = tmp_path / "my_dropout.py"
    plugin.write_text(
        "from ma2ml_env import AutoMLModule, Decision, register_module\n\n"
        "@register_module\n"
        "class Drop(AutoMLModule):\n"
        "    name = 'drop'\n"
        "    decisions = (Decision('dropout', (0.0, 0.2), 'dropout before the classifier'),)\n\n"
        "    def apply(self, choice, pipeline):\n"
        "        return pipeline.with_arch(dropout=choice['dropout'])\n")
    try:
        out = _search(tmp_path / "r", "--plugin", str(plugin), "--modules", "nas,hpo,drop")
        capsys.readouterr()
        assert main(["train", str(out), "--plugin", str(plugin)]) == 0
        doc = json.loads((out / "final.json").read_text())
        assert 0.0 <= doc["test_accuracy"] <= 1.0 and "drop" in doc["pipeline"]["choices"]
    finally:
        ma2ml_env.unregister_module("drop")
        sys.modules.pop("my_dropout", None)


def test_train_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _refused(["train", str(tmp_path / "empty")], capsys, tmp_path, "is not a search run folder",
             "no config.json", "ma2ml search")
    _refused(["train", str(tmp_path / "missing")], capsys, tmp_path, "no such folder")
    assert not (tmp_path / "missing").exists()


def test_train_refuses_a_surrogate_run(tmp_path, capsys):
    out = tmp_path / "sur"
    assert main(["search", "--algo", "random", "--reward", "surrogate", "--budget", "4", "--batch-size", "2",
                 "--no-progress", "--out", str(out)]) == 0
    _refused(["train", str(out)], capsys, tmp_path, "--reward surrogate", "no data to train on",
             "ma2ml search --reward train")


def test_train_refuses_a_tabular_benchmark_run(run, capsys):
    cfg = json.loads((run / "config.json").read_text())
    cfg.update(reward="tabular", benchmark="nb201/cifar10", reward_kwargs={})
    (run / "config.json").write_text(json.dumps(cfg))
    _refused(["train", str(run)], capsys, run, "--benchmark nb201/cifar10", "no data to train on")


def test_train_refuses_a_run_without_ok_trials(tmp_path, capsys, one_torch_thread):
    # a time limit no child meets: every trial times out, so nothing is trainable
    out = _search(tmp_path / "tight", "--time-limit", "1e-9")
    with TrialStore(out / "search.db", create=False) as store:
        assert {t.status for t in store.trials()} == {"timeout"}
    _refused(["train", str(out)], capsys, tmp_path, "no trial of", "status ok", "timeout",
             "no pipeline to train")


def test_train_refuses_to_replace_final_json(run, capsys):
    (run / "final.json").write_text('{"test_accuracy": 0.9}\n')
    _refused(["train", str(run)], capsys, run, "final.json already exists", "--overwrite")
    assert json.loads((run / "final.json").read_text()) == {"test_accuracy": 0.9}


def test_train_reads_trials_jsonl_without_a_store(run, monkeypatch):
    import ma2ml_env.rewards.train as train_mod

    (run / "search.db").unlink()
    best = json.loads((run / "best.json").read_text())["best"]
    monkeypatch.setattr(train_mod, "train_final", _fake_train_final([]))
    doc = train_best(run)
    assert doc["trials_source"] == str(run / "trials.jsonl")
    assert doc["pipeline"] == best["pipeline"] and doc["trial"]["index"] == best["index"]


def test_train_refuses_a_run_whose_search_is_still_running(run, capsys):
    """Issue 20 defect 3: the store locked by a live search means its best may still change."""
    store = TrialStore(run / "search.db", create=False)
    store.lock()  # what the running search holds (a separate open file description: flock conflicts)
    try:
        refused(["train", str(run)], capsys, run, "usage: ma2ml train", "still running",
                "wait for the search to finish")
        assert not (run / "final.json").exists()
    finally:
        store.close()


def test_train_on_a_missing_cuda_device_is_a_usage_error(run, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    refused(["train", str(run), "--device", "cuda"], capsys, run, "usage: ma2ml train", "no CUDA device",
            "--device cpu")
