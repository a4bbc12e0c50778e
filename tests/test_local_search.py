"""Local search (White et al. 2021): config errors, neighbourhoods, moves, restarts, batches without
repeats, seeds, exact resume, and that it beats random search on a recorded NAS-Bench-201 table."""

from __future__ import annotations

import pickle

import gymnasium
import numpy as np
import pytest

import ma2ml_env
from agents.base import action_spaces_of, run
from agents.local_search import LocalSearch, LocalSearchConfig
from agents.registry import algorithm_spec, make_algorithm
from tests._landscapes import SMALL, assert_rejected, drive, hill_and_needle, rugged


def hamming(x, y) -> int:
    return sum(a != b for a, b in zip(x, y))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_initial": 0}, "n_initial must be a positive integer"),
        ({"n_initial": 2.5}, r"LocalSearchConfig.n_initial must be an integer, got 2.5 \(float\)"),
        ({"n_initial": True}, r"LocalSearchConfig.n_initial must be an integer, got True \(bool\)"),
        ({"best_improvement": "yes"}, "best_improvement must be a bool \\(True or False\\)"),
        ({"best_improvement": 1}, "best_improvement must be a bool \\(True or False\\)"),
    ],
)
def test_bad_configs_raise_clear_errors(kwargs, match):
    assert_rejected(LocalSearchConfig, "local-search", kwargs, match)


def test_unknown_options_and_the_registry_entry():
    with pytest.raises(ValueError, match=r"unknown LocalSearchConfig field\(s\) \['bogus'\]"):
        LocalSearch(bogus=1)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bogus'\].*best_improvement.*n_initial"):
        make_algorithm("local-search", bogus=1)
    with pytest.raises(TypeError, match="config must be an instance of LocalSearchConfig"):
        LocalSearch(config={"n_initial": 3})
    algo = make_algorithm("local-search", n_initial=3, best_improvement=True)
    assert isinstance(algo, LocalSearch) and algo.name == "local-search"
    assert algo.config == LocalSearchConfig(n_initial=3, best_improvement=True)
    assert "White et al. 2021" in algorithm_spec("local-search").summary


def test_initial_configs_then_neighbours_of_the_best():
    algo = LocalSearch(n_initial=5)
    seen = drive(algo, SMALL, hill_and_needle, budget=5, batch=5)
    assert len({x for x, _ in seen}) == 5  # the initial random configurations are distinct
    best = max(seen, key=lambda p: p[1])[0]
    assert algo.incumbent == best
    later = drive(algo, SMALL, lambda x: 0.0, budget=6, batch=3, setup=False)  # nothing beats it
    assert all(hamming(x, best) == 1 for x, _ in later)
    assert len({x for x, _ in later} | {x for x, _ in seen}) == 11  # no repeats
    assert algo.incumbent == best


def test_first_improvement_moves_at_once_best_improvement_after_the_neighbourhood():
    for best_improvement in (False, True):
        algo = LocalSearch(n_initial=1, best_improvement=best_improvement)
        algo.setup(SMALL, 0)
        algo.observe(algo.propose(1), [0.5])
        x0 = algo.incumbent
        nbrs = []
        for k in range(9):  # 3 decisions x 3 other values
            a = algo.propose(1)
            x = tuple(a[0].tolist())
            assert hamming(x, x0) == 1 and x not in nbrs
            nbrs.append(x)
            # the third and the sixth neighbour beat the incumbent, the sixth by more
            algo.observe(a, [{2: 0.6, 5: 0.7}.get(k, 0.4)])
            if not best_improvement and k == 2:
                break
            assert algo.incumbent == (nbrs[5] if k == 8 else x0)
        assert algo.incumbent == (nbrs[5] if best_improvement else nbrs[2])
        assert algo.moves == 1 and algo.restarts == 0


def test_restarts_at_a_local_optimum():
    """(0, 0, 0) is a strict local optimum of the landscape: once its nine neighbours are evaluated the
    search restarts from a fresh random configuration, whose neighbours come next."""
    reached = 0
    for seed in range(5):
        trace = []
        algo = LocalSearch(n_initial=1)
        drive(algo, SMALL, hill_and_needle, budget=40, batch=1, seed=seed,
              after=lambda a, t=trace: t.append((a.incumbent, a.restarts, set(a.evaluated))))
        first = next((i for i, (_, r, _) in enumerate(trace) if r == 1), None)
        assert first is not None, seed  # the budget always reaches a local optimum
        before, (inc, _, evaluated) = trace[first - 1][0], trace[first]
        if before != (0, 0, 0):  # the first climb passed the needle and ended there
            assert before == (3, 3, 3)
            continue
        reached += 1
        # it restarts as soon as the last of the nine neighbours is evaluated, not before
        assert [sum(hamming(x, (0, 0, 0)) == 1 for x in trace[i][2]) for i in (first - 1, first)] == [8, 9]
        assert inc != (0, 0, 0) and inc not in evaluated  # a fresh configuration...
        assert trace[first + 1][2] - evaluated == {inc}  # ...evaluated next
        (nxt,) = trace[first + 2][2] - trace[first + 1][2]
        assert hamming(nxt, inc) == 1 or trace[first + 1][0] != inc  # then its neighbours (or it moved)
    assert reached >= 3


