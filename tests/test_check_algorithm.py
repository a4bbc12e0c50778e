"""agents.check_algorithm: every registered algorithm passes it; deliberately broken algorithms fail it
with a message that names the broken rule."""

from __future__ import annotations

import threading

import gymnasium
import numpy as np
import pytest

from agents import AlgorithmCheckError, SearchAlgorithm, check_algorithm
from agents.check import SPACES
from agents.random_search import RandomSearch
from agents.registry import algorithm_spec, make_algorithm, registered_algorithms

NEEDS = {n: algorithm_spec(n).requires for n in registered_algorithms() if algorithm_spec(n).requires}


@pytest.mark.parametrize("name", registered_algorithms())
def test_every_registered_algorithm_passes(name):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    check_algorithm(lambda: make_algorithm(name))


def test_a_class_an_instance_and_a_config_pass():
    check_algorithm(RandomSearch)
    check_algorithm(make_algorithm("evolution", population_size=4, tournament_size=2))
    check_algorithm(make_algorithm("ma2ml", critic="fm"), batch_size=3, rounds=2)


# -- broken algorithms -----------------------------------------------------------------------------------
class Uniform(SearchAlgorithm):
    """A correct little algorithm the broken ones below change one thing of."""

    name = "uniform"

    def setup(self, action_spaces, seed):
        super().setup(action_spaces, seed)
        self.rng = np.random.default_rng(seed)

    def propose(self, n):
        return self.codec.sample(self.rng, n)

    def observe(self, actions, scores):
        self.observed_batch(actions, scores)

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]


class ShortBatch(Uniform):
    def propose(self, n):
        return super().propose(n)[:-1]


class OutOfRange(Uniform):
    def propose(self, n):
        out = super().propose(n)
        out[0, 2] += 5  # y's second decision has 3 choices
        return out


class Dicts(Uniform):
    def propose(self, n):
        return self.codec.decode_batch(super().propose(n))  # the old per-agent form


class Floats(Uniform):
    def propose(self, n):
        return super().propose(n).astype(float)


class OneRow(Uniform):
    def propose(self, n):
        return super().propose(n)[0]


class GlobalRandom(Uniform):
    def propose(self, n):
        return self.codec.sample(np.random.default_rng(), n)  # unseeded


class ForgetfulState(Uniform):
    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class UnpicklableState(Uniform):
    def state_dict(self):
        return {"rng": self.rng.bit_generator.state, "lock": threading.Lock()}


class CrashingObserve(Uniform):
    def observe(self, actions, scores):
        for row in actions:
            row[self.codec.size - 1]  # indexes without checking the shape
        if len(actions) != len(scores):
            raise IndexError("index 1 is out of bounds")


class WritesItsInput(Uniform):
    def observe(self, actions, scores):
        actions[:, 0] = 0  # run() passes the proposed rows read-only


class RaisingPropose(Uniform):
    def propose(self, n):
        if n == 1:
            raise ZeroDivisionError("division by zero")
        return super().propose(n)


class NoCheckpoints(Uniform):
    def state_dict(self):
        raise NotImplementedError

    def load_state_dict(self, state):
        raise NotImplementedError


@pytest.mark.parametrize(
    ("algorithm", "message"),
    [
        (ShortBatch, (r"search algorithm ShortBatch: propose\(4\) in round 0 returned shape \(3, 4\), "
                      r"expected an int64 array \[4, 4\]")),
        (OutOfRange, (r"OutOfRange: propose\(4\) in round 0 returned a joint action out of range: row 0: "
                      r"y\[1\] = \d is out of range \[0, 3\)")),
        (Dicts, r"propose\(4\) in round 0 must return an int64 array \[4, 4\] .*, got list"),
        (Floats, r"propose\(4\) in round 0 must return an int64 array \[4, 4\] .*, got dtype float64"),
        (OneRow, r"propose\(4\) in round 0 returned shape \(4,\), expected an int64 array \[4, 4\]"),
        (GlobalRandom, (r"GlobalRandom: a second object with the same seed proposed other joint actions in "
                        r"round 0")),
        (ForgetfulState, (r"after load_state_dict\(\) of the state after round 0, round 1 proposed .* but "
                          r"the uninterrupted search proposed")),
        (UnpicklableState, r"state_dict\(\) after round 0 does not pickle \(TypeError"),
        (CrashingObserve, (r"observe\(\) given a 1-d row instead of a batch \[n, D\] raised IndexError: .*; "
                           r"reject malformed input with a ValueError")),
        (WritesItsInput, r"observe\(\) of 4 proposals in round 0 raised ValueError: assignment destination is "
                         r"read-only"),
        (RaisingPropose, r"propose\(1\) in round 3 raised ZeroDivisionError: division by zero"),
    ],
)
def test_broken_algorithms_fail_with_a_clear_message(algorithm, message):
    check_algorithm(Uniform)  # the unbroken original passes
    with pytest.raises(AlgorithmCheckError, match=message):
        check_algorithm(algorithm)


@pytest.mark.parametrize(
    ("actions", "scores", "message"),
    [
        (np.zeros(4, dtype=np.int64), [0.5], r"batch of joint actions \[n, 4\] as proposed, got shape \(4,\)"),
        (np.zeros((1, 5), dtype=np.int64), [0.5], r"\[n, 4\] as proposed, got shape \(1, 5\)"),
        (np.zeros((2, 4), dtype=np.int64), [0.5], r"got 2 joint actions and scores of shape \(1,\)"),
        (np.zeros((1, 4)), [0.5], "integer joint actions as proposed, got dtype float64"),
    ],
)
def test_observed_batch_refuses_malformed_input(actions, scores, message):
    algo = Uniform()
    algo.setup(SPACES, 0)
    with pytest.raises(ValueError, match=message):
        algo.observed_batch(actions, scores)
    rows, r = algo.observed_batch([[0, 1, 2, 1]], [1])
    assert rows.dtype == np.int64 and rows.shape == (1, 4) and r.dtype == np.float64


def test_checkpointing_is_optional():
    check_algorithm(NoCheckpoints)


def test_wrong_arguments():
    with pytest.raises(AlgorithmCheckError, match="needs a SearchAlgorithm instance, class or factory, got"):
        check_algorithm(3)
    with pytest.raises(AlgorithmCheckError, match=r"built a dict, not an agents.SearchAlgorithm"):
        check_algorithm(dict)
    used = Uniform()
    used.setup({"x": gymnasium.spaces.Discrete(2)}, 0)
    with pytest.raises(AlgorithmCheckError, match="pass an instance that has not been set up yet"):
        check_algorithm(used)
    with pytest.raises(ValueError, match="rounds >= 2"):
        check_algorithm(Uniform, rounds=1)
