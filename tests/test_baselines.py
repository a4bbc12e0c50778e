"""Every registered search algorithm through the one interface: runs, seeds, checkpoints, learning, errors.

Surrogate reward only (fast); learning tests use small sub-spaces and margins measured over five seeds.
"""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import torch

import ma2ml_env
from agents.base import SearchAlgorithm, action_spaces_of, run
from agents.evolution import RegularizedEvolution
from agents.independent import IndependentLearners
from agents.random_search import RandomSearch
from agents.registry import (
    _REGISTRY,
    config_fields,
    make_algorithm,
    register_algorithm,
    registered_algorithms,
)
from agents.sb3 import SB3Agent
from agents.separate import ModuleByModule
from agents.tpe import OptunaTPE

ALGORITHMS = registered_algorithms()
BASELINES = ("random", "evolution", "local-search", "tpe", "ppo", "a2c", "independent", "separate")
NEEDS = {"tpe": "optuna", "gp": "optuna", "ppo": "stable_baselines3", "a2c": "stable_baselines3"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _skip_if_missing(name: str) -> None:
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])


def _env(modules=("aug", "nas", "hpo")):
    return ma2ml_env.parallel_env(reward="surrogate", modules=modules)


def test_registry_lists_every_algorithm():
    assert set(ALGORITHMS) >= {"random", "tpe", "ppo", "a2c", "independent", "separate", "ma2ml", "ma2ml-lite"}
    assert list(ALGORITHMS) == sorted(ALGORITHMS)


