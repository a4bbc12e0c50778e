"""Our MA2ML learns from every fidelity (agents/ma2ml_plus.py: set_fidelity, observe_levels): the critic
takes the level as an input, targets are ranked within each level, promoted children's results reach the
critic under a multi-fidelity search, deterministically, and a checkpoint restores all of it exactly."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from scipy.stats import norm

import ma2ml_env
from agents.base import action_spaces_of, run
from agents.ma2ml_plus import MA2MLPlus
from agents.schedulers import Hyperband
from ma2ml_env import Fidelity
from ma2ml_env.rewards.fidelity import fidelity_of
from tests.conftest import LCBENCH

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"critic_hidden": 16, "updates_per_round": 4, "critic_ensemble": 2}


class Told(MA2MLPlus):
    """MA2MLPlus recording each observe_levels call: its levels and whether the critic moved."""

    def setup(self, action_spaces, seed):
        super().setup(action_spaces, seed)
        self.level_calls: list[tuple[list[int], bool]] = []

    def observe_levels(self, actions, scores, levels):
        before = [p.clone() for p in self.critic.parameters()]
        super().observe_levels(actions, scores, levels)
        changed = any(not torch.equal(a, b) for a, b in zip(before, self.critic.parameters()))
        self.level_calls.append((np.asarray(levels).tolist(), changed))


def _curve_search(seed: int = 0) -> tuple[Told, object]:
    env = ma2ml_env.learning_curve_env("7593", LCBENCH)
    algo = Told(**SMALL)
    result = run(algo, env, budget=6, seed=seed, batch_size=4, scheduler=Hyperband(), workers=4)
    env.close()
    return algo, result


def test_under_hyperband_the_critic_learns_from_promoted_results_deterministically():
    algo, result = _curve_search()
    assert algo._levels == fidelity_of(ma2ml_env.learning_curve_env("7593", LCBENCH)).levels  # the loop told it
    top = len(algo._levels) - 1
    promoted = [t for t in result.trials if t.start >= 0]
    assert promoted, "Hyperband promoted no child: the test needs a longer search"
    # every promoted result reached observe_levels with its level, and each call moved the critic
    assert sorted(lv for call, _ in algo.level_calls for lv in call) == sorted(t.level for t in promoted)
    assert all(changed for _, changed in algo.level_calls)
    # the buffer holds them at their levels; first results sit in their own group, never at the top level
    assert sorted(algo.buffer.levels[algo.buffer.levels < len(algo._levels)].tolist()) == sorted(
        t.level for t in promoted)
    n_first = int((algo.buffer.levels == len(algo._levels)).sum())  # the first results observed so far
    assert 0 < n_first <= len(result.trials) - len(promoted) and len(algo.buffer) == n_first + len(promoted)
    again, result2 = _curve_search()
    assert [(t.action, t.level, t.score) for t in result.trials] == [
        (t.action, t.level, t.score) for t in result2.trials]
    for a, b in zip(algo.critic.parameters(), again.critic.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a checkpoint restores the fidelity input and continues exactly
    restored = MA2MLPlus()
    restored.load_state_dict(pickle.loads(pickle.dumps(algo.state_dict())))
    assert restored._levels == algo._levels
    for a, b in zip(algo.critic.parameters(), restored.critic.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    np.testing.assert_array_equal(restored.buffer.levels, algo.buffer.levels)
    rows = algo.propose(4)
    np.testing.assert_array_equal(restored.propose(4), rows)
    algo.observe_levels(rows, [0.5, 0.6, 0.7, 0.8], [top] * 4)
    restored.observe_levels(rows, [0.5, 0.6, 0.7, 0.8], [top] * 4)
    np.testing.assert_array_equal(restored.propose(4), algo.propose(4))


def test_targets_are_ranked_within_each_level_and_queries_ask_about_the_full_training():
    env = ma2ml_env.parallel_env(reward="surrogate", modules=("nas", "hpo"))
    algo = MA2MLPlus(**SMALL)
    algo.setup(action_spaces_of(env), 0)
    algo.set_fidelity(Fidelity((1, 4, 16)))
    rows = algo.propose(5)
    algo.observe(rows[:3], [0.1, 0.3, 0.2])  # first results, level not told
    algo.observe_levels(rows[3:], [0.9, 0.8], [2, 2])  # final results
    np.testing.assert_array_equal(algo.buffer.levels, [3, 3, 3, 2, 2])
    # a low first result is ranked among the first results only, never against the final scores
    np.testing.assert_allclose(algo._targets[:3], norm.ppf((np.array([1, 3, 2]) - 0.5) / 3))
    np.testing.assert_allclose(algo._targets[3:], norm.ppf((np.array([2, 1]) - 0.5) / 2))
    cols = algo._cols(torch.as_tensor(rows))
    assert cols.shape == (5, algo.codec.size + 1)
    assert (cols[:, -1] == algo.codec.n_columns + 2).all()  # policy and screening questions: the full training
    assert (algo._buffer_cols(np.arange(5))[:, -1] == algo.codec.n_columns + torch.tensor([3, 3, 3, 2, 2])).all()
    algo.propose(4)  # screening, the mirror step and the elites run on the fidelity-aware critic


@pytest.mark.parametrize("critic", ["mlp", "fm"])
def test_the_critic_tells_levels_apart(critic):
    """Two joint actions, one better at the full training, the other better early on: the critic learns
    both, so the level input is used."""
    env = ma2ml_env.parallel_env(reward="surrogate", modules=("nas", "hpo"))
    algo = MA2MLPlus(critic=critic, critic_ensemble=1, critic_targets="zscore", updates_per_round=200,
                     critic_l2=0.0)
    algo.setup(action_spaces_of(env), 0)
    algo.set_fidelity((1, 2))
    a, b = algo.propose(2)
    rows = np.stack([a, b, a, b])
    algo.observe_levels(rows, [0.9, 0.1, 0.1, 0.9], [1, 1, 0, 0])
    with torch.no_grad():
        q_top = algo.critic(algo._cols(torch.as_tensor(rows[:2]))).mean(0)
        q_low = algo.critic(algo._cols(torch.as_tensor(rows[:2]), np.array([0, 0]))).mean(0)
    assert q_top[0] > q_top[1] + 0.5 and q_low[1] > q_low[0] + 0.5


def test_fidelity_errors_say_what_to_do():
    env = ma2ml_env.parallel_env(reward="surrogate", modules=("nas", "hpo"))
    algo = MA2MLPlus(**SMALL)
    algo.setup(action_spaces_of(env), 0)
    rows = algo.propose(2)
    with pytest.raises(RuntimeError, match=r"call set_fidelity\(fidelity\) after setup"):
        algo.observe_levels(rows, [0.1, 0.2], [0, 1])
    with pytest.raises(ValueError, match="strictly increasing"):
        algo.set_fidelity((4, 2))
    algo.set_fidelity((1, 2))
    algo.set_fidelity(Fidelity((1, 2)))  # the same levels again: nothing happens
    with pytest.raises(ValueError, match=r"one level index per score, integers in \[0, 2\)"):
        algo.observe_levels(rows, [0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="one level index per score"):
        algo.observe_levels(rows, [0.1, 0.2], [0.5, 1.0])
    algo.observe(rows, [0.1, 0.2])
    with pytest.raises(RuntimeError, match="before the first observe"):
        algo.set_fidelity((1, 2, 3))
