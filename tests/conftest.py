import numpy as np
import pytest

import ma2ml_env


@pytest.fixture
def senv():
    """The default surrogate env."""
    e = ma2ml_env.parallel_env(reward="surrogate")
    yield e
    e.close()


def sample_joint(env, rng):
    return {a: (rng.random(env.action_space(a).shape) * env.action_space(a).nvec).astype(np.int64)
            for a in env.possible_agents}
