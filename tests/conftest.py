import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

import ma2ml_env

#: the LCBench learning curves: the full tables beside the checkout when they are there (CI's machines and
#: ours), else the 288-configuration extract shipped in tests/data (its README)
_SHARED_LCBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "lcbench-mf"
LCBENCH = (Path(os.environ["MA2ML_TEST_LCBENCH"]) if os.environ.get("MA2ML_TEST_LCBENCH")  # a chosen folder
           else _SHARED_LCBENCH if (_SHARED_LCBENCH / "lcbench_7593.npz").exists()
           else Path(__file__).resolve().parent / "data" / "lcbench-tiny")

#: an entry of the session's TMPDIR -> the tests after which it, or something new directly inside it, appeared
_LEFT_BY: dict[str, list[str]] = {}
_SEEN: set[str] = set()
_TMPDIR = pytest.StashKey[tuple[Path, "str | None", "str | None"]]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Before collection (torch and others may note the temp folder when first imported): point ``TMPDIR``
    and ``tempfile.tempdir`` (and so every subprocess a test starts) at an empty folder of the session's own,
    made in the system temp folder and removed at the end. Short (``/tmp/ma2ml-tmp-XXXXXXXX``): the Ray tests
    start Ray in folders inside it, and Ray's unix-socket paths allow few characters."""
    session.config._tmp_path_factory.getbasetemp()  # pytest's own tmp_path folders stay where pytest keeps them
    folder = Path(tempfile.mkdtemp(prefix="ma2ml-tmp-"))
    session.config.stash[_TMPDIR] = (folder, os.environ.get("TMPDIR"), tempfile.tempdir)
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)


@pytest.fixture(scope="session", autouse=True)
def empty_tmpdir(pytestconfig):
    """The session's TMPDIR must be empty at the end: a run never leaves files outside the folders the user
    named (issue 20, defect 8). The assertion names each leftover and the tests after which it appeared."""
    folder, before_env, before_tempdir = pytestconfig.stash[_TMPDIR]
    try:
        yield folder
    finally:
        if before_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before_env
        tempfile.tempdir = before_tempdir
    left = sorted(p.name for p in folder.iterdir())
    if not left:
        folder.rmdir()
    assert not left, (f"the test session left {len(left)} entries in its TMPDIR {folder}: "
                      + "; ".join(f"{name} (new after {', '.join(_LEFT_BY.get(name, ['the last test']))})"
                                  for name in left))


@pytest.fixture(autouse=True)
def _tmpdir_litter(request, empty_tmpdir: Path):
    """Remember which test first left each entry in the session's TMPDIR (for the message above)."""
    yield
    for top in empty_tmpdir.iterdir():
        names = {top.name, *(f"{top.name}/{c.name}" for c in top.iterdir())} if top.is_dir() else {top.name}
        if names - _SEEN:
            _LEFT_BY.setdefault(top.name, []).append(request.node.nodeid)
            _SEEN.update(names)


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
