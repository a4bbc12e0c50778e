"""Durable searches: the trial store, exact resumption, de-duplication, and search logging."""

from __future__ import annotations

import importlib.util
import json
import pickle

import numpy as np
import pytest

import ma2ml_env
from agents.base import run
from agents.store import StoreError, StoreMismatchError, TrialStore, run_durable
from agents.tracking import SearchLogger
from tests._toys import RepeatSearch, ToyEvaluator, ToyRandomSearch


class Crash(BaseException):
    """Stands in for the process dying (raised out of the search loop; not an ``Exception``, so no backend
    turns it into a failed trial)."""


class CrashingEvaluator(ToyEvaluator):
    """Raises :class:`Crash` once ``after`` evaluations were done (counts every evaluation)."""

    def __init__(self, after: int | None = None, **kw) -> None:
        super().__init__(**kw)
        self.after, self.count = after, 0

    def evaluate_pipeline(self, pipeline, seed):
        if self.after is not None and self.count >= self.after:
            raise Crash(f"crash after {self.count} evaluations")
        self.count += 1
        return super().evaluate_pipeline(pipeline, seed)


def _env(evaluator=None):
    return ma2ml_env.parallel_env(reward=evaluator if evaluator is not None else CrashingEvaluator())


def _ma2ml():
    from agents.ma2ml import MA2ML

    return MA2ML(updates_per_round=2, minibatch_size=16)


def _key(trials):
    return [(t.index, t.round, t.action, t.score, t.status) for t in trials]


@pytest.mark.parametrize("make", [ToyRandomSearch, _ma2ml], ids=["random", "ma2ml"])
def test_uninterrupted_durable_search_equals_run(make, tmp_path):
    ref = run(make(), _env(), budget=14, seed=2, batch_size=4)
    res = run_durable(make(), _env(), budget=14, seed=2, batch_size=4, store_path=tmp_path / "s.db")
    assert _key(res.trials) == _key(ref.trials)
    assert _key(TrialStore(tmp_path / "s.db").trials()) == _key(ref.trials)
    assert res.best_pipeline is not None


@pytest.mark.parametrize("crash_after", [5, 8, 13])  # mid-round, at a round boundary, mid-round later
@pytest.mark.parametrize("make", [ToyRandomSearch, _ma2ml, lambda: ToyRandomSearch(checkpointing=False)],
                         ids=["random", "ma2ml", "replay"])
def test_crashed_search_resumes_exactly_and_reuses_completed_evaluations(make, crash_after, tmp_path):
    path = tmp_path / "s.db"
    ref = run(make(), _env(), budget=18, seed=4, batch_size=4)
    with pytest.raises(Crash):
        run_durable(make(), _env(CrashingEvaluator(crash_after)), budget=18, seed=4, batch_size=4, store_path=path)
    assert len(TrialStore(path)) == crash_after  # each evaluation was committed as it finished
    again = CrashingEvaluator()
    res = run_durable(make(), _env(again), budget=18, seed=4, batch_size=4, store_path=path)
    assert again.count == 18 - crash_after  # nothing recomputed
    assert _key(res.trials) == _key(ref.trials)


def test_crash_after_observe_before_the_next_round(tmp_path):
    path = tmp_path / "s.db"
    calls = []

    def callback(new):
        calls.append(len(new))
        if len(calls) == 2:
            raise Crash("after round 2")

    with pytest.raises(Crash):
        run_durable(ToyRandomSearch(), _env(), budget=12, seed=0, batch_size=4, store_path=path, callback=callback)
    ev = CrashingEvaluator()
    res = run_durable(ToyRandomSearch(), _env(ev), budget=12, seed=0, batch_size=4, store_path=path)
    assert ev.count == 4
    assert _key(res.trials) == _key(run(ToyRandomSearch(), _env(), budget=12, seed=0, batch_size=4).trials)


