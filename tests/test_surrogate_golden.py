"""The surrogate's numbers on every path against values recorded from the code before its formula was
written once (``tests/_record_surrogate.py`` wrote ``tests/data/surrogate_golden.npz``)."""

import numpy as np
import pytest

import ma2ml_env
from ma2ml_env.rewards import _jit

from ._record_surrogate import FIELDS, PATH, cases, compute

GOLDEN = np.load(PATH)
CASES = list(cases())
#: Where the old scalar path was a per-space closure (and the compiled step its copy), the simulated training
#: time was computed as ``epochs * (dataset * 3 / throughput) * flops``; the one formula computes it as the
#: batch path and the general scalar path did, ``epochs * dataset * 3 * flops / throughput`` (at most one
#: ulp apart, in ~25% of the rows). Every other number of every path is bit-identical to the recording.
CLOSURE_CASES = ("default-default", "random_task-default")
#: numpy's vectorised ``exp``/``log``/``power`` pick SIMD kernels by CPU (AVX2 vs AVX-512), which may differ
#: by an ulp or two: the batch path is held to the recording within BATCH_ULPS on any machine (a machine with
#: the recording's SIMD level reproduces it exactly), the scalar path (Python ``math``) exactly.
BATCH_ULPS = 4


def _within_ulps(got: np.ndarray, want: np.ndarray, ulps: int) -> bool:
    return bool((np.abs(got - want) <= ulps * np.spacing(np.abs(want))).all())


@pytest.mark.parametrize("name, kw, modules", CASES, ids=[c[0] for c in CASES])
def test_batch_and_scalar_paths_reproduce_the_recorded_numbers(name, kw, modules):
    want = {k.split("/", 1)[1]: GOLDEN[k] for k in GOLDEN if k.startswith(name + "/")}
    got = compute(kw, modules, want["actions"])
    assert np.array_equal(got["seeds"], want["seeds"])
    assert np.array_equal(got["batch_over"], want["batch_over"])
    assert np.array_equal(got["scalar_status"], want["scalar_status"])
    assert want["batch_over"].any() == ("hard_budget" in name)
    for f in FIELDS:
        assert _within_ulps(got[f"batch_{f}"], want[f"batch_{f}"], BATCH_ULPS), f"batch {f}"
        if f == "seconds" and name in CLOSURE_CASES:
            continue
        assert np.array_equal(got[f"scalar_{f}"], want[f"scalar_{f}"]), f"scalar {f}"
    if name in CLOSURE_CASES:  # see CLOSURE_CASES: the batch's seconds, within an ulp of the old closure's
        assert np.array_equal(got["scalar_seconds"], want["batch_seconds"])
        ulp = np.spacing(want["scalar_seconds"])
        assert (np.abs(got["scalar_seconds"] - want["scalar_seconds"]) <= ulp).all()


@pytest.mark.parametrize(
    "name, kw, modules",
    [c for c in CASES if not c[1].get("noise_std") and "budget" not in c[1]],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_step_paths_reproduce_the_recorded_numbers(name, kw, modules):
    """env.step (the surrogate's Python scalar path, and its compiled single-row path where numba is
    installed) gives the scalar path's numbers."""
    want = {k.split("/", 1)[1]: GOLDEN[k] for k in GOLDEN if k.startswith(name + "/")}
    envs = [ma2ml_env.parallel_env(reward="surrogate", reward_kwargs=kw, modules=modules,
                                   pipelines_per_episode=10**6) for _ in range(2)]
    envs[0].evaluator._row_kernel = None
    if envs[1].evaluator._lookup_row_kernel() is None:
        envs = envs[:1]
    for env in envs:
        env.reset(seed=0)
        for i, a in enumerate(want["actions"]):
            info = env.step(env.space.codec.decode(a))[4][env.agents[0]]
            assert info["score"] == want["scalar_score"][i] and info["flops"] == want["scalar_flops"][i]
            assert info["params"] == want["scalar_params"][i]
            assert (
                info["seconds"] == want["scalar_seconds" if name not in CLOSURE_CASES else "batch_seconds"][i]
            )


def test_the_python_score_function_matches_the_scalar_path():
    """``_jit.score`` run uncompiled on the packed numpy tables (what the compiled kernel reads) == the scalar
    path on its lists (checks the table layout wherever the tests run, numba or not)."""
    env = ma2ml_env.parallel_env(reward="surrogate", reward_kwargs={"task": 4})
    ev, space = env.evaluator, env.space
    ev._row_kernel = None
    t = ev.tables()
    A = space.codec.sample(np.random.default_rng(0), 100)
    for i, f in enumerate(A):
        got = _jit.PY.score(f, t.F, t.I, t.C)
        want = ev.evaluate(A[i:i + 1], np.zeros(1, np.int64))
        assert got == (want.accuracy[0], want.flops[0], want.params[0], want.seconds[0])


def test_the_feature_helpers_of_the_calibration_script_agree_with_the_batch_path():
    """benchmarks/calibrate_surrogate.py reads the features through _aug_features/_nas_costs/_hpo_features."""
    env = ma2ml_env.parallel_env(reward="surrogate")
    ev, space = env.evaluator, env.space
    A = space.codec.sample(np.random.default_rng(5), 64)
    s, q = ev._aug_features(A)
    g = ev._aug
    idx = (A[:, g["op"]] * len(g["probs"]) + A[:, g["prob"]]) * g["strength"].shape[1] + A[:, g["mag"]]
    assert np.array_equal(s, g["s_flat"].take(idx).mean(axis=1))
    assert np.array_equal(q, g["q_flat"].take(idx).mean(axis=1))
    flops, params = ev._nas_costs(A)
    out = ev.evaluate(A, np.zeros(len(A), np.int64))
    assert np.array_equal(flops, out.flops) and np.array_equal(params, out.params)
    assert np.array_equal(ev.capacity(flops) * _jit.LEVELS % 1, np.zeros(64))
