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
    algorithm_spec,
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
NEEDS = {n: algorithm_spec(n).requires for n in registered_algorithms() if algorithm_spec(n).requires}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _skip_if_missing(name: str) -> None:
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])


def _env(modules=("aug", "nas", "hpo")):
    return ma2ml_env.parallel_env(reward="surrogate", modules=modules)


def test_registry_lists_every_algorithm():
    assert set(ALGORITHMS) >= {"random", "tpe", "ppo", "a2c", "independent", "separate", "ma2ml",
                               "ma2ml-lite"}
    assert list(ALGORITHMS) == sorted(ALGORITHMS)


def test_unknown_algorithm_lists_the_names():
    with pytest.raises(ValueError, match=r"unknown search algorithm 'nope'.*'random'.*'tpe'"):
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
        ("evolution", {"population_size": 4, "tournament_size": 5},
         r"tournament_size \(5\) must be <= population_size"),
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
    codec = env.unwrapped.codec
    assert all(isinstance(t.action, tuple) and len(t.action) == codec.size for t in res.trials)
    assert set(codec.decode(res.trials[0].action)) == {"aug", "nas", "hpo"}
    assert res.best_pipeline == env.unwrapped.decode(np.asarray(res.best.action))
    assert isinstance(res.best_pipeline, ma2ml_env.Pipeline)
    assert res.best_score == res.scores.max()


@pytest.mark.parametrize("name", ALGORITHMS)
def test_same_seed_same_trials(name):
    _skip_if_missing(name)

    def trials(seed):
        res = run(make_algorithm(name), _env(("nas", "hpo")), budget=24, seed=seed, batch_size=8)
        return [(t.action, t.score) for t in res.trials]

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
            scores = base.evaluate(acts, seeds=np.arange(r * 8, r * 8 + 8)).score
            algo.observe(acts, scores)
            out.append(acts.tolist())
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
    scores = base.evaluate(acts, seeds=np.arange(8)).score
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
    assert all(len(t.action) == len(env.possible_agents) and all(0 <= v < 3 for v in t.action)
               for t in res.trials)


@pytest.mark.parametrize("name", ["tpe", "ppo"])
def test_observing_actions_it_did_not_propose(name):
    """Warm starts: TPE adds a finished trial; PPO scores it under its current policy."""
    _skip_if_missing(name)
    env = _env(("hpo",))
    algo = make_algorithm(name, **({"n_steps": 4, "batch_size": 4} if name == "ppo" else {}))
    algo.setup(action_spaces_of(env), 0)
    rng = np.random.default_rng(0)
    acts = env.unwrapped.codec.sample(rng, 4)
    algo.observe(acts, np.array([0.5, 0.1, 0.2, 0.3]))
    if name == "tpe":
        assert len(algo.study.trials) == 4
    else:
        assert algo.updates == 1
    assert len(algo.propose(2)) == 2


def test_module_by_module_changes_one_module_per_stage():
    env = _env(("aug", "nas", "hpo"))
    algo = ModuleByModule(evals_per_stage=4, inner="random")
    algo.setup(action_spaces_of(env), 0)
    codec = algo.codec
    first = algo.propose(1)
    algo.observe(first, np.array([1.0]))  # the incumbent; nothing later beats a score of 1
    inc = codec.decode(first[0])
    for stage_agent in ["aug", "nas", "hpo", "aug"]:
        assert algo.stage_agent == stage_agent
        for row in algo.propose(4):
            a = codec.decode(row)
            for agent in ("aug", "nas", "hpo"):
                if agent != stage_agent:
                    np.testing.assert_array_equal(a[agent], inc[agent])
        algo.observe(np.zeros((0, codec.size), dtype=np.int64), np.zeros(0))


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
    pop = list(first)
    for x in algo.propose(40):
        diffs = [int((x != p).sum()) for p in pop]
        assert min(diffs) == 1  # exactly one decision changed, to a different value
    # the worst member never wins a tournament of two: no child is one mutation from it alone
    pop[0]
    kids = list(algo.propose(200))
    parents = [[i for i, p in enumerate(pop) if (k != p).sum() == 1] for k in kids]
    assert not any(ps == [0] for ps in parents) and any(0 not in ps for ps in parents)
    # aging: observing six more members pushes the first six out
    algo.observe(algo.propose(6), [0.0] * 6)
    assert [m[1] for m in algo.population] == [0.0] * 6


