"""Parallel evaluation backends: same results as serial evaluation, streaming, pinning, Ray."""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
import sys
import tempfile
import time

import numpy as np
import pytest

import ma2ml_env
from agents.base import run
from ma2ml_env.rewards.base import EvalResult, PipelineEvaluator
from ma2ml_env.rewards.devices import pin_cuda_device, visible_gpus
from ma2ml_env.rewards.parallel import (
    LocalPoolEvaluator,
    RayEvaluator,
    SerialEvaluator,
    wrap_evaluator,
)
from tests._failing_evaluators import MODES, FailingEvaluator, check_error_trials
from tests._toys import ToyEvaluator, ToyRandomSearch

HAS_RAY = importlib.util.find_spec("ray") is not None


def _actions(env, n, seed=0):
    """``n`` random flat joint actions (int64 ``[n, D]``, what ``env.evaluate`` takes)."""
    return env.unwrapped.space.codec.sample(np.random.default_rng(seed), n)


def _same(a: list[EvalResult], b: list[EvalResult]) -> None:
    assert [r.to_dict() for r in a] == [r.to_dict() for r in b]


class EnvReporter(PipelineEvaluator):
    """Reports the worker's pinning and thread variables, and its copy's ``device``."""

    name = "env-reporter"

    def __init__(self, device=None):
        self.device = device

    def evaluate_pipeline(self, pipeline, seed):
        time.sleep(0.05)
        return EvalResult(score=0.5, info={"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                                           "omp": os.environ.get("OMP_NUM_THREADS"), "pid": os.getpid(),
                                           "device": None if self.device is None else str(self.device)})


@pytest.fixture(scope="module")
def pool_env():
    """A surrogate env with noise behind a 2-worker local pool (started once for the module)."""
    e = ma2ml_env.parallel_env(reward="surrogate", reward_kwargs={"noise_std": 0.02}, backend="local",
                               workers=2)
    yield e
    e.close()


def test_local_pool_matches_serial_surrogate(pool_env):
    serial = ma2ml_env.parallel_env(reward="surrogate", reward_kwargs={"noise_std": 0.02})
    acts = _actions(serial, 10)
    seeds = list(range(100, 110))
    pooled = pool_env.evaluate(acts, seeds)
    # a worker evaluates one row per task: exactly what the serial evaluator gives each row alone (the
    # surrogate's one-row path), and the batch path's numbers to the last bit or two
    _same(pooled, [serial.evaluate(acts[i:i + 1], seeds[i:i + 1])[0] for i in range(10)])
    np.testing.assert_allclose(pooled.score, serial.evaluate(acts, seeds).score, rtol=1e-15, atol=0)
    assert isinstance(pool_env.evaluator, LocalPoolEvaluator) and pool_env.evaluator.workers == 2
    # env.step goes through the pool too (one evaluator call, one row)
    pool_env.reset(seed=3)
    serial.reset(seed=3)
    _, r1, *_ = pool_env.step(serial.codec.decode(acts[0]))
    _, r2, *_ = serial.step(serial.codec.decode(acts[0]))
    assert r1 == r2


def test_local_pool_search_matches_serial_and_uses_workers():
    serial = ma2ml_env.parallel_env(reward=ToyEvaluator())
    par = ma2ml_env.parallel_env(reward=ToyEvaluator(delay=0.02), backend="local", workers=2)
    try:
        a = run(ToyRandomSearch(), serial, budget=16, seed=5, batch_size=4)
        par.evaluator.start()
        b = run(ToyRandomSearch(), par, budget=16, seed=5, batch_size=4)
    finally:
        par.close()
    assert [t.score for t in a.trials] == [t.score for t in b.trials]
    assert [t.action for t in a.trials] == [t.action for t in b.trials]
    assert len({t.info["pid"] for t in b.trials}) == 2  # both workers evaluated pipelines
    assert {t.info["pid"] for t in b.trials}.isdisjoint({os.getpid()})


def test_streaming_reports_each_result_once(pool_env):
    ev = pool_env.evaluator
    got: dict[int, EvalResult] = {}
    order: list[int] = []

    def on_result(i, r):
        assert i not in got  # reported once, when final
        got[i] = r
        order.append(i)

    rows = _actions(pool_env, 6, seed=1)
    res = ev.evaluate(rows, np.arange(6), on_result)
    assert sorted(got) == list(range(6))
    assert [got[i] for i in range(6)] == list(res)  # returned in input order
    _same(res, ev.evaluate(rows, np.arange(6)))  # evaluate is the same without the callback
    assert not hasattr(ev, "on_result")


