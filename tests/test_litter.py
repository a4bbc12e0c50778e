"""Nothing written outside the folders the user named (issue 20, defect 8, the env's side): torch's inductor
cache folder and the session folder of a Ray instance we start."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import ma2ml_env

ROOT = Path(__file__).resolve().parents[1]
HAS_RAY = importlib.util.find_spec("ray") is not None


def test_real_training_leaves_no_torchinductor_folder_in_tmpdir(tmp_path):
    """Importing torchvision imports torch._dynamo, which created $TMPDIR/torchinductor_<user> at import."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = (
        "import numpy as np, ma2ml_env\n"
        "env = ma2ml_env.parallel_env(reward='train', reward_kwargs={'device': 'cpu', 'max_train': 64,"
        " 'epoch_scale': 0.1})\n"
        "r = env.evaluate(env.space.codec.sample(np.random.default_rng(0), 1), seeds=[0])\n"
        "import os; assert os.environ.get('TORCHINDUCTOR_CACHE_DIR') is None\n"
        "print(r.statuses()[0])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "TMPDIR": str(tmp)},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] in ma2ml_env.STATUSES
    assert sorted(os.listdir(tmp)) == []


def test_a_user_set_inductor_cache_dir_is_respected(tmp_path):
    code = "import ma2ml_env.training, os; print(os.environ['TORCHINDUCTOR_CACHE_DIR'])"
    mine = tmp_path / "inductor"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TMPDIR": str(tmp_path), "TORCHINDUCTOR_CACHE_DIR": str(mine)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(mine)


def test_ray_needs_a_short_temp_dir_to_start_its_own_instance():
    from ma2ml_env.rewards.ray_pool import MAX_TEMP_DIR, RayEvaluator

    with pytest.raises(ValueError, match=f"need it at most {MAX_TEMP_DIR}: pick a shorter folder"):
        RayEvaluator("surrogate", 1, temp_dir="/" + "x" * MAX_TEMP_DIR)
    if not HAS_RAY:
        pytest.skip("ray is not installed")
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray instance is running in this process")
    env = ma2ml_env.parallel_env(reward="surrogate", backend="ray", workers=1)
    with pytest.raises(ValueError, match="backend_kwargs=\\{'temp_dir'"):
        env.evaluate(env.space.codec.sample(np.random.default_rng(0), 1))
    assert not ray.is_initialized()


@pytest.mark.skipif(not HAS_RAY, reason='ray is not installed (pip install "ma2ml[ray]")')
@pytest.mark.slow
def test_a_ray_instance_we_start_keeps_its_files_in_temp_dir(monkeypatch):
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray instance is running in this process")
    fake_tmp = tempfile.mkdtemp(prefix="t")  # stands in for $TMPDIR: must stay empty
    ours = tempfile.mkdtemp(prefix="r")  # the user's folder for Ray
    monkeypatch.setenv("TMPDIR", fake_tmp)
    monkeypatch.setattr(tempfile, "tempdir", fake_tmp)
    env = ma2ml_env.parallel_env(reward="surrogate", backend="ray", workers=1,
                                 backend_kwargs={"temp_dir": ours})
    try:
        res = env.evaluate(env.space.codec.sample(np.random.default_rng(0), 2), seeds=[0, 1])
        assert res.statuses() == ["ok", "ok"]
    finally:
        env.close()
    try:
        assert not ray.is_initialized()  # we started it, we shut it down
        assert any(n.startswith("session_") for n in os.listdir(ours))
        assert os.listdir(fake_tmp) == []
    finally:
        import shutil

        shutil.rmtree(ours, ignore_errors=True)
        shutil.rmtree(fake_tmp, ignore_errors=True)
