"""The joint-action codec: layout, flat <-> per-agent round trips, the one validation and its messages,
canonical keys, sampling, and the env's search space built on it."""

from __future__ import annotations

import itertools

import gymnasium
import numpy as np
import pytest

import ma2ml_env
from ma2ml_env import JointActionCodec

SPACES = {"a": gymnasium.spaces.MultiDiscrete([4, 2]), "b": gymnasium.spaces.Discrete(3, start=5),
          "c": gymnasium.spaces.MultiDiscrete([3, 1, 2], start=[1, 0, -1])}


@pytest.fixture
def codec() -> JointActionCodec:
    return JointActionCodec(SPACES)


def test_layout(codec):
    assert codec.agents == ("a", "b", "c")
    assert codec.nvec.tolist() == [4, 2, 3, 3, 1, 2] and codec.nvec.dtype == np.int64
    assert codec.start.tolist() == [0, 0, 5, 1, 0, -1]
    assert codec.sizes == (2, 1, 3) and codec.offsets == (0, 2, 3) and codec.size == 6
    assert codec.slices == (slice(0, 2), slice(2, 3), slice(3, 6))
    assert codec.slice_of["c"] == slice(3, 6)
    assert codec.discrete == {"a": False, "b": True, "c": False}
    assert codec.agent_of.tolist() == [0, 0, 1, 2, 2, 2]
    assert codec.shapes == {"a": (2,), "b": (), "c": (3,)}
    # one-hot columns: every value of every decision
    assert codec.n_columns == 15 and codec.max_choices == 4
    assert codec.column_offset.tolist() == [0, 4, 6, 9, 12, 13]
    assert codec.decision_of_column.tolist() == [0] * 4 + [1] * 2 + [2] * 3 + [3] * 3 + [4] + [5] * 2
    assert codec.value_of_column.tolist() == [0, 1, 2, 3, 0, 1, 0, 1, 2, 0, 1, 2, 0, 0, 1]
    assert codec.mask.sum(1).tolist() == codec.nvec.tolist()
    assert codec.agent_cardinality == (8.0, 3.0, 6.0)


def test_every_joint_action_round_trips(codec):
    every = list(itertools.product(*(range(int(n)) for n in codec.nvec)))
    keys = set()
    for idx in every:
        action = codec.decode(idx)
        assert isinstance(action["b"], np.int64) and action["a"].shape == (2,) and action["c"].shape == (3,)
        for agent, space in SPACES.items():
            assert space.contains(action[agent]), (agent, action[agent])
        assert codec.encode(action).tolist() == list(idx)
        keys.add(codec.key(action))
    assert len(keys) == len(every) == 8 * 3 * 6
    batch = codec.encode_batch([codec.decode(i) for i in every])
    assert batch.shape == (len(every), 6) and batch.tolist() == [list(i) for i in every]
    assert [codec.key(a) for a in codec.decode_batch(batch)] == [codec.key(codec.decode(i)) for i in every]
    assert codec.encode_batch([]).shape == (0, 6)


def test_values_are_the_spaces_values_indices_are_zero_based(codec):
    action = codec.decode([3, 1, 0, 0, 0, 1])
    assert action["a"].tolist() == [3, 1] and int(action["b"]) == 5 and action["c"].tolist() == [1, 0, 0]
    assert codec.key(action) == "a=3,1;b=5;c=1,0,0"
    assert codec.key([3, 1, 0, 0, 0, 1]) == codec.key(action)