def test_wrapper_pickles_without_processes(pool_env):
    pool_env.evaluate(_actions(pool_env, 2), [0, 1])  # the pool is running
    copy = pickle.loads(pickle.dumps(pool_env.evaluator))
    assert copy._pool == [] and copy.workers == 2


def test_workers_pinned_to_gpus_and_threads_capped():
    ev = LocalPoolEvaluator(EnvReporter(), workers=2, devices=["3", "5"], threads_per_worker=1)
    env = ma2ml_env.parallel_env(reward=ev)
    try:
        ev.start()  # both workers ready before the batch: each gets pipelines
        res = env.evaluate(_actions(env, 6), list(range(6)))
    finally:
        env.close()
    by_pid = {r.info["pid"]: r.info["cuda"] for r in res}
    assert sorted(set(by_pid.values())) == ["3", "5"] and len(by_pid) == 2
    if "OMP_NUM_THREADS" not in os.environ:
        assert {r.info["omp"] for r in res} == {"1"}
    # a CPU evaluator is not pinned by default
    assert LocalPoolEvaluator(ToyEvaluator(), workers=1).devices == []


def test_pin_cuda_device_maps_any_index_to_the_visible_gpu():
    class E:
        device = "cuda:3"

    e = E()
    pin_cuda_device(e)
    assert e.device == "cuda:0"  # the worker's only visible GPU
    if importlib.util.find_spec("torch") is not None and "torch" in sys.modules:
        import torch

        e.device = torch.device("cuda", 2)
        pin_cuda_device(e)
        assert e.device == torch.device("cuda", 0)


def test_cuda_evaluator_gets_one_gpu_per_worker_seen_as_cuda_0(monkeypatch):
    """The GPU path without a GPU: the pool reads the declared ``device``, pins each worker to one of the
    visible GPUs and rewrites the worker's copy to ``cuda:0`` (nothing touches CUDA itself)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    inner = EnvReporter(device="cuda:1")
    ev = LocalPoolEvaluator(inner, threads_per_worker=None)
    assert ev.devices == ["3", "5"] and ev.workers == 2  # one worker per visible GPU
    env = ma2ml_env.parallel_env(reward=ev)
    try:
        ev.start()
        res = env.evaluate(_actions(env, 6), list(range(6)))
    finally:
        env.close()
    assert {r.info["cuda"] for r in res} == {"3", "5"}
    assert {r.info["device"] for r in res} == {"cuda:0"}
    assert inner.device == "cuda:1"  # the parent's evaluator is untouched
    # no accelerator (None) or a CPU device: no pinning, one worker per core
    for device in (None, "cpu"):
        assert visible_gpus(EnvReporter(device)) == []
        assert LocalPoolEvaluator(EnvReporter(device)).workers == (os.cpu_count() or 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus(EnvReporter("cuda")) == []


def test_wrappers_config_is_the_inner_evaluators():
    """Backend, workers, retries and time limits are execution settings: config() is the inner's, as is."""
    inner = FailingEvaluator("raise", fraction=0.25)
    want = inner.config()
    assert want["mode"] == "raise" and want["fraction"] == 0.25
    wrappers = [SerialEvaluator(inner, max_retries=0), LocalPoolEvaluator(inner, workers=1),
                LocalPoolEvaluator(inner, workers=3, time_limit=2.0, max_retries=5, devices=["0"]),
                RayEvaluator(inner, workers=4, num_cpus_per_trial=2, address="ray://head:10001")]
    for w in wrappers:
        assert w.config() == want
    assert [w.deterministic for w in wrappers] == [True, True, False, True]  # the time limit
    for backend, workers in (("serial", None), ("local", 2), ("ray", 2)):
        env = ma2ml_env.parallel_env(reward=FailingEvaluator("raise", fraction=0.25), backend=backend,
                                     workers=workers, backend_kwargs={"max_retries": 1})
        assert env.evaluator.config() == want
        env.close()
    # a registered name built by the wrapper: its config is that backend's
    assert LocalPoolEvaluator("surrogate", workers=1, noise_std=0.1).config() == \
        ma2ml_env.make_evaluator("surrogate", noise_std=0.1).config()


