"""``ma2ml search`` checks everything before the run (issue 20, defects 1, 4 and 7): bad data, a missing
device, a TensorBoard path that is a file, an absurd batch size, an empty --out, --dedupe with a
seed-dependent reward and a --resume budget below the store are usage errors (exit 2) before any folder
is created; SIGTERM stops a search with a message and status 143, store intact; a closed stdout is no
error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import ma2ml_env
from agents.cli import main
from agents.store import TrialStore
from tests._cli_helpers import refused

ROOT = Path(__file__).resolve().parents[1]
SUR = ["search", "--reward", "surrogate", "--algo", "random", "--no-progress"]
TRAIN = ["search", "--reward", "train", "--algo", "random", "--no-progress", "--budget", "2", "--batch-size", "2",
         "--max-train", "100", "--epoch-scale", "0.05"]

ma2ml_env.register_evaluator("toy", "tests._toys:ToyEvaluator", overwrite=True)


def _refused_before_disk(argv, capsys, tmp_path, *needles):
    out = tmp_path / "out"
    err = refused([*argv, "--out", str(out)], capsys, tmp_path, "usage: ma2ml search", *needles)
    assert not out.exists()
    return err


# -- defect 1: bad data, missing device --------------------------------------------------------------------
def test_a_malformed_npz_dataset_is_a_usage_error_before_any_folder(tmp_path, capsys):
    bad = tmp_path / "floats.npz"
    rng = np.random.default_rng(0)
    np.savez(bad, x_train=rng.random((20, 8, 8)), y_train=np.arange(20) % 2, x_test=rng.random((4, 8, 8)),
             y_test=np.arange(4) % 2)
    _refused_before_disk([*TRAIN, "--dataset", "npz", "--data-root", str(bad)], capsys, tmp_path,
                         "x_train must be uint8")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not an npz archive")
    _refused_before_disk([*TRAIN, "--dataset", "npz", "--data-root", str(junk)], capsys, tmp_path,
                         "dataset of --reward train cannot be used")
    lacking = tmp_path / "lacking.npz"
    np.savez(lacking, x_train=np.zeros((4, 8, 8), np.uint8))
    _refused_before_disk([*TRAIN, "--dataset", "npz", "--data-root", str(lacking)], capsys, tmp_path,
                         "lacks arrays")


def test_device_cuda_without_a_gpu_is_a_usage_error_with_the_fix(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _refused_before_disk([*TRAIN, "--device", "cuda"], capsys, tmp_path, "no CUDA device", "--device cpu")
    _refused_before_disk([*TRAIN, "--reward-config", '{"device": "cuda:1"}'], capsys, tmp_path, "no CUDA device")


# -- defect 4: a TensorBoard file, an absurd batch size, a half-made run folder ------------------------------
def test_tensorboard_at_a_file_and_a_huge_batch_size_are_usage_errors_before_any_folder(tmp_path, capsys):
    (tmp_path / "tb").write_text("a file")
    _refused_before_disk([*SUR, "--budget", "8", "--tensorboard", str(tmp_path / "tb")], capsys, tmp_path,
                         "--tensorboard", "is a file")
    _refused_before_disk([*SUR, "--budget", "8", "--tensorboard", str(tmp_path / "tb" / "logs")], capsys, tmp_path,
                         "cannot be created")
    _refused_before_disk([*SUR, "--budget", "100", "--batch-size", "1000000000"], capsys, tmp_path,
                         "--batch-size 1000000000 is larger than --budget 100")


def test_a_run_folder_half_made_before_the_first_trial_does_not_block_the_corrected_command(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    TrialStore(out / "search.db").close()  # a crash after the store was created, before any trial
    (out / "config.json").write_text("{}")
    (out / "trials.jsonl").write_text("")
    assert main([*SUR, "--budget", "8", "--batch-size", "4", "--out", str(out)]) == 0
    assert len((out / "trials.jsonl").read_text().splitlines()) == 8
    assert json.loads((out / "config.json").read_text())["budget"] == 8


# -- defect 7 ----------------------------------------------------------------------------------------------
def test_empty_out_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused([*SUR, "--budget", "4", "--out", ""], capsys, tmp_path, "usage: ma2ml search", "--out is empty")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("reward", [["--noise", "0.05"], ["--reward", "train"]])
def test_dedupe_with_a_seed_dependent_reward_is_a_usage_error_citing_the_rule(tmp_path, capsys, reward):
    _refused_before_disk([*SUR, "--budget", "4", "--batch-size", "4", "--dedupe", *reward], capsys, tmp_path,
                         "seed-independent rewards only", "drop --dedupe")


def test_dedupe_with_a_seed_independent_reward_runs(tmp_path):
    assert main([*SUR, "--budget", "4", "--batch-size", "4", "--dedupe", "--out", str(tmp_path / "o")]) == 0


def test_resume_with_a_budget_below_the_store_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*SUR, "--budget", "8", "--batch-size", "4", "--out", str(out)]) == 0
    refused([*SUR, "--budget", "4", "--batch-size", "4", "--out", str(out), "--resume"], capsys, tmp_path,
            "usage: ma2ml search", "--budget 4 is below the 8 evaluations", "--budget 8 or more")
    assert main([*SUR, "--budget", "8", "--batch-size", "4", "--out", str(out), "--resume"]) == 0


def test_resume_on_a_read_only_run_folder_says_so(tmp_path, capsys, monkeypatch):
    """Tests run as root, who may write anything: the folder's read-only state is simulated for os.access."""
    out = tmp_path / "out"
    assert main([*SUR, "--budget", "4", "--batch-size", "4", "--out", str(out)]) == 0
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if (mode & os.W_OK and Path(p).resolve()
                        .is_relative_to(out.resolve())) else real(p, mode, **kw))
    refused([*SUR, "--budget", "8", "--batch-size", "4", "--out", str(out), "--resume"], capsys, tmp_path,
            "usage: ma2ml search", "read-only", "chmod u+w")


def _toy_search(out: Path, *extra: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests._cli_toy", "search", "--reward", "toy", "--algo", "random", "--batch-size",
         "2", "--no-progress", "--budget", "400", "--reward-config", '{"delay": 0.02}', "--out", str(out), *extra],
        cwd=ROOT, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, **kw)


def _stored(path: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    except sqlite3.DatabaseError:
        return 0


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_search_with_a_message_and_the_store_intact(tmp_path, sig, code):
    out = tmp_path / "out"
    proc = _toy_search(out, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _stored(out / "search.db") < 4:
        time.sleep(0.02)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "(continue with --resume)" in stdout
    assert f"interrupted by {signal.Signals(sig).name}" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    with TrialStore(out / "search.db", create=False) as store:
        trials = store.completed_trials()
        assert 4 <= len(trials) < 400
        assert [t.index for t in store.trials()] == list(range(len(store)))
    assert len((out / "trials.jsonl").read_text().splitlines()) == len(trials)
    assert json.loads((out / "best.json").read_text())["evaluations"] == len(trials)


def test_stdout_closed_by_its_reader_is_not_an_error(tmp_path):
    """`ma2ml search ... | head -1`: the reader has gone when the results are printed."""
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run([sys.executable, "-m", "agents.cli", *SUR, "--budget", "4", "--batch-size", "4",
                               "--out", str(tmp_path / "o")], cwd=ROOT, stdout=w, stderr=subprocess.PIPE, text=True,
                              timeout=120, check=False)
    finally:
        os.close(w)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
    assert (tmp_path / "o" / "best.json").exists()