def test_budget_can_be_raised_and_a_finished_search_is_not_rerun(tmp_path):
    path = tmp_path / "s.db"
    run_durable(ToyRandomSearch(), _env(), budget=8, seed=1, batch_size=4, store_path=path)
    ev = CrashingEvaluator()
    res = run_durable(ToyRandomSearch(), _env(ev), budget=8, seed=1, batch_size=4, store_path=path)
    assert ev.count == 0 and len(res.trials) == 8
    res = run_durable(ToyRandomSearch(), _env(ev), budget=12, seed=1, batch_size=4, store_path=path)
    assert ev.count == 4 and len(res.trials) == 12
    ref = run(ToyRandomSearch(), _env(), budget=12, seed=1, batch_size=4)
    assert _key(res.trials) == _key(ref.trials)


def test_store_refuses_another_search_and_fresh_runs_over_results(tmp_path):
    path = tmp_path / "s.db"
    run_durable(ToyRandomSearch(), _env(), budget=4, seed=1, batch_size=2, store_path=path)
    with pytest.raises(StoreMismatchError, match="seed: stored 1, now 2"):
        run_durable(ToyRandomSearch(), _env(), budget=4, seed=2, batch_size=2, store_path=path)
    with pytest.raises(StoreMismatchError, match="batch_size"):
        run_durable(ToyRandomSearch(), _env(), budget=4, seed=1, batch_size=4, store_path=path)
    with pytest.raises(StoreMismatchError, match="algorithm"):
        run_durable(RepeatSearch(), _env(), budget=4, seed=1, batch_size=2, store_path=path)
    with pytest.raises(FileExistsError, match="already holds a search"):
        run_durable(ToyRandomSearch(), _env(), budget=4, seed=1, batch_size=2, store_path=path, resume=False)


def test_one_running_search_per_store(tmp_path):
    a, b = TrialStore(tmp_path / "s.db"), TrialStore(tmp_path / "s.db")
    a.lock()
    with pytest.raises(RuntimeError, match="in use by another running search"):
        b.lock()
    a.close()
    b.lock()
    b.close()


def test_a_store_is_free_again_as_soon_as_run_returns_or_raises(tmp_path):
    """``run`` releases the lock it took when it ends, so the same process (or another) can open the store
    for the next search at once, without waiting for garbage collection."""
    path = tmp_path / "s.db"
    first = TrialStore(path)
    run(ToyRandomSearch(), _env(), budget=4, seed=0, batch_size=2, store=first)
    again = TrialStore(path)
    again.lock()  # no "in use by another running search"
    again.close()
    assert len(first.trials()) == 4  # the first object still reads the store
    with pytest.raises(Crash):
        run(ToyRandomSearch(), _env(CrashingEvaluator(1)), budget=8, seed=0, batch_size=2, store=TrialStore(path))
    res = run(ToyRandomSearch(), _env(), budget=8, seed=0, batch_size=2, store=TrialStore(path))
    assert len(res.trials) == 8
    with pytest.raises(StoreMismatchError):
        run(ToyRandomSearch(), _env(), budget=8, seed=5, batch_size=2, store=TrialStore(path))
    TrialStore(path).lock()  # a refused resume leaves it free too


def test_a_lock_taken_before_run_is_kept_after_it(tmp_path):
    """A caller that locked the store itself (the CLI locks a new store before writing its files) keeps
    the lock: ``run`` releases only what it took."""
    path = tmp_path / "s.db"
    store = TrialStore(path)
    store.lock()
    run(ToyRandomSearch(), _env(), budget=2, seed=0, batch_size=2, store=store)
    with pytest.raises(RuntimeError, match="in use by another running search"):
        TrialStore(path).lock()
    store.close()
    TrialStore(path).lock()