def test_accepted_forms_give_the_same_index_and_key(codec):
    forms = [
        {"a": np.array([1, 0]), "b": np.int64(6), "c": np.array([2, 0, 0])},
        {"c": [2, 0, 0], "b": 6, "a": (1, 0)},  # any key order, lists, tuples, python ints
        {"a": np.array([1, 0], np.int32), "b": np.array([6]), "c": np.array([2.0, 0.0, 0.0])},
        {"a": np.array([1, 0], np.uint8), "b": np.array(6), "c": np.array([2, 0, 0], np.int16)},
    ]
    idx = [codec.encode(f).tolist() for f in forms]
    assert idx == [[1, 0, 1, 1, 0, 1]] * 4
    assert len({codec.key(f) for f in forms}) == 1
    checked = codec.validate(forms[1])
    assert isinstance(checked["b"], np.int64) and checked["a"].dtype == np.int64


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("b"), r"one entry per agent \['a', 'b', 'c'\]; missing \['b'\], unknown \[\]"),
        (lambda a: a.update(z=[0]), r"missing \[\], unknown \['z'\]"),
        (lambda a: a.update(a=[1, 0, 0]), (r"agent 'a' has shape \(3,\), expected \(2,\) \(one integer per "
                                          r"decision of agent 'a'\)")),
        (lambda a: a.update(b=[5, 6]), r"agent 'b' has shape \(2,\), expected \(\) \(a single integer"),
        (lambda a: a.update(a=[4, 0]), r"agent 'a' is out of range at position 0: got 4, allowed 0..3"),
        (lambda a: a.update(a=[0, -1]), r"agent 'a' is out of range at position 1: got -1, allowed 0..1"),
        (lambda a: a.update(b=4), r"agent 'b' is out of range: got 4, allowed 5..7"),
        (lambda a: a.update(c=[1, 0, 1]), r"agent 'c' is out of range at position 2: got 1, allowed -1..0"),
        (lambda a: a.update(a=[0.5, 1]), r"agent 'a' must be integers, got dtype float64"),
        (lambda a: a.update(a=[np.nan, 1]), r"agent 'a' must be integers, got dtype float64"),
        (lambda a: a.update(b=True), r"agent 'b' must be integers, got dtype bool \(booleans are not"),
        (lambda a: a.update(a=np.array([True, False])), r"agent 'a' must be integers, got dtype bool"),
        (lambda a: a.update(a=["0", "1"]), r"agent 'a' must be integers, got dtype <U1"),
    ],
)
def test_validation_says_what_is_wrong(codec, change, message):
    action = {"a": np.array([0, 0]), "b": np.int64(5), "c": np.array([1, 0, -1])}
    codec.validate(action)
    change(action)
    for check in (codec.validate, codec.encode, codec.key):
        with pytest.raises(ValueError, match=message):
            check(action)
    assert not codec.contains(action)


