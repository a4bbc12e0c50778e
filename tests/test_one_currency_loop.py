"""One currency through the search loop: every joint action that ``run`` evaluates is validated exactly
once (``JointActionCodec.validate_batch``, counted per row by a spy), whichever backend evaluates it, with
or without a durable store.

The spy counts in every process: in this one through ``monkeypatch``; in the workers of the ``local`` and
``ray`` backends because they import this module to unpickle :class:`SpiedToy`, and this module installs
the same spy when ``MA2ML_VALIDATION_SPY`` names the file the counts go to.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import ma2ml_env
from agents.base import run
from agents.registry import make_algorithm
from agents.store import TrialStore
from ma2ml_env.codec import JointActionCodec
from tests._toys import ToyEvaluator

SPY_VAR = "MA2ML_VALIDATION_SPY"
_REAL = JointActionCodec.validate_batch


def _spied(self: JointActionCodec, actions):
    out = _REAL(self, actions)
    with open(os.environ[SPY_VAR], "a") as f:
        f.write(f"{os.getpid()} {len(out)}\n")
    return out


if os.environ.get(SPY_VAR):  # a worker process importing this module to unpickle SpiedToy
    JointActionCodec.validate_batch = _spied


class SpiedToy(ToyEvaluator):
    """The toy evaluator, defined here so that a worker process imports this module (and its spy); each
    result says whether the spy was in place where it was computed."""

    name = "spied-toy"

    def evaluate_pipeline(self, pipeline, seed):
        r = super().evaluate_pipeline(pipeline, seed)
        return replace(r, info={**r.info, "spied": JointActionCodec.validate_batch is _spied})


def _validations(path: Path) -> tuple[int, int, set[int]]:
    """(calls, rows, pids) of the validations the spy recorded."""
    lines = path.read_text().split() if path.exists() else []
    pids, rows = [int(p) for p in lines[::2]], [int(n) for n in lines[1::2]]
    return len(rows), sum(rows), set(pids)


@pytest.fixture(scope="module")
def spy_file(tmp_path_factory):
    return tmp_path_factory.mktemp("spy") / "validations.txt"


@pytest.fixture
def spy(spy_file, monkeypatch):
    """Counts validations (this process and workers started from now on) into an emptied ``spy_file``."""
    spy_file.unlink(missing_ok=True)
    monkeypatch.setenv(SPY_VAR, str(spy_file))
    monkeypatch.setattr(JointActionCodec, "validate_batch", _spied)
    return spy_file


@pytest.fixture(scope="module")
def ray_local(spy_file):
    """A local Ray instance for the module, its workers told where the spy's file is."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip('ray is not installed (pip install "ma2ml[ray]")')
    import ray

    if ray.is_initialized():
        pytest.skip("Ray was started elsewhere, without the spy's environment")
    temp_dir = tempfile.mkdtemp(prefix="ray")  # Ray's session files: short (socket paths), removed after
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir,
             runtime_env={"env_vars": {SPY_VAR: str(spy_file)}})
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


BUDGET, BATCH = 20, 8  # rounds of 8, 8 and 4


def _search(env, store):
    res = run(make_algorithm("random"), env, budget=BUDGET, seed=1, batch_size=BATCH, store=store)
    assert [t.index for t in res.trials] == list(range(BUDGET))
    assert all(t.status == "ok" for t in res.trials)
    return res


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "store"])
@pytest.mark.parametrize("reward", ["surrogate", "toy"])
def test_serial_backend_validates_each_joint_action_once(spy, tmp_path, reward, durable):
    env = ma2ml_env.parallel_env(reward="surrogate" if reward == "surrogate" else SpiedToy())
    store = TrialStore(tmp_path / "s.db") if durable else None
    _search(env, store)
    calls, rows, pids = _validations(spy)
    assert rows == BUDGET and calls == 3  # one validation per proposed batch, none downstream
    assert pids == {os.getpid()}


@pytest.mark.slow
@pytest.mark.parametrize("durable", [False, True], ids=["memory", "store"])
@pytest.mark.parametrize("backend", ["local", "ray"])
def test_worker_backends_validate_each_joint_action_once(spy, tmp_path, request, backend, durable):
    if backend == "ray":
        request.getfixturevalue("ray_local")
    env = ma2ml_env.parallel_env(reward=SpiedToy(), backend=backend, workers=2)
    try:
        store = TrialStore(tmp_path / "s.db") if durable else None
        res = _search(env, store)
    finally:
        env.close()
    assert os.getpid() not in {t.info["pid"] for t in res.trials}  # evaluated in the workers ...
    assert all(t.info["spied"] for t in res.trials)  # ... where the spy was watching too ...
    calls, rows, pids = _validations(spy)
    assert rows == BUDGET and calls == 3  # ... and validated once, in the search loop, never there
    assert pids == {os.getpid()}


def test_the_spy_counts_what_the_loop_must_not_do(spy):
    """The control: ``env.evaluate`` of a direct caller validates (counted); ``validate=False`` does not."""
    env = ma2ml_env.parallel_env(reward="surrogate")
    rows = env.unwrapped.codec.sample(np.random.default_rng(0), 4)
    env.unwrapped.evaluate(rows, np.arange(4))
    assert _validations(spy)[:2] == (1, 4)
    env.unwrapped.evaluate(rows, np.arange(4), validate=False)
    assert _validations(spy)[:2] == (1, 4)