def test_trials_and_proposals_are_stored_as_flat_rows(tmp_path):
    import sqlite3

    path = tmp_path / "s.db"
    res = run_durable(ToyRandomSearch(), _env(), budget=4, seed=0, batch_size=4, store_path=path)
    with sqlite3.connect(path) as db:
        actions = [json.loads(a) for (a,) in db.execute("SELECT action FROM trials ORDER BY idx")]
        (proposals,) = db.execute("SELECT proposals FROM rounds").fetchone()
    assert actions == [list(t.action) for t in res.trials] == json.loads(proposals)
    assert all(isinstance(v, int) for a in actions for v in a)
    with TrialStore(path, create=False) as store:
        (rnd,) = store.rounds()
        assert rnd.proposals.dtype == np.int64 and rnd.proposals.shape == (4, len(actions[0]))
        assert not rnd.proposals.flags.writeable
        assert [t.to_dict()["action"] for t in store.trials()] == actions


def test_a_trial_round_trips_as_a_flat_row_and_an_old_record_is_named():
    from agents.base import Trial
    from ma2ml_env import EvalResult

    t = Trial(3, 1, (0, 2, 1), EvalResult(0.5, info={"pid": 7}), seed=9, key="a=0,2;b=1")
    d = json.loads(json.dumps(t.to_dict()))
    assert d["action"] == [0, 2, 1] and "actions" not in d
    back = Trial.from_dict({**d, "key": t.key})
    assert (back.index, back.round, back.action, back.seed, back.key) == (3, 1, (0, 2, 1), 9, t.key)
    assert json.dumps(back.to_dict()) == json.dumps(t.to_dict())  # NaN fields compare equal as text
    old = {k: v for k, v in d.items() if k != "action"} | {"actions": {"a": [0, 2], "b": [1]}}
    with pytest.raises(ValueError, match="per-agent 'actions': written by an older ma2ml"):
        Trial.from_dict(old)


def test_store_is_wal_and_readable_while_written(tmp_path):
    path = tmp_path / "s.db"
    seen = []
    reader = TrialStore(path)

    def callback(new):
        seen.append(len(reader))

    run_durable(ToyRandomSearch(), _env(), budget=6, seed=0, batch_size=2, store_path=path, callback=callback)
    assert seen == [2, 4, 6]
    assert reader._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    state = pickle.loads(reader.checkpoint()[2])
    assert state["observed"] == 6 and reader.checkpoint()[1] == "observed"
    reader.close()


def test_dedupe_serves_identical_pipelines_from_the_store(tmp_path):
    ev = CrashingEvaluator(use_seed=False)
    res = run_durable(RepeatSearch(), _env(ev), budget=12, seed=0, batch_size=4, store_path=tmp_path / "s.db",
                      dedupe=True)
    distinct = {t.key for t in res.trials}
    assert len(distinct) == 2 and ev.count == 2  # two distinct pipelines, each evaluated once
    cached = [t for t in res.trials if "cached_from" in t.info]
    assert len(cached) == 10 and all(t.seconds == 0.0 for t in cached)
    # same scores as evaluating every one of them
    ref = run(RepeatSearch(), _env(ToyEvaluator(use_seed=False)), budget=12, seed=0, batch_size=4)
    assert [t.score for t in res.trials] == [t.score for t in ref.trials]


def test_durable_search_streams_results_from_a_local_pool(tmp_path):
    env = ma2ml_env.parallel_env(reward=ToyEvaluator(), backend="local", workers=2)
    try:
        res = run_durable(ToyRandomSearch(), env, budget=8, seed=3, batch_size=4, store_path=tmp_path / "s.db")
    finally:
        env.close()
    assert _key(res.trials) == _key(run(ToyRandomSearch(), _env(), budget=8, seed=3, batch_size=4).trials)


