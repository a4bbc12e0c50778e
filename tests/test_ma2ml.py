"""MA2ML (the paper's, agents/ma2ml.py), MA2ML-Lite and our extension (agents/ma2ml_plus.py): correctness of
the counterfactual advantage and of the mirror step, learning tests on problems with a known optimum (climbing
and penalty games, the surrogate AutoML env), ablation switches, exact resume, seeding, config validation, and
the conformance check on every registered MA2ML."""

from __future__ import annotations

import pickle

import gymnasium
import numpy as np
import pytest
import torch
from pettingzoo.test import parallel_api_test

from agents.base import action_spaces_of, run
from agents.check import check_algorithm
from agents.ma2ml import MA2ML, MA2MLConfig, MA2MLLite
from agents.ma2ml_plus import MA2MLPlus, MA2MLPlusConfig
from agents.registry import make_algorithm
from ma2ml_env.matrix_games import CLIMBING, MatrixGameEnv, matrix_game, penalty_payoff

# Small, fast settings for the 2-agent matrix games (9 joint actions): 12 rounds of 8 evaluations.
GAME_BUDGET, GAME_BATCH = 96, 8
GAME_CFG = {"critic_hidden": 32, "updates_per_round": 8}
PAPER = MA2MLConfig(**GAME_CFG)  # the paper's MA2ML: MLP critic, Adam trust-region steps, no screening
SEEDS = range(10)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _greedy_pair(algo: MA2ML) -> tuple[int, int]:
    g = algo.greedy()  # a flat row: one decision per agent
    return int(g[0]), int(g[1])


def _successes(game: str, make, seeds=SEEDS) -> int:
    """Seeds whose final greedy joint action is optimal."""
    env = matrix_game(game)
    ok = 0
    for seed in seeds:
        algo = make()
        run(algo, env, budget=GAME_BUDGET, seed=seed, batch_size=GAME_BATCH)
        ok += _greedy_pair(algo) in env.optimal_actions()
    return ok


def _flat(algo: MA2ML, actions) -> np.ndarray:
    """Proposed actions, checked to be what the interface promises: a flat int64 batch [n, D]."""
    assert isinstance(actions, np.ndarray) and actions.dtype == np.int64 and actions.shape[1:] == (algo.codec.size,)
    return actions


def _rounds(algo: MA2ML, env, rounds: int, n: int = 4) -> list[np.ndarray]:
    """Drive propose/observe by hand on a matrix game; return the flat proposals of every round."""
    out = []
    for _ in range(rounds):
        acts = algo.propose(n)
        flat = _flat(algo, acts)
        algo.observe(acts, [float(env.reward(int(a0), int(a1))) for a0, a1 in flat])
        out.append(flat)
    return out


def _as_lists(rounds: list[np.ndarray]) -> list:
    return [r.tolist() for r in rounds]


# -- the matrix games ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["climbing", "penalty"])
def test_matrix_game_api(name):
    env = matrix_game(name)
    parallel_api_test(env, num_cycles=5)
    assert env.action_space("agent_0") is env.action_space("agent_0")
    best, joint = env.optimum()
    assert best == env.payoff.max() and joint in env.optimal_actions()


def test_matrix_game_payoffs_and_errors():
    assert matrix_game("climbing").optimum() == (11.0, (0, 0))
    env = matrix_game("penalty", k=-50, normalize=True)
    assert env.optimal_actions() == [(0, 0), (2, 2)]
    env.reset()
    _, rew, terms, _, _ = env.step({"agent_0": 0, "agent_1": 2})
    assert rew == {"agent_0": -1.0, "agent_1": -1.0} and all(terms.values()) and env.agents == []
    with pytest.raises(ValueError, match="unknown matrix game"):
        matrix_game("prisoners")
    with pytest.raises(ValueError, match="k must be <= 0"):
        penalty_payoff(5)
    with pytest.raises(RuntimeError, match="reset"):
        env.step({"agent_0": 0, "agent_1": 0})
    np.testing.assert_array_equal(MatrixGameEnv().payoff, CLIMBING)