@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("best_improvement", [False, True])
def test_no_repeats_until_the_space_is_used_up(batch, best_improvement):
    """64 configurations: the first 64 proposals are all of them, whatever the batch size (batches are
    filled with the next restart point and its neighbours); the 65th repeats one."""
    algo = LocalSearch(n_initial=4, best_improvement=best_improvement)
    seen = drive(algo, SMALL, hill_and_needle, budget=64, batch=batch, seed=1)
    assert len({x for x, _ in seen}) == 64
    more = drive(algo, SMALL, hill_and_needle, budget=8, batch=8, setup=False)
    assert len(more) == 8  # still n proposals when nothing is new


def test_a_batch_larger_than_the_neighbourhood_is_filled_without_repeats():
    spaces = {"x": gymnasium.spaces.Discrete(3), "y": gymnasium.spaces.Discrete(3)}  # 4 neighbours each
    algo = LocalSearch(n_initial=1)
    first = drive(algo, spaces, lambda x: 1.0 if x == (2, 2) else 0.0, budget=1, batch=1)
    batch = drive(algo, spaces, lambda x: 0.0, budget=8, batch=8, setup=False)
    xs = [x for x, _ in batch]
    assert len(set(xs) | {first[0][0]}) == 9
    assert all(hamming(x, first[0][0]) == 1 for x in xs[:4])  # the incumbent's neighbours first,
    # then the next restart point and its two neighbours that are not the incumbent's, then the one left
    assert all(hamming(x, xs[4]) == 1 for x in xs[5:7]) and hamming(xs[4], first[0][0]) == 2
    # no neighbour was better: a local optimum; the search goes on from that restart point
    assert algo.restarts == 1 and algo.incumbent == xs[4]


def test_space_with_single_choice_decisions():
    spaces = {"a": gymnasium.spaces.MultiDiscrete([1, 5, 1]), "b": gymnasium.spaces.Discrete(1, start=2)}
    algo = LocalSearch(n_initial=2)
    seen = drive(algo, spaces, lambda x: float(x[1]), budget=5, batch=2)
    assert sorted(x for x, _ in seen) == [(0, v, 0, 0) for v in range(5)]
    assert algo.incumbent == (0, 4, 0, 0)


def _nb201(seed_mean: bool = False):
    return ma2ml_env.benchmark_env("nb201/cifar10", seed_mean=seed_mean)


def test_same_seed_same_trials_and_no_repeats_on_nas_bench_201():
    env = _nb201()

    def trials(seed):
        res = run(LocalSearch(), env, budget=120, seed=seed, batch_size=8)
        return [(t.action, t.score) for t in res.trials]

    first = trials(3)
    np.random.seed(123)  # the global RNG must not matter
    assert trials(3) == first
    assert trials(4) != first
    keys = [action for action, _ in first]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("best_improvement", [False, True])
def test_state_dict_resumes_exactly(best_improvement):
    """Five rounds, checkpoint, continue; a fresh instance loaded from the checkpoint proposes the same;
    also from a checkpoint taken between propose and observe."""
    spaces = action_spaces_of(_nb201())

    def rounds(algo, k):
        return [x for x, _ in drive(algo, spaces, rugged, budget=8 * k, batch=8, setup=False)]

    def fresh(state):
        algo = LocalSearch(n_initial=4, best_improvement=best_improvement)
        algo.setup(spaces, 999)  # another seed: everything must come from the state
        algo.load_state_dict(pickle.loads(pickle.dumps(state)))
        return algo

    algo = LocalSearch(n_initial=4, best_improvement=best_improvement)
    algo.setup(spaces, 7)
    rounds(algo, 5)
    state = algo.state_dict()
    expected = rounds(algo, 10)
    assert algo.moves > state["moves"] and algo.restarts > state["restarts"]  # it moved and restarted since
    assert fresh(state).state_dict() == state
    assert rounds(fresh(state), 10) == expected

    acts = algo.propose(8)
    state = algo.state_dict()
    scores = [rugged(tuple(a)) for a in acts.tolist()]
    algo.observe(acts, scores)
    expected = rounds(algo, 3)
    resumed = fresh(state)
    resumed.observe(acts, scores)
    assert rounds(resumed, 3) == expected


def test_observing_actions_it_did_not_propose():
    """Warm starts count as evaluated (a non-finite score as -inf) and are never proposed again."""
    algo = LocalSearch(n_initial=1)
    algo.setup(SMALL, 0)
    warm = np.array([[0, 0, v] for v in range(4)], dtype=np.int64)
    algo.observe(warm, np.array([0.1, 0.2, 0.3, float("nan")]))
    assert algo.evaluated[(0, 0, 3)] == -np.inf
    seen = drive(algo, SMALL, lambda x: 0.0, budget=60, batch=6, setup=False)
    assert not {x for x, _ in seen} & {(0, 0, v) for v in range(4)}


def test_beats_random_search_on_nas_bench_201():
    """Mean regret (seed-mean accuracy) of the best of 100 evaluations over seeds 0-4: local search
    0.0012, random 0.0054 when measured (seeds 5-9: 0.0019 / 0.0082; 10-14: 0.0000 / 0.0048); the test
    asks for less than half of random's."""
    env = _nb201(seed_mean=True)
    opt, _ = env.unwrapped.evaluator.optimum()

    def regret(make):
        return np.mean([opt - run(make(), env, budget=100, seed=s, batch_size=8).best_score for s in range(5)])

    ls, rs = regret(LocalSearch), regret(lambda: make_algorithm("random"))
    assert ls < 0.5 * rs, (ls, rs)