def test_unknown_algorithm_lists_the_names():
    with pytest.raises(ValueError, match="unknown search algorithm 'nope'.*'random'.*'tpe'"):
        make_algorithm("nope")


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("tpe", {"bogus": 1}, r"unknown option\(s\) \['bogus'\].*n_startup_trials"),
        ("tpe", {"n_startup_trials": 0}, "n_startup_trials must be a positive integer"),
        ("ppo", {"algo": "a2c"}, r"\[.algo.\] of algorithm .ppo. are fixed by its name"),
        ("ppo", {"learning_rate": -1.0}, "learning_rate must be a number in"),
        ("ppo", {"model_kwargs": {"seed": 3}}, "may not set"),
        ("independent", {"learner": "sarsa"}, "learner must be one of"),
        ("independent", {"exploration": 1.5}, "exploration must be a number in"),
        ("separate", {"evals_per_stage": 0}, "evals_per_stage must be a positive integer"),
        ("separate", {"inner": "bayes"}, "inner must be one of"),
        ("random", {"x": 1}, "takes no configuration"),
        ("evolution", {"population_size": 0}, "population_size must be a positive integer"),
        ("evolution", {"population_size": 4, "tournament_size": 5}, r"tournament_size \(5\) must be <= population_size"),
    ],
)
def test_bad_configs_raise_clear_errors(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_algorithm(name, **kwargs)


def test_registered_names_and_configs_match():
    for name in ALGORITHMS:
        _skip_if_missing(name)
        algo = make_algorithm(name)
        assert isinstance(algo, SearchAlgorithm)
        assert algo.name == name
        assert isinstance(config_fields(name), dict)
    assert make_algorithm("a2c").config.algo == "a2c"
    assert config_fields("ma2ml-lite")["credit_assignment"] is False  # Lite's own defaults are listed


def test_broken_optional_algorithm_does_not_break_the_others():
    register_algorithm("broken", "agents.no_such_module:Algo")
    try:
        assert "broken" in registered_algorithms()
        with pytest.raises(ImportError):
            make_algorithm("broken")
        assert isinstance(make_algorithm("random"), RandomSearch)
    finally:
        _REGISTRY.pop("broken")


@pytest.mark.parametrize(("cls", "module", "extra"), [(OptunaTPE, "optuna", "optuna"),
                                                      (SB3Agent, "stable_baselines3", "sb3")])
def test_missing_optional_dependency_names_the_install_command(monkeypatch, cls, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    env = _env(("hpo",))
    with pytest.raises(ImportError, match=f'pip install "ma2ml\\[{extra}\\]"'):
        cls().setup(action_spaces_of(env), 0)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_runs_end_to_end_on_the_surrogate_env(name):
    _skip_if_missing(name)
    env = _env()
    res = run(make_algorithm(name), env, budget=20, seed=0, batch_size=8)  # rounds of 8, 8 and 4
    assert res.algorithm == name
    assert [t.index for t in res.trials] == list(range(20))
    assert [t.round for t in res.trials] == [0] * 8 + [1] * 8 + [2] * 4
    assert all(t.status == "ok" and 0.0 <= t.score <= 1.0 for t in res.trials)
    assert set(res.trials[0].actions) == {"aug", "nas", "hpo"}
    assert isinstance(res.best_pipeline, ma2ml_env.Pipeline)
    assert res.best_score == res.scores.max()


@pytest.mark.parametrize("name", ALGORITHMS)
def test_same_seed_same_trials(name):
    _skip_if_missing(name)

    def trials(seed):
        res = run(make_algorithm(name), _env(("nas", "hpo")), budget=24, seed=seed, batch_size=8)
        return [(t.actions, t.score) for t in res.trials]

    first = trials(3)
    torch.manual_seed(123)  # global RNG state must not matter
    np.random.seed(123)
    assert trials(3) == first
    assert trials(4) != first


@pytest.mark.parametrize("name", BASELINES)
def test_state_dict_resumes_exactly(name):
    """Checkpoint mid-search, continue; a fresh instance loaded from the checkpoint proposes the same."""
    _skip_if_missing(name)
    env = _env(("nas", "hpo"))
    spaces = action_spaces_of(env)
    base = env.unwrapped

    def rounds(algo, r0, r1):
        out = []
        for r in range(r0, r1):
            acts = algo.propose(8)
            scores = [x.score for x in base.evaluate(acts, seeds=[r * 8 + i for i in range(8)])]
            algo.observe(acts, scores)
            out.append([{k: np.asarray(v).tolist() for k, v in a.items()} for a in acts])
        return out

    algo = make_algorithm(name)
    algo.setup(spaces, 7)
    rounds(algo, 0, 3)
    state = pickle.loads(pickle.dumps(algo.state_dict()))  # picklable
    expected = rounds(algo, 3, 6)
    fresh = make_algorithm(name)
    fresh.setup(spaces, 999)  # a different seed: everything must come from the state
    fresh.load_state_dict(state)
    assert rounds(fresh, 3, 6) == expected

    # a checkpoint between propose and observe (what the durable store saves mid-round)
    algo = make_algorithm(name)
    algo.setup(spaces, 7)
    rounds(algo, 0, 2)
    acts = algo.propose(8)
    state = pickle.loads(pickle.dumps(algo.state_dict()))
    scores = [x.score for x in base.evaluate(acts, seeds=list(range(8)))]
    algo.observe(acts, scores)
    expected = rounds(algo, 3, 5)
    fresh = make_algorithm(name)
    fresh.setup(spaces, 999)
    fresh.load_state_dict(state)
    fresh.observe(acts, scores)
    assert rounds(fresh, 3, 5) == expected


# (algorithm, modules, budget, k): learning tests. Margins: over seeds 0-4 the smallest
# (mean of last k) - (mean of first k) was >= 0.045 for each of these settings.
LEARNING = [
    ("tpe", ("nas", "hpo"), 96, 24),
    ("ppo", ("hpo",), 128, 32),
    ("a2c", ("hpo",), 96, 24),
    ("independent", ("hpo",), 128, 32),
    ("separate", ("nas", "hpo"), 96, 24),
    ("evolution", ("nas", "hpo"), 96, 24),
    ("local-search", ("nas", "hpo"), 96, 24),
    ("ma2ml", ("hpo",), 96, 24),
]


@pytest.mark.parametrize(("name", "modules", "budget", "k"), LEARNING, ids=[x[0] for x in LEARNING])
def test_learning_algorithms_improve_on_their_first_evaluations(name, modules, budget, k):
    _skip_if_missing(name)
    res = run(make_algorithm(name), _env(modules), budget=budget, seed=0, batch_size=8)
    s = res.scores
    assert s[-k:].mean() > s[:k].mean() + 0.02, (s[:k].mean(), s[-k:].mean())


def test_random_search_does_not_improve():
    """The control for the test above: uniform proposals stay uniform."""
    res = run(RandomSearch(), _env(("hpo",)), budget=256, seed=0, batch_size=8)
    s = res.scores
    assert abs(s[-64:].mean() - s[:64].mean()) < 0.05


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_run_on_any_pettingzoo_env_with_discrete_actions(name):
    """Generic PettingZoo env (no batch ``evaluate``), ``Discrete`` actions: the climbing game."""
    _skip_if_missing(name)
    from ma2ml_env.matrix_games import matrix_game

    env = matrix_game("climbing")
    res = run(make_algorithm(name), env, budget=16, seed=0, batch_size=4)
    assert len(res.trials) == 16
    assert all(len(v) == 1 and 0 <= v[0] < 3 for t in res.trials for v in t.actions.values())


@pytest.mark.parametrize("name", ["tpe", "ppo"])
def test_observing_actions_it_did_not_propose(name):
    """Warm starts: TPE adds a finished trial; PPO scores it under its current policy."""
    _skip_if_missing(name)
    env = _env(("hpo",))
    algo = make_algorithm(name, **({"n_steps": 4, "batch_size": 4} if name == "ppo" else {}))
    algo.setup(action_spaces_of(env), 0)
    rng = np.random.default_rng(0)
    acts = [env.space.unflatten(x) for x in env.space.sample(rng, 4)]
    algo.observe(acts, [0.5, 0.1, 0.2, 0.3])
    if name == "tpe":
        assert len(algo.study.trials) == 4
    else:
        assert algo.updates == 1
    assert len(algo.propose(2)) == 2


def test_module_by_module_changes_one_module_per_stage():
    env = _env(("aug", "nas", "hpo"))
    algo = ModuleByModule(evals_per_stage=4, inner="random")
    algo.setup(action_spaces_of(env), 0)
    first = algo.propose(1)
    algo.observe(first, [1.0])  # the incumbent; nothing later beats a score of 1
    inc = first[0]
    for stage_agent in ["aug", "nas", "hpo", "aug"]:
        assert algo.stage_agent == stage_agent
        for a in algo.propose(4):
            for agent in ("aug", "nas", "hpo"):
                if agent != stage_agent:
                    np.testing.assert_array_equal(a[agent], inc[agent])
        algo.observe([], [])


def test_independent_learners_q_variant_runs_and_learns():
    res = run(IndependentLearners(learner="q"), _env(("hpo",)), budget=128, seed=0, batch_size=8)
    s = res.scores
    assert s[-32:].mean() > s[:32].mean() + 0.02


def test_evolution_children_are_one_mutation_from_a_tournament_winner():
    env = _env(("nas", "hpo"))
    algo = RegularizedEvolution(population_size=6, tournament_size=2)
    algo.setup(action_spaces_of(env), 0)
    first = algo.propose(6)  # the initial population: uniform random
    scores = list(np.linspace(0.1, 0.6, 6))
    algo.observe(first, scores)
    pop = [np.concatenate([a["nas"], a["hpo"]]) for a in first]
    for child in algo.propose(40):
        x = np.concatenate([child["nas"], child["hpo"]])
        diffs = [int((x != p).sum()) for p in pop]
        assert min(diffs) == 1  # exactly one decision changed, to a different value
    # the worst member never wins a tournament of two: no child is one mutation from it alone
    pop[0]
    kids = [np.concatenate([c["nas"], c["hpo"]]) for c in algo.propose(200)]
    parents = [[i for i, p in enumerate(pop) if (k != p).sum() == 1] for k in kids]
    assert not any(ps == [0] for ps in parents) and any(0 not in ps for ps in parents)
    # aging: observing six more members pushes the first six out
    algo.observe(algo.propose(6), [0.0] * 6)
    assert [m[1] for m in algo.population] == [0.0] * 6