# -- counterfactual advantage: exact against brute force -------------------------------------------------
def _brute_force_advantages(algo: MA2ML, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """A_i(a) = Q(a) - sum_{a_i'} pi_i(a_i') Q(a_i', a_-i), by enumerating agent i's joint choices."""
    lay = algo.codec
    probs = algo.probabilities()
    out = {}
    with torch.no_grad():
        q = algo.critic(flat + algo._col_offset).mean(0)
        for agent, sl in zip(lay.agents, lay.slices):
            base = torch.zeros(len(flat))
            for choice in np.ndindex(*lay.nvec[sl]):
                alt = flat.clone()
                alt[:, sl] = torch.as_tensor(choice)
                w = float(np.prod([probs[agent][j][c] for j, c in enumerate(choice)]))
                base += w * algo.critic(alt + algo._col_offset).mean(0)
            out[agent] = q - base
    return out


def _skewed(algo: MA2ML, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        algo.logits.copy_(torch.randn(algo.logits.shape, generator=g))


SPACES = {
    "x": gymnasium.spaces.MultiDiscrete([2, 3]),
    "y": gymnasium.spaces.Discrete(3, start=1),
    "z": gymnasium.spaces.MultiDiscrete([2, 2, 2]),
}


@pytest.mark.parametrize("critic", ["mlp", "fm"])
def test_enumerated_counterfactual_matches_brute_force(critic):
    algo = MA2MLPlus(enumerate_limit=10**6, critic_ensemble=2, critic=critic)  # every agent enumerated
    algo.setup(SPACES, seed=3)
    _skewed(algo)
    flat = torch.as_tensor(_flat(algo, algo.propose(16)))
    adv = algo.advantages(flat)
    assert adv.shape == (16, 3)  # one credit unit per agent
    ref = _brute_force_advantages(algo, flat)
    for u, agent in enumerate(algo.codec.agents):
        torch.testing.assert_close(adv[:, u], ref[agent], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("critic", ["mlp", "fm"])
def test_per_decision_counterfactual_is_exact_marginalisation_per_decision(critic):
    algo = MA2MLPlus(enumerate_limit=1, critic=critic)  # every agent of several decisions per decision
    algo.setup(SPACES, seed=4)
    _skewed(algo, 1)
    lay = algo.codec
    flat = torch.as_tensor(_flat(algo, algo.propose(8)))
    adv = algo.advantages(flat)
    assert adv.shape == (8, lay.size)  # one unit per decision (y has a single decision)
    probs = torch.exp(torch.log_softmax(algo.logits.detach().masked_fill(~algo._mask, -torch.inf), -1))
    with torch.no_grad():
        q = algo.critic(flat + algo._col_offset).mean(0)
        for d in range(lay.size):
            base = torch.zeros(len(flat))
            for k in range(lay.nvec[d]):
                alt = flat.clone()
                alt[:, d] = k
                base += probs[d, k] * algo.critic(alt + algo._col_offset).mean(0)
            torch.testing.assert_close(adv[:, int(algo._unit_of_dec[d])], q - base, rtol=1e-4, atol=1e-5)


def test_counterfactuals_enumerate_small_agents_and_go_per_decision_otherwise():
    algo = MA2ML(enumerate_limit=6)
    algo.setup(SPACES, seed=0)
    # x: 6 joint choices -> enumerated; y: Discrete -> enumerated; z: 8 > 6 -> per decision
    assert algo._unit_mode == ["enumerate", "enumerate", "decision", "decision", "decision"]
    algo = MA2ML(enumerate_limit=1)
    algo.setup(SPACES, seed=0)  # a single decision is enumerated whatever its size (the two coincide)
    assert algo._unit_mode == ["decision", "decision", "enumerate", "decision", "decision", "decision"]
    algo = MA2ML(credit_assignment=False)
    algo.setup(SPACES, seed=0)
    assert algo._unit_mode == ["shared"] * 3


@pytest.mark.parametrize("cls", [MA2ML, MA2MLPlus, MA2MLLite])
def test_actions_respect_spaces_including_start(cls):
    algo = cls()
    algo.setup(SPACES, seed=0)
    _trained(algo, rounds=1)  # MA2MLPlus screens once something is observed
    for row in _flat(algo, algo.propose(50)):
        a = algo.codec.decode(row)  # the PettingZoo form, checked against the spaces themselves
        for agent, space in SPACES.items():
            assert space.contains(a[agent]), (agent, a[agent])


@pytest.mark.parametrize("name", ["ma2ml", "ma2ml-paper", "ma2ml-lite"])
def test_every_registered_ma2ml_passes_the_conformance_check(name):
    check_algorithm(lambda: make_algorithm(name, critic_hidden=16, updates_per_round=2), batch_size=3)


# -- learning on the coordination games ------------------------------------------------------------------
# Measured success rates (seeds 0-9, 96 evaluations in rounds of 8, greedy joint action optimal):
#   MA2MLPlus (ours: MLP critics on rank targets, mirror step, screening)  10/10  10/10
#   the same with critic="fm"                                            10/10  10/10
#   variant of the paper's MA2ML (PAPER)    climbing  penalty(k=-100)
#   MA2ML (the paper's)                      8/10      10/10
#   no credit assignment, Q(a) - V shared    8/10       8/10
#   no credit assignment, r - b shared       6/10       9/10
#   uniform replay (elite_fraction=0)        0/10       0/10
#   on-policy                                0/10       0/10
#   MA2ML-Lite                               0/10       0/10   (settles on the safe action)
@pytest.mark.parametrize("game", ["climbing", "penalty"])
@pytest.mark.slow
def test_ma2ml_finds_the_optimum_where_lite_fails(game):
    full = _successes(game, MA2MLPlus)  # our defaults, nothing tuned for the games
    lite = _successes(game, MA2MLLite)
    paper = _successes(game, lambda: MA2ML(PAPER))
    assert full >= 9, f"MA2MLPlus found the optimum of the {game} game in {full}/10 seeds"
    assert paper >= 7, f"the paper's MA2ML found the optimum of the {game} game in {paper}/10 seeds"
    assert lite <= 2, f"MA2ML-Lite found the optimum of the {game} game in {lite}/10 seeds"
    assert full - lite >= 5


def test_off_policy_elite_replay_is_what_escapes_relative_overgeneralisation():
    # The same method with the paper's uniform replay, or on-policy, settles on the safe action (0/10
    # measured for both); 5 seeds keep the test fast.
    uniform = _successes("penalty", lambda: MA2ML(PAPER, elite_fraction=0.0), seeds=range(5))
    on_policy = _successes("penalty", lambda: MA2ML(PAPER, off_policy=False), seeds=range(5))
    assert uniform <= 1 and on_policy <= 1, (uniform, on_policy)


def test_run_on_a_matrix_game_env():
    env = matrix_game("climbing", normalize=True)
    algo = MA2MLPlus(**GAME_CFG)
    result = run(algo, env, budget=48, seed=0, batch_size=8)
    assert len(result.trials) == 48 and result.algorithm == "ma2ml"
    assert result.best_score == pytest.approx(env.optimum()[0])  # 11 / 30
    assert len(algo.buffer) == 48  # every evaluated (a, r) is recorded
    np.testing.assert_allclose(algo.buffer.rewards, result.scores)
    assert set(action_spaces_of(env)) == set(algo.agents)


# -- ablation switches change behaviour ------------------------------------------------------------------
@pytest.mark.parametrize(
    "switch",
    [
        {"credit_assignment": False},
        {"credit_assignment": False, "shared_advantage": "reward"},
        {"off_policy": False},
        {"elite_fraction": 0.0},
        {"critic": "fm"},
        {"critic_targets": "zscore"},
        {"policy_update": "gradient"},
        {"screening": 0},
        {"mirror_step": 0.5},
        {"paper": True, "credit_assignment": False},
        {"paper": True, "credit_assignment": False, "shared_advantage": "reward"},
        {"paper": True, "off_policy": False},
        {"paper": True, "trust_region": "none"},
        {"paper": True, "elite_fraction": 0.0},
    ],
    ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()),
)
def test_each_switch_changes_the_search(switch):
    """Every switch changes the policies, of our MA2ML and of the paper's."""
    env = matrix_game("climbing")
    switch = dict(switch)
    cls, base = (MA2ML, PAPER) if switch.pop("paper", False) else (MA2MLPlus, MA2MLPlusConfig())
    ref, alt = cls(base), cls(base, **switch)
    ref.setup(action_spaces_of(env), 0)
    alt.setup(action_spaces_of(env), 0)
    _rounds(ref, env, 4)
    _rounds(alt, env, 4)
    p_ref, p_alt = ref.probabilities(), alt.probabilities()
    diff = max(np.abs(p_ref[a][0] - p_alt[a][0]).max() for a in p_ref)
    assert diff > 1e-3, f"switch {switch} did not change the policies"


def test_lite_is_ma2ml_with_switches():
    cfg = MA2MLLite().config
    assert cfg == MA2MLConfig.lite()
    assert not cfg.credit_assignment and not cfg.off_policy and not cfg.uses_critic
    assert cfg.trust_region == "none" and cfg.shared_advantage == "reward"
    assert MA2MLLite.name == "ma2ml-lite" and MA2ML.name == "ma2ml-paper" and MA2MLPlus.name == "ma2ml"
    env = matrix_game("penalty")
    a, b = MA2MLLite(), MA2ML(MA2MLConfig.lite())
    a.setup(action_spaces_of(env), 1)
    b.setup(action_spaces_of(env), 1)
    assert _as_lists(_rounds(a, env, 3)) == _as_lists(_rounds(b, env, 3))


@pytest.mark.parametrize("overrides", [{}, {"credit_assignment": False}, {"off_policy": False}])
def test_our_extension_set_to_the_paper_is_the_papers_ma2ml(overrides):
    """``MA2MLPlusConfig.paper()`` (the base of the benchmark's ma2ml-rank and ma2ml-screen hybrids) runs
    exactly the paper's MA2ML: our pieces are off, nothing else differs."""
    import ma2ml_env

    env = ma2ml_env.parallel_env(reward="surrogate", modules=("nas", "hpo"))
    a = run(MA2ML(critic_hidden=16, **overrides), env, budget=40, seed=2, batch_size=8)
    b = run(MA2MLPlus(MA2MLPlusConfig.paper(critic_hidden=16, **overrides)), env, budget=40, seed=2, batch_size=8)
    assert [t.score for t in a.trials] == [t.score for t in b.trials]


# -- reproducibility and exact resume --------------------------------------------------------------------
@pytest.mark.parametrize("cls", [MA2ML, MA2MLPlus, MA2MLLite])
def test_same_seed_same_search(cls):
    env = matrix_game("climbing")
    runs = []
    for seed in (7, 7, 8):
        algo = cls(**(GAME_CFG if cls is not MA2MLLite else {}))
        algo.setup(action_spaces_of(env), seed)
        runs.append(_as_lists(_rounds(algo, env, 4)))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


@pytest.mark.parametrize(
    ("cls", "overrides"),
    [(MA2ML, {}), (MA2ML, {"credit_assignment": False}), (MA2MLLite, {}), (MA2MLPlus, {"critic_ensemble": 2}),
     (MA2MLPlus, {"credit_assignment": False}), (MA2MLPlus, {"critic": "fm", "critic_ensemble": 2}),
     (MA2MLPlus, {"policy_update": "gradient"})],
    ids=lambda v: v.__name__ if isinstance(v, type) else ",".join(f"{k}={x}" for k, x in v.items()),
)
def test_resume_continues_exactly(cls, overrides):
    env = matrix_game("climbing")
    algo = cls(**GAME_CFG, **overrides)
    algo.setup(action_spaces_of(env), 11)
    _rounds(algo, env, 2)
    state = pickle.loads(pickle.dumps(algo.state_dict()))  # checkpoints go through disk
    uninterrupted = _as_lists(_rounds(algo, env, 3))
    resumed = cls()  # a different config: the checkpoint's config wins
    resumed.load_state_dict(state)
    assert resumed.config == algo.config
    assert _as_lists(_rounds(resumed, env, 3)) == uninterrupted
    for name, p in algo.critic.state_dict().items():
        torch.testing.assert_close(resumed.critic.state_dict()[name], p, rtol=0, atol=0)
    torch.testing.assert_close(resumed.target_logits, algo.target_logits, rtol=0, atol=0)


def test_state_dict_is_a_snapshot():
    env = matrix_game("climbing")
    algo = MA2MLPlus(**GAME_CFG)
    algo.setup(action_spaces_of(env), 0)
    _rounds(algo, env, 1)
    state = algo.state_dict()
    before = state["logits"].clone()
    _rounds(algo, env, 2)
    torch.testing.assert_close(state["logits"], before, rtol=0, atol=0)
    assert len(state["buffer"]["rewards"]) == 4


# -- config validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trust_region": "trpo"}, "trust_region must be one of"),
        ({"trust_region": "kl"}, "trust_region must be one of"),
        ({"shared_advantage": "value"}, "shared_advantage must be one of"),
        ({"updates_per_round": 0}, "MA2MLConfig.updates_per_round must be a positive integer"),
        ({"minibatch_size": 2.5}, r"MA2MLConfig.minibatch_size must be an integer, got 2.5 \(float\)"),
        ({"policy_lr": "fast"}, r"MA2MLConfig.policy_lr must be a number, got 'fast' \(str\)"),
        ({"policy_lr": True}, r"MA2MLConfig.policy_lr must be a number, got True \(bool\)"),
        ({"critic_lr": "x"}, r"MA2MLConfig.critic_lr must be a number or None, got 'x'"),
        ({"trust_region": 3}, r"MA2MLConfig.trust_region must be one of 'clip', 'none', got 3 \(int\)"),
        ({"policy_lr": 0}, r"policy_lr must be a number in \(0, inf\]"),
        ({"clip_epsilon": 1.5}, r"clip_epsilon must be a number in \(0, 1\)"),
        ({"target_tau": 0}, r"target_tau must be a number in \(0, 1\]"),
        ({"elite_fraction": 2}, r"elite_fraction must be a number in \[0, 1\]"),
        ({"elite_quantile": 0}, r"elite_quantile must be a number in \(0, 1\]"),
        ({"baseline_decay": 1}, r"baseline_decay must be a number in \[0, 1\)"),
        ({"critic_ensemble": 2}, "unexpected keyword argument 'critic_ensemble'"),  # ours, not the paper's
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        MA2MLConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"critic": "rf"}, "MA2MLPlusConfig.critic must be one of"),
        ({"policy_update": "newton"}, "policy_update must be one of"),
        ({"critic_ensemble": True}, r"MA2MLPlusConfig.critic_ensemble must be an integer, got True \(bool\)"),
        ({"critic_ensemble": 0}, "critic_ensemble must be a positive integer"),
        ({"mirror_step": 0}, r"mirror_step must be a number in \(0, inf\]"),
        ({"critic_l2": -1}, r"critic_l2 must be a number in \[0, inf\]"),
        ({"screen_random": 2}, r"screen_random must be a number in \[0, 1\]"),
        ({"target_tau": 0}, r"MA2MLPlusConfig.target_tau must be a number in \(0, 1\]"),  # the paper's checks too
    ],
)
def test_extension_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MA2MLPlusConfig(**kwargs)


