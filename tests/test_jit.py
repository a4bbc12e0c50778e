"""The surrogate's compiled single-row path (numba, extra "fast"): the same numbers as its Python scalar path,
and env.step the same on both (validation is the codec's, before either runs)."""

import pickle
import warnings

import numpy as np
import pytest

import ma2ml_env
from ma2ml_env import AutoMLModule, Decision
from ma2ml_env.rewards import _jit

from .conftest import sample_joint


class Dropout(AutoMLModule):
    """A user module beside the built-ins: the surrogate ignores it, the kernel must still validate it."""

    name = "drop"
    decisions = (Decision("rate", (0.0, 0.1, 0.2)), Decision("where", ("stem", "head")))

    def apply(self, choice, pipeline):
        return pipeline


def _pair(**kwargs):
    """The same env twice: one on the compiled single-row path, one forced onto the Python scalar path."""
    fast, slow = ma2ml_env.parallel_env(**kwargs), ma2ml_env.parallel_env(**kwargs)
    assert fast.evaluator._row_kernel is ...  # looked up on the first one-row evaluation, not at construction
    fast.evaluator._lookup_row_kernel()
    slow.evaluator._row_kernel = None
    return fast, slow


def _same_step(a, b):
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], np.ndarray):
                assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k])
            else:
                assert x[k] == y[k] and type(x[k]) is type(y[k])


def test_pure_python_kernel_matches_the_scalar_path():
    """The kernel function run uncompiled (no numba needed) on the packed tables == the scalar path:
    this checks the table layout wherever the tests run."""
    env = ma2ml_env.parallel_env(reward="surrogate", reward_kwargs={"task": 4})
    ev, space = env.evaluator, env.space
    ev._row_kernel = None
    t = ev.tables()
    A = space.codec.sample(np.random.default_rng(0), 200)
    for i, f in enumerate(A):
        got = _jit.PY.score(f, t.F, t.I, t.C)
        want = ev.evaluate(A[i:i + 1], np.zeros(1, np.int64)).row(0)
        assert got == (want[2], want[3], want[4], want[5]) and want[0] == want[2]


# -- compiled ----------------------------------------------------------------------------------------
numba = pytest.importorskip("numba")


@pytest.mark.parametrize("kwargs", [
    {"reward": "surrogate"},
    {"reward": "surrogate", "reward_kwargs": {"task": 7}, "pipelines_per_episode": 4},
    {"reward": "surrogate", "modules": ("hpo", Dropout(), "aug", "nas"), "pipelines_per_episode": 3},
    {"reward": "surrogate", "modules": ("aug", "hpo")},  # absent modules: the base pipeline's constants
    {"reward": "surrogate", "modules": ("nas", Dropout())},
])
def test_compiled_and_python_steps_are_identical(kwargs):
    fast, slow = _pair(**kwargs)
    assert fast.evaluator._row_kernel is not None
    rng = np.random.default_rng(3)
    _same_step(fast.reset(seed=11), slow.reset(seed=11))
    for _ in range(600):
        if not fast.agents:
            _same_step(fast.reset(), slow.reset())
        act = sample_joint(fast, rng)
        _same_step(fast.step(act), slow.step(act))
        assert np.array_equal(fast.state(), slow.state())
    assert fast.evaluations == slow.evaluations == 600
    assert fast.last_result == slow.last_result
    assert all(np.array_equal(fast.last_actions[k], slow.last_actions[k]) for k in act)
    # the evaluation seed stream is the same on both paths
    assert fast._seed_pos == slow._seed_pos and np.array_equal(fast._seeds, slow._seeds)


