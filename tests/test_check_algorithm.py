"""agents.check_algorithm: every registered algorithm passes it; deliberately broken algorithms fail it
with a message that names the broken rule."""

from __future__ import annotations

import threading

import gymnasium
import numpy as np
import pytest

from agents import AlgorithmCheckError, SearchAlgorithm, check_algorithm
from agents.random_search import RandomSearch
from agents.registry import make_algorithm, registered_algorithms
from ma2ml_env import JointActionCodec

NEEDS = {"tpe": "optuna", "gp": "optuna", "ppo": "stable_baselines3", "a2c": "stable_baselines3"}


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
        self.codec = JointActionCodec(action_spaces)
        self.rng = np.random.default_rng(seed)

    def propose(self, n):
        return self.codec.decode_batch(self.codec.sample(self.rng, n))

    def observe(self, actions, scores):
        self.codec.encode_batch(actions)

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
        out[0]["y"] = out[0]["y"] + 5
        return out


class MissingAgent(Uniform):
    def propose(self, n):
        return [{"y": a["y"]} for a in super().propose(n)]


class GlobalRandom(Uniform):
    def propose(self, n):
        return self.codec.decode_batch(self.codec.sample(np.random.default_rng(), n))  # unseeded


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
        for a in actions:
            if int(a["x"]) >= 0 and np.any(np.asarray(a["y"]) >= self.codec.nvec[1:]):
                raise IndexError("index 3 is out of bounds")


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
        (ShortBatch, (r"search algorithm ShortBatch: propose\(4\) in round 0 returned 3 joint actions, "
                      r"expected 4")),
        (OutOfRange, (r"OutOfRange: propose\(4\) in round 0: joint action 0 is not valid for the action "
                      r"spaces: action of agent 'y' is out of range at position 0")),
        (MissingAgent, r"joint action 0 is not valid .*missing \['x'\]"),
        (GlobalRandom, (r"GlobalRandom: a second object with the same seed proposed other joint actions in "
                       r"round 0")),
        (ForgetfulState, (r"after load_state_dict\(\) of the state after round 0, round 1 proposed .* but "
                          r"the uninterrupted search proposed")),
        (UnpicklableState, r"state_dict\(\) after round 0 does not pickle \(TypeError"),
        (CrashingObserve, (r"observe\(\) given a joint action with an out-of-range value raised IndexError: "
                           r"index 3 is out of bounds; reject malformed input with a ValueError")),
        (RaisingPropose, r"propose\(1\) in round 3 raised ZeroDivisionError: division by zero"),
    ],
)
def test_broken_algorithms_fail_with_a_clear_message(algorithm, message):
    check_algorithm(Uniform)  # the unbroken original passes
    with pytest.raises(AlgorithmCheckError, match=message):
        check_algorithm(algorithm)


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