def test_wrap_evaluator_selection_and_validation():
    ev = ToyEvaluator()
    assert wrap_evaluator(ev, "serial") is ev  # no wrapper: fast paths kept
    assert isinstance(wrap_evaluator(ev, "serial", max_retries=1), SerialEvaluator)
    assert isinstance(wrap_evaluator(ev, "local", 2), LocalPoolEvaluator)
    assert isinstance(wrap_evaluator(ev, "ray", 2), RayEvaluator)  # ray is imported only when used
    with pytest.raises(ValueError, match="unknown evaluation backend 'dask'"):
        wrap_evaluator(ev, "dask")
    with pytest.raises(ValueError, match="backend='serial' evaluates one pipeline at a time"):
        wrap_evaluator(ev, "serial", workers=4)
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        LocalPoolEvaluator(ev, workers=0)
    with pytest.raises(ValueError, match="retry_on has unknown failure kinds"):
        LocalPoolEvaluator(ev, retry_on=("segfault",))
    with pytest.raises(TypeError, match="cannot wrap another parallel wrapper"):
        LocalPoolEvaluator(LocalPoolEvaluator(ev, workers=1), workers=1)
    with pytest.raises(ValueError, match="unknown evaluation backend"):
        ma2ml_env.parallel_env(reward="surrogate", backend="threads")
    # a registered name works as the inner evaluator, configured by keyword arguments
    assert LocalPoolEvaluator("surrogate", workers=1, noise_std=0.1).inner.noise_std == 0.1


def test_missing_ray_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    env = ma2ml_env.parallel_env(reward=ToyEvaluator(), backend="ray", workers=1)
    with pytest.raises(ImportError, match=r'pip install "ma2ml\[ray\]"'):
        env.evaluate(_actions(env, 1), [0])


# -- Ray: few and fast (one local instance for the module) ------------------------------------------------
@pytest.fixture(scope="module")
def ray_local():
    if not HAS_RAY:
        pytest.skip("ray is not installed")
    import ray

    temp_dir = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths live inside it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install \"ma2ml[ray]\")")
@pytest.mark.slow
def test_ray_matches_serial_and_recovers_from_a_killed_worker(ray_local, tmp_path):
    from tests._toys import FaultyEvaluator

    serial = ma2ml_env.parallel_env(reward="surrogate", reward_kwargs={"noise_std": 0.02})
    acts = _actions(serial, 6)
    seeds = list(range(6))
    env = ma2ml_env.parallel_env(reward="surrogate", reward_kwargs={"noise_std": 0.02}, backend="ray",
                                 workers=2)
    try:
        _same(env.evaluate(acts, seeds), [serial.evaluate(acts[i:i + 1], seeds[i:i + 1])[0] for i in range(6)])
    finally:
        env.close()
    assert ray_local.is_initialized()  # the evaluator did not shut down a Ray it did not start
    # a worker killed with SIGKILL mid-evaluation: the pipeline is retried on a fresh worker
    faulty = ma2ml_env.parallel_env(reward=FaultyEvaluator("kill", str(tmp_path), only_seeds=[1]),
                                    backend="ray", workers=2)
    try:
        res = faulty.evaluate(acts[:3], [0, 1, 2])
    finally:
        faulty.close()
    assert [r.status for r in res] == ["ok"] * 3
    assert res[1].info["attempts"] == 2 and res[1].info["failures"][0]["kind"] == "crash"
    ref = ma2ml_env.parallel_env(reward=ToyEvaluator()).evaluate(acts[:3], [0, 1, 2])
    assert [r.score for r in res] == [r.score for r in ref]


@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install \"ma2ml[ray]\")")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_ray_failing_user_evaluator_is_an_error_trial(ray_local, mode):
    env = ma2ml_env.parallel_env(reward=FailingEvaluator(mode), backend="ray", workers=2,
                                 backend_kwargs={"max_retries": 1})
    try:
        check_error_trials(env, "ray", mode)
        assert env.evaluator.workers_started == 2  # an exception is not a crash: no actor was replaced
    finally:
        env.close()


# -- the Evaluator contract holds behind every backend ------------------------------------------------------
@pytest.mark.parametrize("backend", ["serial", "local", pytest.param("ray", marks=pytest.mark.slow)])
def test_check_evaluator_passes_every_backend_wrapper(backend, request):
    from ma2ml_env import check_evaluator
    from ma2ml_env.rewards.parallel import BACKENDS

    if backend == "ray":
        request.getfixturevalue("ray_local")  # 2 CPUs: one actor for the evaluator, one for its unpickled copy
        ev = BACKENDS["ray"](ToyEvaluator(), 1, startup_timeout=60)
    elif backend == "local":
        ev = BACKENDS["local"](ToyEvaluator(), 2)
    else:
        ev = BACKENDS["serial"](ToyEvaluator(), max_retries=1)
    try:
        check_evaluator(ev, num_pipelines=4)
    finally:
        ev.close()


