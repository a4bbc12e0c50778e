"""The multi-fidelity peers through their own libraries (agents/peers.py) on a recorded LCBench task."""

from __future__ import annotations

import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import ma2ml_env
from agents.base import run
from agents.peers import PEERS, PeerChooses, make_peer
from agents.random_search import RandomSearch
from agents.store import TrialStore
from tests.conftest import LCBENCH

FOLDER = LCBENCH  # the full tables beside the checkout, else the shipped extract
TASK = "7593"
LIBRARY = {"optuna-hyperband": "optuna", "optuna-sh": "optuna", "syne-asha": "syne_tune",
           "syne-bohb": "syne_tune", "smac-mf": "smac"}


def _env():
    if not (FOLDER / f"lcbench_{TASK}.npz").exists():
        pytest.skip(f"the LCBench learning curves are not in {FOLDER} (see issue 21; .ci/run provides them)")
    return ma2ml_env.learning_curve_env(TASK, FOLDER)


def _needs(name: str) -> None:
    pytest.importorskip(LIBRARY[name], reason=f'{name} needs pip install "ma2ml[{PEERS[name][0].extra}]"')


def _search(name: str, budget: float, seed: int = 0, store=None):
    peer = make_peer(name, seed=seed)
    return run(peer.algorithm, _env(), budget=budget, seed=seed, scheduler=peer, workers=4, store=store)


def _record(result) -> list[tuple]:
    return [(t.index, t.action, t.seed, t.level, t.start, t.clock, float(t.result.score)) for t in result.trials]


@pytest.fixture(scope="module")
def searches():
    """Each peer's search, run twice in this process (budget: 8 full trainings on 4 workers)."""
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            _needs(name)
            outer = np.random.get_state()
            first = _search(name, 8)
            leaked = not _same_rng(outer, np.random.get_state())
            cache[name] = (first, _search(name, 8), leaked)
        return cache[name]
    return get


def _same_rng(a, b) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


@pytest.mark.parametrize("name", sorted(PEERS))
def test_peer_searches_stops_children_early_and_continues_the_others(name, searches):
    result, _, _ = searches(name)
    env = _env()
    top = env.unwrapped.evaluator.fidelity.top
    used = sum((env.unwrapped.evaluator.fidelity.levels[t.level]
                - (env.unwrapped.evaluator.fidelity.levels[t.start] if t.start >= 0 else 0)) for t in result.trials)
    assert used / env.unwrapped.evaluator.fidelity.levels[-1] >= 8  # ran the whole budget
    assert len({t.level for t in result.trials}) >= 3
    children = defaultdict(list)  # a child is its (joint action, evaluation seed)
    for t in sorted(result.trials, key=lambda t: t.clock):
        children[t.action, t.seed].append(t)
    for jobs in children.values():  # every job continues the child from the level it had reached
        assert [j.start for j in jobs] == [-1] + [j.level for j in jobs[:-1]]
    highest = [jobs[-1].level for jobs in children.values()]
    assert any(h == top for h in highest), "no child was trained to the end"
    # stopped children early (most of them on the full tables; on the 288-row extract the pruners keep more)
    assert sum(h < top for h in highest) > (len(highest) / 2 if len(highest) > 20 else 0), "no early stopping"
    assert any(len(jobs) > 1 for jobs in children.values()), "no child was continued"
    assert result.algorithm == name


def test_peers_report_at_their_libraries_rungs_mapped_to_the_nearest_level(searches):
    """Optuna and syne-tune rungs 1, 3, 9, 27 epochs (and 52) are the levels 1, 3, 8, 24, 52; SMAC's Hyperband
    budgets 52 / 3 ** k are 2, 6, 17, 52."""
    levels = _env().unwrapped.evaluator.fidelity.levels
    expected = {"optuna-hyperband": {1, 3, 8, 24, 52}, "optuna-sh": {1, 3, 8, 24, 52},
                "syne-asha": {1, 3, 8, 24, 52}, "syne-bohb": {1, 3, 8, 24, 52}, "smac-mf": {2, 6, 17, 52}}
    ran = 0
    for name, rungs in expected.items():
        if _available(name):
            assert {levels[t.level] for t in searches(name)[0].trials} == rungs, name
            ran += 1
    if not ran:
        pytest.skip("none of the peers' libraries is installed")


def _available(name: str) -> bool:
    try:
        __import__(LIBRARY[name])
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(PEERS))
def test_peer_is_deterministic_and_leaves_the_global_rng_alone(name, searches):
    first, second, leaked = searches(name)
    assert _record(first) == _record(second)
    assert not leaked, "the peer changed numpy's global RNG"
    other = _search(name, 2, seed=1)
    assert [t.action for t in other.trials] != [t.action for t in first.trials[:len(other.trials)]]


@pytest.mark.parametrize("name", sorted(PEERS))
def test_peer_resumes_by_replay(name, tmp_path, monkeypatch):
    """A search stored with a small budget and resumed with a larger one has the trials of a search run with
    the larger budget from the start; nothing is written outside the store's folder and the temp folder."""
    _needs(name)
    monkeypatch.chdir(tmp_path)  # a library that writes into the working folder would show here
    temp_before = sorted(Path(tempfile.gettempdir()).iterdir())
    path = tmp_path / "store" / "search.db"
    with TrialStore(path) as store:
        _search(name, 2, store=store)
    with TrialStore(path) as store:
        resumed = _search(name, 4, store=store)
        assert store.config()["algorithm"] == name
        assert store.config()["scheduler"]["name"] == name
    assert _record(resumed) == _record(_search(name, 4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    assert sorted(Path(tempfile.gettempdir()).iterdir()) == temp_before


def test_make_peer_and_misuse_say_what_is_wrong():
    with pytest.raises(ValueError, match="unknown peer 'optuna'; use one of"):
        make_peer("optuna")
    with pytest.raises(ValueError, match="seed must be an integer"):
        make_peer("syne-asha", seed=0.5)
    peer = make_peer("optuna-sh", seed=3)
    assert isinstance(peer.algorithm, PeerChooses) and peer.algorithm.name == "optuna-sh"
    with pytest.raises(RuntimeError, match=r"run\(peer.algorithm, env, budget, scheduler=peer\)"):
        peer.algorithm.propose(1)
    env = _env()
    with pytest.raises(ValueError, match="chooses its own children: run it with its own placeholder"):
        run(RandomSearch(), env, budget=1, scheduler=peer, workers=2)


@pytest.mark.parametrize("name", ["syne-asha", "smac-mf"])
def test_missing_library_names_the_install_command(name, monkeypatch):
    peer = make_peer(name)
    monkeypatch.setitem(sys.modules, PEERS[name][0].package, None)
    with pytest.raises(ImportError, match=rf'pip install "ma2ml\[{PEERS[name][0].extra}\]"'):
        run(peer.algorithm, _env(), budget=1, scheduler=peer)