def test_config_is_frozen_and_types_are_checked():
    cfg = MA2MLConfig()
    with pytest.raises(AttributeError):
        cfg.policy_lr = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError, match="credit_assignment must be a bool"):
        MA2MLConfig(credit_assignment="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config must be an instance of MA2MLConfig"):
        MA2ML(config={"policy_lr": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Discrete and MultiDiscrete"):
        MA2ML().setup({"a": gymnasium.spaces.Box(0, 1, (2,))}, 0)
    algo = MA2ML()
    algo.setup({"a": gymnasium.spaces.Discrete(2)}, 0)
    with pytest.raises(ValueError, match=r"2 joint actions and scores of shape \(1,\)"):
        algo.observe(algo.propose(2), [1.0])
    with pytest.raises(ValueError, match="finite"):
        algo.observe(algo.propose(1), [float("nan")])


# -- the surrogate AutoML env ----------------------------------------------------------------------------
# The lead asked for "within 1% of the known optimum". Measured (800 evaluations, batch 32, 2-sub-policy AUG
# + default NAS + HPO, exploration=0.1): MA2ML reaches 79-92% of the optimum over seeds 0-3 (seed 0: 79%),
# uniform random search 66-73%.
# Exact coordinate ascent on the *true* surrogate also stalls at 81-96% from random starts: the surrogate's
# basins need joint moves, which a factorised local policy search does not make reliably. So we assert what
# is robust (a clear margin over random search at equal budget) and leave the 1% target to the benchmark.
SURROGATE_BUDGET, SURROGATE_BATCH = 800, 32


def test_ma2ml_beats_random_search_on_the_surrogate():
    ma2ml_env = pytest.importorskip("ma2ml_env")
    from ma2ml_env.modules import ArchitectureModule, AugmentModule, HyperParameterModule

    env = ma2ml_env.parallel_env(
        reward="surrogate",
        modules=[AugmentModule(num_subpolicies=2), ArchitectureModule(), HyperParameterModule()],
    )
    best, _ = env.unwrapped.evaluator.optimum()
    algo = MA2MLPlus()  # the defaults
    result = run(algo, env, budget=SURROGATE_BUDGET, seed=0, batch_size=SURROGATE_BATCH)
    rng = np.random.default_rng(0)
    spaces = action_spaces_of(env)
    uniform = [{a: rng.integers(0, s.nvec) for a, s in spaces.items()} for _ in range(SURROGATE_BUDGET)]
    random_best = max(r.score for r in env.unwrapped.evaluate(env.unwrapped.codec.encode_batch(uniform),
                                                              list(range(SURROGATE_BUDGET))))
    assert result.best_score >= 0.75 * best, f"best {result.best_score:.4f} vs optimum {best:.4f}"
    assert result.best_score >= random_best + 0.05 * best, (result.best_score, random_best, best)


def test_ma2ml_reaches_the_optimum_within_one_percent_on_an_enumerable_surrogate():
    """On a surrogate space small enough to brute-force (884,736 pipelines; its optimum is checked against
    brute force in test_surrogate.py), 100 evaluations: MA2ML ends within 1% of the optimum where uniform
    random search mostly does not. Measured on seeds 0-4 (surrogate v1, MA2ML's defaults): MA2ML 0.999, 0.997,
    0.996, 0.982, 1.000 of the optimum; random 0.948, 0.969, 0.915, 0.992, 0.961."""
    import ma2ml_env
    from tests.test_surrogate import small_modules

    torch.set_num_threads(1)
    ours, rand = [], []
    for seed in range(5):
        env = ma2ml_env.parallel_env(reward="surrogate", modules=small_modules())
        best, _ = env.evaluator.optimum()
        ours.append(run(MA2MLPlus(), env, budget=100, seed=seed, batch_size=16).best_score / best)
        flat = env.space.codec.sample(np.random.default_rng(seed), 100)
        rand.append(env.evaluate(flat).score.max() / best)
    assert sum(r >= 0.99 for r in ours) >= 4, ours
    assert sum(r >= 0.99 for r in rand) <= 2, rand
    assert np.mean(ours) > np.mean(rand) + 0.02, (ours, rand)


def test_metrics_report_losses_and_per_agent_credit():
    """What the TensorBoard logger reads after each round (agents/tracking.py: algo/<name>[/<agent>])."""
    env = MatrixGameEnv(CLIMBING)
    algo = MA2MLPlus(**GAME_CFG)
    assert algo.metrics() == {}
    run(algo, env, budget=16, seed=0, batch_size=8)
    m = algo.metrics()
    assert set(m) == {"policy_loss", "critic_loss", "mean_abs_advantage"}
    assert set(m["mean_abs_advantage"]) == set(env.possible_agents)
    assert all(v > 0 for v in m["mean_abs_advantage"].values()) and m["critic_loss"] >= 0
    lite = MA2MLLite()
    run(lite, MatrixGameEnv(CLIMBING), budget=16, seed=0, batch_size=8)
    assert "critic_loss" not in lite.metrics()


def test_rank_critic_targets_make_the_search_invariant_to_monotone_reward_transforms():
    """With ``critic_targets="rank"`` only the order of the rewards reaches the critic (and the elite replay
    is by rank): a strictly increasing transform of every reward gives the same proposals. With z-scored
    targets it does not."""
    import ma2ml_env

    env = ma2ml_env.parallel_env(reward="surrogate", modules=("nas", "hpo"))
    ev = env.unwrapped.evaluator

    def proposals(transform, **cfg):
        algo = MA2MLPlus(critic_hidden=16, **cfg)
        algo.setup(action_spaces_of(env), seed=3)
        seen = []
        for _ in range(4):
            acts = algo.propose(8)
            flat = _flat(algo, acts)
            seen.append(flat)
            algo.observe(acts, transform(ev.evaluate(flat, np.zeros(len(flat), np.int64)).score).tolist())
        return np.concatenate(seen)

    torch.set_num_threads(1)
    rank = proposals(lambda r: r, critic_targets="rank")
    assert np.array_equal(rank, proposals(lambda r: np.exp(8 * r) - 3.0, critic_targets="rank"))
    z = {"critic_targets": "zscore"}
    assert not np.array_equal(proposals(lambda r: r, **z), proposals(lambda r: np.exp(8 * r) - 3.0, **z))
    with pytest.raises(ValueError, match="critic_targets must be one of"):
        MA2MLPlusConfig(critic_targets="quantile")


def test_screening_proposes_unevaluated_candidates_the_critic_ranks_highest():
    import ma2ml_env

    env = ma2ml_env.parallel_env(reward="surrogate", modules=("nas", "hpo"))
    space = env.unwrapped.space
    algo = MA2MLPlus(critic_hidden=16, critic_ensemble=3, screening=8)
    algo.setup(action_spaces_of(env), seed=0)
    first = algo.propose(16)  # nothing observed yet: plain policy samples
    algo.observe(first, [r.score for r in env.unwrapped.evaluate(first, list(range(16)))])
    torch.manual_seed(0)
    props = algo.propose(4)
    flat = _flat(algo, props)
    seen = {row.tobytes() for row in _flat(algo, first)}
    assert len({r.tobytes() for r in flat}) == 4 and not any(r.tobytes() in seen for r in flat)
    with torch.no_grad():
        q = algo.critic(algo._cols(torch.as_tensor(flat)))
        ours = (q.mean(0) + q.std(0)).min()
        others = algo.critic(algo._cols(torch.as_tensor(algo._behaviour_samples(64))))
    # the proposals rank at the top of what plain policy samples would give
    assert float(ours) >= float(torch.quantile(others.mean(0) + others.std(0), 0.5))
    assert space.joint_nvec.size == flat.shape[1]
    with pytest.raises(ValueError, match="screening must be an integer >= 0"):
        MA2MLPlusConfig(screening=-1)


def test_neighbours_are_every_one_decision_change_of_the_best_distinct_rows():
    import ma2ml_env

    env = ma2ml_env.parallel_env(reward="surrogate", modules=("nas", "hpo"))
    algo = MA2MLPlus(critic_hidden=16, critic_ensemble=2)
    algo.setup(action_spaces_of(env), seed=0)
    rows = algo.propose(12)
    rows[3] = rows[5]  # the best two rows are one joint action: it counts once among the 3 best
    scores = np.linspace(0.0, 1.0, 12)
    scores[3], scores[5] = 0.99, 0.98
    algo.observe(rows, scores)
    order = [11, 3, 10]  # best first, the duplicate (row 5) skipped
    nvec = algo.codec.nvec
    want = []
    for i in order:
        for d in range(len(nvec)):
            for v in range(nvec[d]):
                if v != rows[i, d]:
                    n = rows[i].copy()
                    n[d] = v
                    want.append(n)
    got = algo.neighbours(3)
    assert got.dtype == np.int64 and got.tolist() == np.array(want).tolist()
    assert len(got) == 3 * int((nvec - 1).sum())


def test_screening_proposes_the_neighbour_of_the_best_that_the_critic_ranks_first():
    """A neighbour of the best row that policy samples never produce (its value has no probability) is
    proposed once the neighbours join the screening pool, when the critic ranks it first."""
    import ma2ml_env

    env = ma2ml_env.parallel_env(reward="surrogate", modules=("nas", "hpo"))
    for top in (3, 0):
        algo = MA2MLPlus(critic_hidden=16, critic_ensemble=2, exploration=0.0, screen_neighbours=top)
        algo.setup(action_spaces_of(env), seed=0)
        rows = algo.propose(8)
        algo.observe(rows, np.arange(8.0))
        target = rows[7].copy()
        target[0] = (target[0] + 1) % algo.codec.nvec[0]
        with torch.no_grad():
            algo.logits[0, target[0]] = -1e9  # the policies never draw this value of decision 0
        key = algo._cols(torch.as_tensor(target[None]))

        class Picky(torch.nn.Module):  # a critic whose only good joint action is the target
            def __init__(self, key):
                super().__init__()
                self.key = key

            def forward(self, cols):
                return (cols == self.key).all(1).float()[None].expand(2, -1)

        algo.critic = Picky(key)
        proposed = algo.propose(4).tolist()
        assert (target.tolist() in proposed) == bool(top)
        assert (proposed[0] == target.tolist()) == bool(top)


def test_policies_restart_uniform_when_the_best_is_restart_after_evaluations_old():
    env = MatrixGameEnv(CLIMBING)
    algo = MA2MLPlus(**GAME_CFG, restart_after=8)
    algo.setup(action_spaces_of(env), 0)
    rows = np.array([[0, 0], [1, 1], [2, 2], [0, 1]])
    uniform = []
    for scores in ([11.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]):
        algo.observe(rows, scores)
        uniform.append(bool((algo.logits == 0).all() and (algo.target_logits == 0).all()))
    # the best (evaluation 1) is 3, 7, 11 evaluations old: restart at 11; then 4 and 8 since the restart
    assert uniform == [False, False, True, False, True]
    state = algo.state_dict()
    assert state["restarted_at"] == 20
    again = MA2MLPlus()
    again.load_state_dict(state)
    assert again._restarted_at == 20
    with pytest.raises(ValueError, match="restart_after must be an integer >= 0"):
        MA2MLPlusConfig(restart_after=-1)


def test_screening_on_a_space_it_has_fully_evaluated_falls_back_to_policy_samples():
    import warnings

    env = MatrixGameEnv(CLIMBING)  # 9 joint actions: after a few rounds every candidate was evaluated
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = MA2MLPlusConfig.paper(**GAME_CFG, screening=8, critic_ensemble=2)
        res = run(MA2MLPlus(cfg), env, budget=48, seed=0, batch_size=8)
    joint = {tuple(t.action) for t in res.trials}  # one decision per agent: the row is the joint action
    assert len(res.trials) == 48 and len(joint) == 9  # screening prefers the unevaluated: all nine are tried


@pytest.mark.slow
def test_same_trials_at_any_thread_count_from_python_and_the_cli(tmp_path):
    """Two torch threads split reductions differently from one: with ``torch_threads=None`` the paper's MLP
    critic diverged from the one-thread run at trial 256 of 400 (measured). MA2ML computes on one thread
    whatever the process uses (``torch_threads=1``, the default), so the trials are identical; and the CLI
    runs the same search as Python."""
    import json

    import ma2ml_env
    from agents.cli import main

    before = torch.get_num_threads()

    def scores(threads: int, make, budget: int) -> list[float]:
        torch.set_num_threads(threads)
        try:
            env = ma2ml_env.parallel_env(reward="surrogate")
            return [t.score for t in run(make(), env, budget=budget, seed=0, batch_size=8).trials]
        finally:
            torch.set_num_threads(before)

    assert scores(2, MA2ML, 320) == scores(1, MA2ML, 320)
    assert torch.get_num_threads() == before  # restored
    ours = scores(2, MA2MLPlus, 120)
    assert ours == scores(1, MA2MLPlus, 120)
    torch.set_num_threads(2)
    try:
        argv = ["search", "--algo", "ma2ml", "--reward", "surrogate", "--budget", "120", "--batch-size", "8",
                "--seed", "0", "--no-progress", "--out", str(tmp_path / "run")]
        assert main(argv) == 0
    finally:
        torch.set_num_threads(before)
    lines = (tmp_path / "run" / "trials.jsonl").read_text().splitlines()
    assert [json.loads(line)["score"] for line in lines] == ours


def _trained(algo: MA2ML, rounds: int = 3, seed: int = 0) -> None:
    """A few rounds of a random reward, so the critic is not at its initialisation."""
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        acts = algo.propose(8)
        algo.observe(acts, rng.random(8).tolist())


@pytest.mark.parametrize("critic", ["mlp", "fm"])
def test_mirror_step_is_the_closed_form_kl_step_on_counterfactual_values(critic):
    """pi_new ∝ pi_old exp(eta A), A_ij(k) = mean over the replayed rows of Q(a_ij = k, a_-ij) minus its
    expectation under pi_ij, divided per agent by its root-mean-square: checked against brute force."""
    algo = MA2MLPlus(critic=critic, critic_ensemble=2, screening=0)
    algo.setup(SPACES, seed=2)
    _trained(algo)
    _skewed(algo, 3)
    with torch.no_grad():
        algo.target_logits.copy_(algo.logits)
    lay, before = algo.codec, algo.logits.detach().clone()
    probs = torch.softmax(before.masked_fill(~algo._mask, -torch.inf), -1)
    rows = np.array([0, 3, 3, 5, 7, 7, 7, 11])
    algo.mirror_step(rows)
    flat = torch.as_tensor(algo.buffer.actions[rows])
    expect = torch.zeros_like(before)
    with torch.no_grad():
        for d in range(lay.size):
            q_bar = []
            for k in range(lay.nvec[d]):
                alt = flat.clone()
                alt[:, d] = k
                q_bar.append(algo.critic(alt + algo._col_offset).mean(0).mean())  # repeated rows weigh more
            q_bar = torch.stack(q_bar)
            expect[d, : lay.nvec[d]] = q_bar - (probs[d, : lay.nvec[d]] * q_bar).sum()
        for sl in lay.slices:
            vals = torch.cat([expect[d, : lay.nvec[d]] for d in range(sl.start, sl.stop)])
            expect[sl] /= vals.pow(2).mean().sqrt() + 1e-8
    torch.testing.assert_close(algo.logits.detach(), before + algo.config.mirror_step * expect, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(algo.target_logits, algo.logits.detach())  # target_tau = 1: next round's centre


def test_fm_critic_fits_a_pairwise_reward_and_is_exact_on_swaps():
    """A factorisation machine represents per-decision terms plus low-rank pairwise interactions exactly:
    on such a reward it fits (rank targets keep the order), and ``swap``/``replace`` equal the forward pass
    on the modified joint actions."""
    from scipy.stats import spearmanr

    algo = MA2MLPlus(critic="fm", critic_targets="zscore", critic_l2=0.0, critic_ensemble=1, updates_per_round=200)
    algo.setup(SPACES, seed=0)
    lay = algo.codec
    g = np.random.default_rng(1)
    w, v = g.normal(size=lay.n_columns), g.normal(size=(lay.n_columns, 2))
    flat = g.integers(0, lay.nvec, size=(64, lay.size))
    cols = flat + lay.column_offset
    s = v[cols].sum(1)
    r = w[cols].sum(1) + 0.5 * ((s * s).sum(1) - (v[cols] ** 2).sum((1, 2)))
    algo.observe(flat, r.tolist())
    with torch.no_grad():
        q = algo.critic(torch.as_tensor(cols)).mean(0).numpy()
    assert spearmanr(q, r)[0] > 0.95
    c = torch.as_tensor(cols[:5])
    every = torch.arange(lay.n_columns)
    swapped = algo.critic.swap(c, every, algo._dec_of_col)  # [1, 5, n_cols]
    for col in range(lay.n_columns):
        alt = c.clone()
        alt[:, lay.decision_of_column[col]] = col
        torch.testing.assert_close(swapped[:, :, col], algo.critic(alt), rtol=1e-4, atol=1e-4)
    sl = lay.slices[2]
    choices = torch.as_tensor([[0, 1, 0], [1, 1, 1]]) + algo._col_offset[sl]
    replaced = algo.critic.replace(c, sl, choices)  # [1, 5, 2]
    for m in range(2):
        alt = c.clone()
        alt[:, sl] = choices[m]
        torch.testing.assert_close(replaced[:, :, m], algo.critic(alt), rtol=1e-4, atol=1e-4)