# -- fidelity levels travel with each row to the workers ------------------------------------------------------
def _wrapper(backend, inner, request):
    if backend == "ray":
        request.getfixturevalue("ray_local")
        return RayEvaluator(inner, 1, startup_timeout=60)
    if backend == "local":
        return LocalPoolEvaluator(inner, 2)
    return SerialEvaluator(inner, max_retries=1)


@pytest.mark.parametrize("backend", ["serial", "local", pytest.param("ray", marks=pytest.mark.slow)])
def test_fidelity_levels_and_starts_reach_the_workers(backend, request):
    from ma2ml_env import check_evaluator
    from ma2ml_env.modules import DEFAULT_MODULES, resolve_modules
    from ma2ml_env.space import SearchSpace
    from tests._toys import ToyFidelityEvaluator

    space = SearchSpace(resolve_modules(DEFAULT_MODULES))
    rows = space.codec.sample(np.random.default_rng(0), 6)
    seeds = np.arange(6, dtype=np.int64)
    levels, start = np.array([0, 1, 2, 2, 1, 0]), np.array([-1, -1, -1, 1, 0, -1])
    inner = ToyFidelityEvaluator()
    want = inner.evaluate(rows, seeds, levels=levels, start=start)
    ev = _wrapper(backend, ToyFidelityEvaluator(), request)
    try:
        ev.bind(space)
        assert ev.fidelity == inner.fidelity
        got = ev.evaluate(rows, seeds, levels=levels, start=start)
        assert np.array_equal(got.score, want.score) and np.array_equal(got.seconds, want.seconds)
        assert [(i["level"], i["start"]) for i in got.info] == list(zip(levels.tolist(), start.tolist()))
        full = ev.evaluate(rows, seeds)  # no request: the last level, fresh
        assert np.array_equal(full.score, inner.evaluate(rows, seeds).score)
        if backend != "serial":
            assert os.getpid() not in {i["pid"] for i in got.info}
        with pytest.raises(ValueError, match="levels must be indices"):
            ev.evaluate(rows, seeds, levels=np.full(6, 3))
        check_evaluator(ev, num_pipelines=4)  # the fidelity rules hold behind the backend
    finally:
        ev.close()


def test_an_evaluator_without_levels_accepts_only_its_one_level_behind_a_backend():
    from ma2ml_env.modules import DEFAULT_MODULES, resolve_modules
    from ma2ml_env.space import SearchSpace

    space = SearchSpace(resolve_modules(DEFAULT_MODULES))
    rows = space.codec.sample(np.random.default_rng(1), 3)
    ev = SerialEvaluator(ToyEvaluator())
    ev.bind(space)
    seeds = np.arange(3, dtype=np.int64)
    same = ev.evaluate(rows, seeds, levels=np.zeros(3, dtype=np.int64), start=np.full(3, -1))
    assert np.array_equal(same.score, ev.evaluate(rows, seeds).score)
    with pytest.raises(ValueError, match="declares no fidelity levels"):
        ev.evaluate(rows, seeds, levels=np.ones(3, dtype=np.int64))


@pytest.mark.slow
def test_training_children_continue_on_any_worker_through_a_state_dir(tmp_path):
    from ma2ml_env.modules import resolve_modules
    from ma2ml_env.pipeline import Architecture, Pipeline, Stage
    from ma2ml_env.rewards.train import TrainEvaluator
    from ma2ml_env.space import SearchSpace

    tiny = Architecture(resolution=8, stem_width=8, stages=(Stage(3, 1, 8, 1, 1),), head_width=16)
    space = SearchSpace(resolve_modules(("hpo",)), base=Pipeline(arch=tiny))
    rows = space.codec.sample(np.random.default_rng(2), 4)
    seeds = np.arange(4, dtype=np.int64)
    inner = TrainEvaluator(device="cpu", max_train=200, epoch_scale=0.5)
    inner.bind(space)
    straight = inner.evaluate(rows, seeds)
    ev = LocalPoolEvaluator(TrainEvaluator(device="cpu", max_train=200, epoch_scale=0.5, state_dir=tmp_path), 2)
    try:
        ev.bind(space)
        ev.evaluate(rows, seeds, levels=np.zeros(4, dtype=np.int64))
        went_on = ev.evaluate(rows, seeds, levels=np.full(4, 3), start=np.zeros(4, dtype=np.int64))
    finally:
        ev.close()
    assert [i["continued"] for i in went_on.info] == [True] * 4
    assert np.array_equal(went_on.score, straight.score)
