import numpy as np
import pytest

import ma2ml_env


@pytest.fixture
def one_torch_thread():
    """Tiny torch networks: one thread is faster and reproducible on the 2-core CI machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """The system temp folder (``tempfile.gettempdir()``, ``TMPDIR``) pointed at an empty pytest folder, for
    tests that check a run leaves nothing there."""
    import tempfile

    folder = tmp_path / "systemp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    return folder


@pytest.fixture
def senv():
    """The default surrogate env."""
    e = ma2ml_env.parallel_env(reward="surrogate")
    yield e
    e.close()


def sample_joint(env, rng):
    return {a: (rng.random(env.action_space(a).shape) * env.action_space(a).nvec).astype(np.int64)
            for a in env.possible_agents}