# -- SB3 leaves nothing in the temp folder ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["ppo", "a2c"])
def test_sb3_searches_leave_no_log_folder(private_tmp, name):
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.logger import configure

    configure(None, [])  # what SB3 does by default: a tempdir/SB3-<date> folder ...
    made = list(private_tmp.glob("SB3-*"))
    assert len(made) == 1  # ... so this test sees such folders
    made[0].rmdir()
    algo = make_algorithm(name, n_steps=4, batch_size=4, n_epochs=1)
    run(algo, _env(("hpo",)), budget=12, seed=0, batch_size=4)
    assert algo.updates == 3  # SB3's train() ran, and with it SB3's logger
    assert list(private_tmp.glob("SB3-*")) == []


def test_sb3_logs_where_asked(private_tmp, tmp_path):
    pytest.importorskip("stable_baselines3")
    logs = tmp_path / "sb3-logs"
    algo = make_algorithm("ppo", n_steps=4, batch_size=4, n_epochs=1, log_dir=str(logs))
    run(algo, _env(("hpo",)), budget=8, seed=0, batch_size=4)
    rows = (logs / "progress.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 and "train/loss" in rows[0]  # a header and one row per update
    assert list(private_tmp.glob("SB3-*")) == []


# -- config values against the config's field types -------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("ma2ml-paper", {"policy_lr": "fast"}, r"MA2MLConfig.policy_lr must be a number, got 'fast' \(str\)"),
        ("ma2ml-lite", {"updates_per_round": 2.0}, r"MA2MLConfig.updates_per_round must be an integer, got"),
        ("ma2ml-paper", {"off_policy": 1}, r"MA2MLConfig.off_policy must be a bool \(True or False\), got 1 \("),
        ("ma2ml-paper", {"torch_threads": "1"}, r"MA2MLConfig.torch_threads must be an integer or None, got '1'"),
        ("tpe", {"n_startup_trials": True}, r"TPEConfig.n_startup_trials must be an integer, got True \("),
        ("tpe", {"multivariate": "no"}, r"TPEConfig.multivariate must be a bool"),
        ("ppo", {"learning_rate": True}, r"SB3Config.learning_rate must be a number, got True \(bool\)"),
        ("ppo", {"net_arch": 64}, r"SB3Config.net_arch must be a sequence, got 64 \(int\)"),
        ("ppo", {"model_kwargs": [1]}, r"SB3Config.model_kwargs must be a mapping, got \[1\] \(list\)"),
        ("ppo", {"log_dir": 3}, r"SB3Config.log_dir must be a string or None, got 3 \(int\)"),
        ("independent", {"learner": 1}, r"IndependentConfig.learner must be one of 'reinforce', 'q', got 1"),
        ("independent", {"lr": np.bool_(True)}, r"IndependentConfig.lr must be a number, got (np.)?True"),
        ("separate", {"order": "nas"}, r"ModuleByModuleConfig.order must be a sequence or None, got 'nas'"),
        ("evolution", {"mutations": 1.5}, r"EvolutionConfig.mutations must be an integer, got 1.5 \(float\)"),
        ("local-search", {"n_initial": "3"}, r"LocalSearchConfig.n_initial must be an integer, got '3' \("),
    ],
)
def test_config_values_of_the_wrong_type_name_field_type_and_value(name, kwargs, match):
    from agents.common import ConfigTypeError

    with pytest.raises(ConfigTypeError, match=match) as info:
        make_algorithm(name, **kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)
    if name in ("tpe", "ppo"):
        pytest.importorskip(NEEDS[name])
    cls = _load_target(algorithm_spec(name).target)
    with pytest.raises(ConfigTypeError, match=match):
        cls(**kwargs)  # the algorithm's own constructor: the same check


def _load_target(target):
    import importlib

    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def test_right_types_pass_numbers_widen_to_float():
    assert make_algorithm("ma2ml", policy_lr=1).config.policy_lr == 1  # an int is a number
    assert make_algorithm("evolution", population_size=np.int64(5)).config.population_size == 5
    assert make_algorithm("independent", lr=np.float32(0.5)).config.lr == 0.5
    assert make_algorithm("separate", order=["hpo", "nas"]).config.order == ("hpo", "nas")
    assert make_algorithm("ma2ml", critic_lr=None).config.critic_lr is None


def test_user_registered_configs_are_type_checked_too():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class StepConfig:
        step: float = 0.1
        rounds: int = 2

    register_algorithm("typed-user-algo", "agents.random_search:RandomSearch",
                       config=f"{__name__}:_StepConfig")
    globals()["_StepConfig"] = StepConfig
    try:
        with pytest.raises(ValueError, match=r"StepConfig.step must be a number, got 'big' \(str\)"):
            make_algorithm("typed-user-algo", step="big")
        with pytest.raises(ValueError, match=r"StepConfig.rounds must be an integer, got False \(bool\)"):
            make_algorithm("typed-user-algo", rounds=False)
    finally:
        _REGISTRY.pop("typed-user-algo")
        globals().pop("_StepConfig")