# -- logging -------------------------------------------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_search_logger_writes_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    algo = _ma2ml()
    with SearchLogger(algo, budget=12, tensorboard=tmp_path / "tb", progress=True) as log:
        run(algo, _env(), budget=12, seed=0, batch_size=4, callback=log)
        assert log.done == 12
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"search/score", "search/best_so_far", "round/seconds", "round/trials_per_s", "status/ok"} <= tags
    assert {f"policy/entropy/{a}" for a in ("aug", "nas", "hpo")} <= tags
    best = [e.value for e in acc.Scalars("search/best_so_far")]
    assert len(best) == 12 and best == sorted(best)


def test_search_logger_reads_algorithm_metrics_and_resumes(tmp_path):
    algo = ToyRandomSearch()
    log = SearchLogger(algo, budget=8, progress=False)
    path = tmp_path / "s.db"
    run_durable(algo, _env(), budget=4, seed=0, batch_size=4, store_path=path, callback=log)
    scalars = log.algorithm_scalars()
    assert "algo/mean_score" in scalars and "algo/per_agent/nas" in scalars
    log2 = SearchLogger(ToyRandomSearch(), budget=8, progress=False)
    run_durable(ToyRandomSearch(), _env(), budget=8, seed=0, batch_size=4, store_path=path, callback=log2)
    assert log2.done == 8
    log.close()
    log2.close()


# -- what the store records and refuses ----------------------------------------------------------------------
def test_store_records_the_whole_configuration_and_the_results_unchanged(tmp_path):
    path = tmp_path / "s.db"
    res = run_durable(_ma2ml(), _env(), budget=4, seed=0, batch_size=4, store_path=path)
    with TrialStore(path, create=False) as store:
        cfg = store.config()
        assert cfg["algorithm"] == "ma2ml-paper" and cfg["algorithm_config"]["updates_per_round"] == 2
        assert cfg["seed"] == 0 and cfg["batch_size"] == 4 and set(cfg["action_spaces"]) == {"aug", "nas", "hpo"}
        assert "env" in cfg
        stored = store.trials()
    def exact(t):
        return json.dumps(t.result.to_dict())  # NaN fields compare equal as text

    assert [exact(t) for t in stored] == [exact(t) for t in res.trials]  # EvalResult round-trips exactly
    assert [t.seed for t in stored] == [0, 1, 2, 3]


def test_resume_with_another_algorithm_config_is_refused_naming_the_field(tmp_path):
    from agents.ma2ml import MA2ML

    path = tmp_path / "s.db"
    run_durable(MA2ML(updates_per_round=2), _env(), budget=4, seed=0, batch_size=4, store_path=path)
    with pytest.raises(StoreMismatchError, match=r"algorithm_config.updates_per_round: stored 2, now 3"):
        run_durable(MA2ML(updates_per_round=3), _env(), budget=8, seed=0, batch_size=4, store_path=path)


@pytest.mark.parametrize("content", [b"garbage" * 50, b""])
def test_unreadable_store_is_a_clear_error_and_left_untouched(tmp_path, content):
    path = tmp_path / "s.db"
    if content:
        path.write_bytes(content)
        with pytest.raises(StoreError, match="not a readable search store"):
            TrialStore(path)
        assert path.read_bytes() == content
    import sqlite3

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not a ma2ml search store"):
        TrialStore(other)
    with pytest.raises(FileNotFoundError, match="no search store"):
        TrialStore(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


def test_an_empty_file_becomes_a_store_and_another_schema_is_refused(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    res = run_durable(ToyRandomSearch(), _env(), budget=4, seed=0, batch_size=2, store_path=empty)
    assert len(TrialStore(empty, create=False).trials()) == len(res.trials) == 4
    old = tmp_path / "old.db"
    with TrialStore(old) as store:
        store.set_meta(schema=2)  # per-agent dicts and pickled proposals: before the flat rows
    with pytest.raises(StoreError) as err:
        TrialStore(old)
    msg = str(err.value)
    assert "\n" not in msg
    assert "search store of schema 2, which this version of ma2ml cannot read (it reads schema 3)" in msg
    assert "start the search again in another store" in msg