@pytest.mark.parametrize("mutate", [
    lambda a: a.update(hpo=a["hpo"].astype(np.int32)),     # valid, other dtype
    lambda a: a.update(nas=a["nas"].tolist()),             # valid, a list
    lambda a: a.update(aug=np.repeat(a["aug"], 2)[::2]),   # valid, a strided view
])
def test_other_valid_inputs_give_the_same_step(mutate):
    """codec.encode turns every valid form into one int64 row: the compiled path takes them all."""
    fast, slow = _pair(reward="surrogate")
    fast.reset(seed=0), slow.reset(seed=0)
    act = sample_joint(fast, np.random.default_rng(1))
    mutate(act)
    _same_step(fast.step(act), slow.step(act))


@pytest.mark.parametrize("mutate, match", [
    (lambda a: a["hpo"].__setitem__(6, 4), "out of range at position 6"),
    (lambda a: a["aug"].__setitem__(29, -1), "out of range"),
    (lambda a: a.update(nas=a["nas"][:-1].copy()), "shape \\(12,\\), expected \\(13,\\)"),
    (lambda a: a.pop("aug"), "missing \\['aug'\\]"),
    (lambda a: a.update(aug2=a.pop("aug")), "missing"),
])
def test_bad_input_changes_nothing(mutate, match):
    fast, slow = _pair(reward="surrogate", pipelines_per_episode=5)
    fast.reset(seed=0), slow.reset(seed=0)
    rng = np.random.default_rng(2)
    first = sample_joint(fast, rng)
    fast.step(first), slow.step(first)
    before = (fast.last_actions, fast.last_result, fast.evaluations, fast.state(), fast._seed_pos)
    bad = sample_joint(fast, rng)
    mutate(bad)
    with pytest.raises(ValueError, match=match):
        fast.step(bad)
    after = (fast.last_actions, fast.last_result, fast.evaluations, fast.state(), fast._seed_pos)
    assert all(np.array_equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:3] == after[1:3] and np.array_equal(before[3], after[3]) and before[4] == after[4]
    nxt = sample_joint(fast, rng)
    _same_step(fast.step(nxt), slow.step(nxt))


@pytest.mark.parametrize(
    "reward_kwargs", [{"noise_std": 0.01}, {"budget": ma2ml_env.CostBudget(max_flops=4e6)}]
)
def test_kernel_only_where_it_computes_the_same_thing(reward_kwargs):
    env = ma2ml_env.parallel_env(reward="surrogate", reward_kwargs=reward_kwargs)
    assert env.evaluator._lookup_row_kernel() is None  # noise and budgets stay on the Python path
    assert ma2ml_env.parallel_env(reward="surrogate", modules=("aug", "hpo")).evaluator._lookup_row_kernel()


def test_a_row_the_kernel_was_not_compiled_for_takes_the_python_path():
    """The kernel takes C-contiguous int64 rows only; a caller's other valid row gets the same numbers."""
    fast, slow = _pair(reward="surrogate")
    A = fast.space.codec.sample(np.random.default_rng(4), 3)
    seeds = np.zeros(1, np.int64)
    for row in (np.asfortranarray(A)[1:2], A[:, ::-1][:, ::-1][1:2], A[1:2]):
        got, want = fast.evaluator.evaluate(row, seeds), slow.evaluator.evaluate(A[1:2], seeds)
        assert got[0] == want[0]


def test_switched_off_by_environment_variable(monkeypatch):
    monkeypatch.setenv("MA2ML_JIT", "0")
    env = ma2ml_env.parallel_env(reward="surrogate")
    env.reset(seed=0)
    assert 0.0 < env.step(sample_joint(env, np.random.default_rng(0)))[1]["aug"] < 1.0
    assert env.evaluator._row_kernel is None and not _jit.available()


def test_pickled_env_gets_its_kernel_back():
    env = ma2ml_env.parallel_env(reward="surrogate", pipelines_per_episode=5)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    env.step(sample_joint(env, rng))
    assert env.evaluator._row_kernel not in (None, ...)
    clone = pickle.loads(pickle.dumps(env))
    assert clone.evaluator._row_kernel is ...  # a numba dispatcher is not pickled: looked up again
    act = sample_joint(env, rng)
    _same_step(clone.step(act), env.step(act))
    assert clone.evaluator._row_kernel is env.evaluator._row_kernel