def test_not_a_dict_and_bad_flat_vectors(codec):
    with pytest.raises(ValueError, match=r"actions must be a dict mapping each agent in \['a', 'b', 'c'\]"):
        codec.validate([0, 0, 5, 1, 0, -1])
    with pytest.raises(ValueError, match=r"flat joint action has shape \(5,\), expected \(6,\)"):
        codec.decode([0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"flat joint action has shape \(2, 6\), expected \(6,\)"):
        codec.key(np.zeros((2, 6), np.int64))


def test_decision_names_and_kind_in_messages():
    codec = JointActionCodec.from_nvecs({"hpo": [3, 6]}, decision_names={"hpo": ["opt", "lr"]}, kind="module")
    with pytest.raises(ValueError, match=r"position 1 \(decision 'lr'\): got 9, allowed 0..5"):
        codec.validate({"hpo": np.array([0, 9])})
    with pytest.raises(ValueError, match=r"one integer per decision of module 'hpo'"):
        codec.validate({"hpo": np.array([0])})


def test_unsupported_spaces_are_refused():
    with pytest.raises(TypeError, match="'x': joint actions support Discrete and MultiDiscrete spaces, got"):
        JointActionCodec({"x": gymnasium.spaces.Box(0, 1, (2,))})
    with pytest.raises(TypeError, match="only 1-d MultiDiscrete"):
        JointActionCodec({"x": gymnasium.spaces.MultiDiscrete([[2, 2], [2, 2]])})
    with pytest.raises(ValueError, match="at least one agent"):
        JointActionCodec({})


def test_sampling_is_uniform_seeded_and_in_range(codec):
    flats = codec.sample(np.random.default_rng(0), 6000)
    assert flats.shape == (6000, 6) and flats.dtype == np.int64
    assert (flats >= 0).all() and (flats < codec.nvec).all()
    for d, n in enumerate(codec.nvec):
        counts = np.bincount(flats[:, d], minlength=n)
        assert counts.min() > 6000 / n * 0.9  # every value, about equally often
    assert np.array_equal(codec.sample(np.random.default_rng(0), 6000), flats)
    assert codec.sample(np.random.default_rng(1)).shape == (6,)
    actions = codec.sample_actions(np.random.default_rng(2), 5)
    assert len(actions) == 5 and all(codec.contains(a) for a in actions)


def test_fast_path_agrees_with_the_full_validation():
    space = ma2ml_env.parallel_env(reward="surrogate").unwrapped.space
    codec = space.codec
    assert codec.agents == space.names and np.array_equal(codec.nvec, space.joint_nvec)
    rng = np.random.default_rng(0)
    for flat in space.codec.sample(rng, 50):
        action = space.codec.decode(flat)
        fast = space.codec.encode(action)
        assert fast.tolist() == flat.tolist()
        slow = np.concatenate(list(space.codec.validate(action).values()))
        assert np.array_equal(slow, fast)
        assert space.decode(flat).key() == space.decode(action).key()
    bad = space.codec.decode(space.codec.sample(rng))
    bad["hpo"][1] = 99
    with pytest.raises(ValueError, match=r"position 1 \(decision 'lr'\): got 99, allowed 0..5"):
        space.codec.encode(bad)


def test_decode_gives_fresh_arrays(codec):
    idx = np.array([1, 1, 0, 0, 0, 0])
    action = codec.decode(idx)
    action["a"][0] = 3
    assert codec.decode(idx)["a"].tolist() == [1, 1] and idx.tolist() == [1, 1, 0, 0, 0, 0]


def test_fast_path_refuses_a_bool_array_beside_int_arrays():
    """numpy concatenates a bool array with int64 arrays to int64: the fast path must not take it."""
    codec = JointActionCodec.from_nvecs({"a": [2, 2], "b": [3]})
    good = {"a": np.array([1, 0], np.int64), "b": np.array([2], np.int64)}
    assert codec.encode(good).tolist() == [1, 0, 2]
    with pytest.raises(ValueError, match="bool"):
        codec.encode({"a": np.array([True, False]), "b": np.array([2], np.int64)})


def test_validate_batch_accepts_integer_batches_of_any_int_dtype(codec):
    rows = [[3, 1, 2, 2, 0, 1], [0, 0, 0, 0, 0, 0]]
    for form in (rows, np.array(rows, dtype=np.int32), np.array(rows, dtype=np.uint8),
                 np.asfortranarray(np.array(rows, dtype=np.int64))):
        out = codec.validate_batch(form)
        assert out.dtype == np.int64 and out.flags.c_contiguous and out.tolist() == rows
    assert codec.validate_batch(np.zeros((0, 6))).shape == (0, 6)
    assert codec.validate_batch(np.zeros((0, 6), dtype=np.int64)).dtype == np.int64


@pytest.mark.parametrize("batch, message", [
    (np.zeros(6, dtype=np.int64), r"got shape \(6,\) \(one joint action: pass \[row\]\)"),
    (np.zeros((2, 6), dtype=bool), "booleans are not actions"),
    (np.zeros((2, 6)), "must hold integers.*float64"),
    (np.zeros((2, 5), dtype=np.int64), "must have 6 columns"),
    (np.zeros((1, 2, 6), dtype=np.int64), "2-d integer array"),
    ([[0, 0, 0, 0, 0, 0], [0, 1]], "integer array"),
    ([[0, 0, 0, 0, 0, 0], [0, 0, 3, 0, 0, 0]], r"row 1: b\[0\] = 3 is out of range \[0, 3\)"),
    ([[0, 0, 0, 0, 0, -1]], r"row 0: c\[2\] = -1 is out of range \[0, 2\)"),
])
def test_validate_batch_names_the_rule_and_the_first_bad_row(codec, batch, message):
    with pytest.raises(ValueError, match=message):
        codec.validate_batch(batch)


def test_validate_batch_names_the_decision_of_the_env_space():
    codec = ma2ml_env.parallel_env(reward="surrogate").unwrapped.space.codec
    batch = np.zeros((4, codec.size), dtype=np.int64)
    d = codec.slice_of["nas"].start
    batch[3, d] = 7
    with pytest.raises(ValueError, match=r"row 3: nas\.stage0_kernel = 7 is out of range \[0, 3\)"):
        codec.validate_batch(batch)


def test_the_compiled_encode_agrees_with_the_python_path():
    """The codec's numba check (env.step's common input) == its Python path, valid or not."""
    pytest.importorskip("numba")
    space = ma2ml_env.parallel_env(reward="surrogate").unwrapped.space
    fast, slow = space.codec, JointActionCodec.from_nvecs(space.nvecs)
    slow._kernel = None
    assert fast._lookup_kernel() is not None
    rng = np.random.default_rng(3)
    for f in space.codec.sample(rng, 200):
        act = fast.decode(f)
        assert np.array_equal(fast.encode(act), slow.encode(act)) and np.array_equal(fast.encode(act), f)
        bad = {k: v.copy() for k, v in act.items()}
        agent = ["aug", "nas", "hpo"][int(rng.integers(3))]
        bad[agent][int(rng.integers(bad[agent].size))] = rng.choice([-1, 99])
        for codec in (fast, slow):
            with pytest.raises(ValueError, match="out of range"):
                codec.encode(bad)
