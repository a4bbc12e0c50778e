"""Fault injection: exceptions, crashed and killed workers, hangs, out-of-memory, kill -9 of the search."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import ma2ml_env
from agents.base import run
from agents.store import TrialStore
from ma2ml_env.rewards.parallel import LocalPoolEvaluator, SerialEvaluator, failure_kind
from tests._failing_evaluators import MODES, FailingEvaluator, check_error_trials
from tests._toys import CudaLikeOOM, FaultyEvaluator, ToyEvaluator, ToyRandomSearch

ROOT = Path(__file__).resolve().parents[1]


def _actions(env, n, seed=0):
    """``n`` random flat joint actions (int64 ``[n, D]``, what ``env.evaluate`` takes)."""
    return env.unwrapped.space.codec.sample(np.random.default_rng(seed), n)


def _reference(acts, seeds):
    return [r.score for r in ma2ml_env.parallel_env(reward=ToyEvaluator()).evaluate(acts, seeds)]


@pytest.mark.parametrize(
    ("mode", "kind"),
    [("raise", "error"), ("exit", "crash"), ("kill", "crash"), ("oom", "oom"), ("cuda_oom", "oom"),
     ("oom_status", "oom"), ("hang", "timeout")],
)
@pytest.mark.slow
def test_failed_attempt_is_retried_and_the_batch_completes(mode, kind, tmp_path):
    """Pipeline 1 fails on its first attempt; it is retried (same seed) and every result is correct."""
    ev = LocalPoolEvaluator(FaultyEvaluator(mode, str(tmp_path), only_seeds=[1]), workers=2,
                            time_limit=1.5 if mode == "hang" else None)
    env = ma2ml_env.parallel_env(reward=ev)
    acts, seeds = _actions(env, 3), [0, 1, 2]
    try:
        res = env.evaluate(acts, seeds)
    finally:
        env.close()
    assert [r.status for r in res] == ["ok"] * 3
    assert [r.score for r in res] == _reference(acts, seeds)
    assert res[1].info["attempts"] == 2
    assert [f["kind"] for f in res[1].info["failures"]] == [kind]
    assert "attempts" not in res[0].info  # untouched results are exactly the serial ones
    if kind in ("crash", "timeout"):
        assert ev.workers_started == 3  # the dead / hung worker was replaced


def test_retries_exhausted_give_a_failed_result_and_the_search_goes_on(tmp_path):
    ev = LocalPoolEvaluator(FaultyEvaluator("exit", str(tmp_path), once=False, only_seeds=[2]), workers=2,
                            max_retries=1)
    env = ma2ml_env.parallel_env(reward=ev)
    try:
        res = run(ToyRandomSearch(), env, budget=6, seed=0, batch_size=3)
    finally:
        env.close()
    assert len(res.trials) == 6
    bad = res.trials[2]
    assert (bad.status, bad.score) == ("error", 0.0)
    assert bad.info["attempts"] == 2 and bad.info["failure"] == "crash"
    assert "exited with code 3" in bad.info["error"]
    assert all(t.status == "ok" for i, t in enumerate(res.trials) if i != 2)


def test_timeout_without_retry_and_oom_statuses(tmp_path):
    ev = LocalPoolEvaluator(FaultyEvaluator("hang", str(tmp_path), once=False, only_seeds=[0]), workers=1,
                            time_limit=0.5, max_retries=0)
    env = ma2ml_env.parallel_env(reward=ev)
    try:
        t0 = time.perf_counter()
        res = env.evaluate(_actions(env, 2), [0, 1])
        assert time.perf_counter() - t0 < 30
    finally:
        env.close()
    assert res[0].status == "timeout" and res[0].info["attempts"] == 1
    assert res[1].status == "ok"


def test_serial_wrapper_retries_exceptions_in_process(tmp_path):
    ev = SerialEvaluator(FaultyEvaluator("cuda_oom", str(tmp_path), only_seeds=[0]))
    env = ma2ml_env.parallel_env(reward=ev)
    acts = _actions(env, 2)
    res = env.evaluate(acts, [0, 1])
    assert [r.status for r in res] == ["ok", "ok"] and res[0].info["failures"][0]["kind"] == "oom"
    assert [r.score for r in res] == _reference(acts, [0, 1])
    always = SerialEvaluator(FaultyEvaluator("raise", str(tmp_path), once=False), max_retries=0)
    env2 = ma2ml_env.parallel_env(reward=always)
    r = env2.evaluate(acts[:1], [5])[0]
    assert r.status == "error" and "ValueError: injected failure" in r.info["error"]


@pytest.mark.parametrize("mode", MODES)
def test_failing_user_evaluator_is_an_error_trial_serial(mode):
    env = ma2ml_env.parallel_env(reward=FailingEvaluator(mode), backend="serial",
                                 backend_kwargs={"max_retries": 1})
    assert isinstance(env.evaluator, SerialEvaluator)
    check_error_trials(env, "serial", mode)


@pytest.mark.parametrize("mode", MODES)
def test_failing_user_evaluator_is_an_error_trial_local(mode):
    env = ma2ml_env.parallel_env(reward=FailingEvaluator(mode), backend="local", workers=2,
                                 backend_kwargs={"max_retries": 1})
    try:
        check_error_trials(env, "local", mode)
        assert env.evaluator.workers_started == 2  # an exception is not a crash: no worker was replaced
    finally:
        env.close()


def test_serial_wrapper_streams_error_results_in_order():
    ev = SerialEvaluator(FailingEvaluator("raise"), max_retries=0)
    env = ma2ml_env.parallel_env(reward=ev)
    rows = _actions(env, 6)
    pipes = [env.unwrapped.decode(a) for a in rows]
    seen: list[tuple[int, str]] = []
    res = ev.evaluate(rows, np.arange(6), lambda i, r: seen.append((i, r.status)))
    assert seen == [(i, r.status) for i, r in enumerate(res)]  # one at a time, each as it is final
    assert [r.status == "error" for r in res] == [FailingEvaluator.fails(p) for p in pipes]


def test_failure_kind_recognises_out_of_memory():
    assert failure_kind(MemoryError()) == "oom"
    assert failure_kind(CudaLikeOOM("CUDA out of memory")) == "oom"
    cpu_oom = RuntimeError("DefaultCPUAllocator: can't allocate memory: cannot allocate memory")
    assert failure_kind(cpu_oom) == "oom"
    assert failure_kind(ValueError("bad")) == "error"


def test_worker_start_failure_raises_a_clear_error():
    class Unloadable(ToyEvaluator):
        def __reduce__(self):  # unpickling in the worker fails
            return (_boom, ())

    env = ma2ml_env.parallel_env(reward=LocalPoolEvaluator(Unloadable(), workers=1))
    with pytest.raises(RuntimeError, match="could not load the evaluator"):
        env.evaluate(_actions(env, 1), [0])


def _boom():
    raise RuntimeError("cannot rebuild")


# -- kill -9 of the whole search in the middle of a round --------------------------------------------------
def _stored(path: Path) -> dict[int, tuple[int, float, str]]:
    with sqlite3.connect(str(path)) as db:
        return {i: (s, sc, a) for i, s, sc, a in db.execute("SELECT idx, seed, score, action FROM trials")}


def _search(store: Path, log: Path, backend: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests._durable_search", str(store), str(log), "--backend", backend],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize("backend", ["local", "serial"])
@pytest.mark.slow
def test_search_killed_with_sigkill_resumes_without_losing_or_recomputing(backend, tmp_path):
    store, log = tmp_path / "search.db", tmp_path / "evals.jsonl"
    proc = _search(store, log, backend)
    deadline = time.monotonic() + 60
    n = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if store.exists():
            try:
                n = len(_stored(store))
            except sqlite3.OperationalError:
                continue
            if n >= 6 and n % 4 != 0:  # stop in the middle of a round
                break
    assert proc.poll() is None, f"the search ended before it could be killed: {proc.communicate()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _stored(store)
    assert 6 <= len(before) < 24
    if backend == "local":  # the orphaned workers notice and exit
        pids = {json.loads(x)["pid"] for x in log.read_text().splitlines()}
        end = time.monotonic() + 10
        while time.monotonic() < end and any(_alive(p) for p in pids):
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids)

    again = _search(store, log, backend)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert out.strip() == "24"
    after = _stored(store)
    assert len(after) == 24
    assert all(after[i] == before[i] for i in before)  # nothing lost or changed
    completed = [json.loads(x)["seed"] for x in log.read_text().splitlines()]
    for i, (seed, _, _) in before.items():  # committed evaluations were never run again
        n_runs = completed.count(seed)
        assert n_runs == 1, f"trial {i} (seed {seed}) was evaluated {n_runs} times"

    # ... and the final trials are those of an uninterrupted search with the same arguments
    ref = run(ToyRandomSearch(), ma2ml_env.parallel_env(reward=ToyEvaluator()), budget=24, seed=11,
              batch_size=4)
    trials = TrialStore(store).trials()
    assert [t.score for t in trials] == [t.score for t in ref.trials]
    assert [t.action for t in trials] == [t.action for t in ref.trials]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True