def test_a_broken_numba_falls_back_with_a_warning(monkeypatch):
    monkeypatch.setattr(_jit, "_KERNEL", None)
    monkeypatch.setattr(_jit, "_DISABLED", False)

    def broken(*args, **kwargs):
        raise RuntimeError("LLVM exploded")

    monkeypatch.setattr(numba, "njit", broken)
    env = ma2ml_env.parallel_env(reward="surrogate")
    env.reset(seed=0)
    with pytest.warns(RuntimeWarning, match="LLVM exploded"):
        env.step(sample_joint(env, np.random.default_rng(0)))
    assert env.evaluator._row_kernel is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, not on every env
        assert ma2ml_env.parallel_env(reward="surrogate").evaluator._lookup_row_kernel() is None


def test_no_writable_cache_compiles_without_one(monkeypatch):
    monkeypatch.setattr(_jit, "_KERNEL", None)
    real = numba.njit
    calls = []

    def njit(*args, cache=False, **kwargs):
        calls.append(cache)
        if cache:
            raise RuntimeError("cannot cache function '_row': no locator available")
        return real(*args, cache=cache, **kwargs)

    monkeypatch.setattr(numba, "njit", njit)
    fast = ma2ml_env.parallel_env(reward="surrogate")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fast.evaluator._lookup_row_kernel() is not None and calls == [True, False]
    slow = ma2ml_env.parallel_env(reward="surrogate")
    slow.evaluator._row_kernel = None
    act = sample_joint(fast, np.random.default_rng(0))
    _same_step(fast.reset(seed=0), slow.reset(seed=0))
    _same_step(fast.step(act), slow.step(act))


def test_compiled_scaled_action_is_the_numpy_one():
    """codec.encode's kernel writes the float32 numbers codec.scaled (numpy) writes, so the env's observation
    is the same with and without numba; a scaled output it was not compiled for takes the Python path."""
    codec = ma2ml_env.parallel_env(reward="surrogate").codec
    assert codec._lookup_kernel() is not None
    rng = np.random.default_rng(5)
    flats = [*codec.sample(rng, 300), codec.nvec - 1, np.zeros(codec.size, np.int64)]
    for flat in flats:
        got = np.full(codec.size, np.nan, np.float32)
        assert np.array_equal(codec.encode(codec.decode(flat), scaled_out=got), flat)
        want = codec.scaled(flat)
        assert want.dtype == np.float32 and got.tobytes() == want.tobytes()
    assert np.all(want == 0.0) and np.all(codec.scaled(codec.nvec - 1)[codec.nvec > 1] == 1.0)
    strided = np.zeros(2 * codec.size, np.float32)[::2]  # not contiguous: the Python path writes it
    assert np.array_equal(codec.encode(codec.decode(flats[0]), scaled_out=strided), flats[0])
    assert strided.tobytes() == codec.scaled(flats[0]).tobytes()
    with pytest.raises(ValueError, match="out must be a float32 array"):
        codec.encode(codec.decode(flats[0]), scaled_out=np.zeros(codec.size))


def test_one_row_result_pickles_and_stays_frozen():
    """The one-row BatchResult of env.step (slots on a frozen dataclass) pickles as what it is."""
    env = ma2ml_env.parallel_env(reward="surrogate")
    env.reset(seed=0)
    env.step(sample_joint(env, np.random.default_rng(0)))
    r = env._last[1]
    clone = pickle.loads(pickle.dumps(r))
    assert type(clone) is type(r) and clone.row(0) == r.row(0) and clone[0] == r[0] == env.last_result
    assert np.array_equal(clone.score, r.score) and clone.info == r.info
    with pytest.raises(AttributeError):
        r.score = np.zeros(1)
