"""Durable, resumable searches: a SQLite trial store and :func:`run_durable`.

One SQLite file per search (WAL mode, ``synchronous=FULL``). Every completed evaluation is committed the
moment it finishes; the algorithm's ``state_dict`` is saved after each ``propose`` and each ``observe``. A
search killed at any moment (``kill -9``, power cut after the last commit, a crash) resumes with the same
command: no completed evaluation is lost or recomputed, the evaluations of a half-finished round that had
completed are reused, and the algorithm continues from its saved state, so the final trials are the same as
those of an uninterrupted :func:`agents.base.run` with the same arguments.

    from agents.store import run_durable, TrialStore
    result = run_durable(MA2ML(), env, budget=200, seed=0, batch_size=8, store_path="search.db")
    # ... killed; the same call again continues where it was.
    trials = TrialStore("search.db").trials()           # read a store (also while the search runs)

Tables: ``meta`` (the search's identity: algorithm, seed, batch size, action spaces), ``trials`` (one row
per completed evaluation), ``rounds`` (each round's proposals) and ``checkpoint`` (the latest algorithm state).
Algorithms without ``state_dict`` are resumed by replaying their rounds (``setup``, then ``propose`` and
``observe`` of each stored round), which is exact when they are deterministic given their seed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import (
    SearchAlgorithm,
    SearchResult,
    Trial,
    _to_lists,
    action_spaces_of,
    evaluate_joint_actions,
)

__all__ = ["StoreMismatchError", "TrialStore", "action_key", "run_durable"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    idx INTEGER PRIMARY KEY, round INTEGER NOT NULL, seed INTEGER NOT NULL, action_key TEXT NOT NULL,
    actions TEXT NOT NULL, score REAL NOT NULL, status TEXT NOT NULL, seconds REAL NOT NULL, info TEXT NOT NULL,
    finished_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS trials_by_action ON trials (action_key);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, start INTEGER NOT NULL, n INTEGER NOT NULL, proposals BLOB NOT NULL,
    proposed_at REAL NOT NULL, observed_at REAL
);
CREATE TABLE IF NOT EXISTS checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1), round INTEGER NOT NULL, phase TEXT NOT NULL, state BLOB,
    saved_at REAL NOT NULL
);
"""


class StoreMismatchError(ValueError):
    """The store belongs to a different search (algorithm, seed, batch size or action spaces)."""


def action_key(actions: Mapping[str, Any]) -> str:
    """A canonical string of a joint action: ``{"agent": [ints], ...}`` in the given agent order."""
    return json.dumps(_to_lists(actions), separators=(",", ":"))


def _json(obj: Any) -> str:
    return json.dumps(obj, default=_json_default, allow_nan=True)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return repr(obj)


@dataclass(frozen=True)
class _Round:
    round: int
    start: int
    n: int
    proposals: list[dict[str, np.ndarray]]
    observed: bool


class TrialStore:
    """The SQLite file of one search.

    Args:
        path: the database file (created with its folder if missing).
        synchronous: SQLite ``synchronous`` pragma: ``"FULL"`` (default: a commit survives a power cut) or
            ``"NORMAL"`` (survives a killed process; faster on slow disks).

    Readers may open the file while a search writes it (WAL mode).
    """

    def __init__(self, path: str | os.PathLike, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(_SCHEMA)
        self._lock_fd: int | None = None

    # -- life cycle ------------------------------------------------------------------------------------------
    def close(self) -> None:
        self.unlock()
        self._db.close()

    def __enter__(self) -> TrialStore:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def lock(self) -> None:
        """Take the exclusive right to run this search (a ``flock`` on ``PATH.lock``, released when the
        process ends, even by ``kill -9``)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no protection against two writers
            return
        fd = os.open(f"{self.path}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RuntimeError(f"the search store {self.path} is in use by another running search") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- meta ------------------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    def set_meta(self, **items: Any) -> None:
        with self._txn() as db:
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                           [(k, _json(v)) for k, v in items.items()])

    # -- trials ----------------------------------------------------------------------------------------------
    def add_trial(self, trial: Trial, seed: int) -> None:
        """Commit one completed evaluation."""
        with self._txn() as db:
            db.execute(
                "INSERT OR REPLACE INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (trial.index, trial.round, int(seed), action_key(trial.actions), _json(trial.actions),
                 float(trial.score), trial.status, float(trial.seconds), _json(trial.info), time.time()),
            )

    def trials(self) -> list[Trial]:
        """Every stored trial, by index."""
        rows = self._db.execute(
            "SELECT idx, round, actions, score, status, seconds, info FROM trials ORDER BY idx").fetchall()
        return [Trial(i, r, json.loads(a), s, st, sec, json.loads(info)) for i, r, a, s, st, sec, info in rows]

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]

    def find(self, key: str, statuses: Sequence[str] = ("ok", "over_budget")) -> Trial | None:
        """The first stored trial of a joint action (by :func:`action_key`) with one of ``statuses``."""
        marks = ",".join("?" * len(statuses))
        row = self._db.execute(
            f"SELECT idx, round, actions, score, status, seconds, info FROM trials WHERE action_key = ? "
            f"AND status IN ({marks}) ORDER BY idx LIMIT 1", (key, *statuses)).fetchone()
        if row is None:
            return None
        i, r, a, s, st, sec, info = row
        return Trial(i, r, json.loads(a), s, st, sec, json.loads(info))

    # -- rounds and checkpoints ------------------------------------------------------------------------------
    def rounds(self) -> list[_Round]:
        rows = self._db.execute(
            "SELECT round, start, n, proposals, observed_at FROM rounds ORDER BY round").fetchall()
        return [_Round(r, s, n, pickle.loads(p), o is not None) for r, s, n, p, o in rows]

    def save_proposals(self, rnd: int, start: int, proposals: Sequence[Mapping[str, Any]], state: bytes | None) -> None:
        """Commit a round's proposals together with the algorithm's state right after ``propose``."""
        with self._txn() as db:
            db.execute("INSERT OR REPLACE INTO rounds VALUES (?, ?, ?, ?, ?, NULL)",
                       (rnd, start, len(proposals), pickle.dumps(list(proposals), protocol=4), time.time()))
            db.execute("INSERT OR REPLACE INTO checkpoint VALUES (1, ?, 'proposed', ?, ?)", (rnd, state, time.time()))

    def save_observed(self, rnd: int, state: bytes | None) -> None:
        """Commit the end of a round: the algorithm's state right after ``observe``."""
        with self._txn() as db:
            db.execute("UPDATE rounds SET observed_at = ? WHERE round = ?", (time.time(), rnd))
            db.execute("INSERT OR REPLACE INTO checkpoint VALUES (1, ?, 'observed', ?, ?)", (rnd, state, time.time()))

    def checkpoint(self) -> tuple[int, str, bytes | None] | None:
        """``(round, phase, pickled state or None)`` of the latest checkpoint."""
        row = self._db.execute("SELECT round, phase, state FROM checkpoint WHERE id = 1").fetchone()
        return None if row is None else (row[0], row[1], row[2])


# ======================================================================================================
# The durable search loop
# ======================================================================================================
def _identity(algorithm: SearchAlgorithm, env: Any, seed: int, batch_size: int) -> dict[str, Any]:
    spaces = action_spaces_of(env)
    return {
        "schema": SCHEMA_VERSION,
        "algorithm": getattr(algorithm, "name", type(algorithm).__name__),
        "algorithm_class": f"{type(algorithm).__module__}.{type(algorithm).__qualname__}",
        "seed": int(seed),
        "batch_size": int(batch_size),
        "action_spaces": {a: np.atleast_1d(getattr(s, "nvec", getattr(s, "n", 0))).astype(int).tolist()
                          for a, s in spaces.items()},
    }


def _state_bytes(algorithm: SearchAlgorithm) -> bytes | None:
    try:
        state = algorithm.state_dict()
    except NotImplementedError:
        return None
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def _same_actions(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> bool:
    return len(a) == len(b) and all(action_key(x) == action_key(y) for x, y in zip(a, b))


def _stream_evaluate(env: Any, actions: Sequence[Mapping[str, Any]], seeds: Sequence[int],
                     done: Callable[[int, tuple[float, str, float, dict[str, Any]]], None]) -> None:
    """Evaluate joint actions, calling ``done(i, (score, status, seconds, info))`` the moment each finishes.

    Our parallel wrappers stream (``on_result``); fast vectorised evaluators (the surrogate) take the batch
    at once; any other evaluator is called one pipeline at a time so that each result is committed on its own.
    """
    base = getattr(env, "unwrapped", env)
    ev = getattr(base, "evaluator", None)
    if ev is not None and hasattr(ev, "on_result") and callable(getattr(base, "evaluate", None)):
        ev.on_result = lambda i, r: done(i, (r.score, r.status, r.seconds, r.to_dict()))
        try:
            base.evaluate(list(actions), list(seeds))
        finally:
            ev.on_result = None
    elif ev is not None and callable(getattr(ev, "evaluate_actions", None)):
        for i, r in enumerate(evaluate_joint_actions(env, actions, seeds)):
            done(i, r)
    else:
        for i, (a, s) in enumerate(zip(actions, seeds)):
            done(i, evaluate_joint_actions(env, [a], [s])[0])


def run_durable(
    algorithm: SearchAlgorithm,
    env: Any,
    budget: int,
    seed: int = 0,
    batch_size: int = 1,
    store_path: str | os.PathLike = "search.db",
    resume: bool = True,
    dedupe: bool = False,
    callback: Callable[[list[Trial]], None] | None = None,
    synchronous: str = "FULL",
) -> SearchResult:
    """:func:`agents.base.run` with every evaluation and the algorithm's state stored in ``store_path``.

    Args:
        algorithm, env, budget, seed, batch_size: as in :func:`agents.base.run` (same evaluation seeds, so
            the same trials for a deterministic evaluator). ``budget`` may be raised when resuming.
        store_path: the SQLite file of this search.
        resume: continue the search stored in ``store_path`` (``False``: refuse an existing, non-empty store).
        dedupe: serve a joint action already evaluated (status ``ok``/``over_budget``) from the store instead
            of evaluating it again (its ``info`` gets ``cached_from``; ``seconds`` is 0). Only correct when the
            reward does not depend on the evaluation seed (no noise), which is why it is off by default.
        callback: called with the new trials after every round; an object with a ``resume(trials)`` method
            is first told about the trials already stored (progress bars, loggers).
        synchronous: see :class:`TrialStore`.

    Returns:
        The :class:`SearchResult` of every stored trial.

    Raises:
        StoreMismatchError: the store holds a different search (algorithm, seed, batch size, spaces).
        FileExistsError: ``resume=False`` and the store already has trials.
        RuntimeError: another process is running this search.
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive integer number of evaluations, got {budget!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    store = TrialStore(store_path, synchronous=synchronous)
    try:
        store.lock()
        return _run_durable(store, algorithm, env, budget, seed, batch_size, resume, dedupe, callback)
    finally:
        store.close()


def _run_durable(store: TrialStore, algorithm: SearchAlgorithm, env: Any, budget: int, seed: int,
                 batch_size: int, resume: bool, dedupe: bool, callback: Any) -> SearchResult:
    ident = _identity(algorithm, env, seed, batch_size)
    meta = store.meta()
    if meta:
        if not resume and (len(store) or store.checkpoint() is not None):
            raise FileExistsError(
                f"{store.path} already holds a search ({len(store)} trials); resume it (resume=True / --resume) "
                "or choose another store path")
        diff = {k: (meta.get(k), v) for k, v in ident.items() if meta.get(k) != v}
        if diff:
            raise StoreMismatchError(
                f"{store.path} holds a different search: " + "; ".join(
                    f"{k}: stored {old!r}, now {new!r}" for k, (old, new) in diff.items())
                + ". Use the same command to resume, or another store path for a new search")
    else:
        store.set_meta(**ident, created=time.time())
    store.set_meta(budget=budget, dedupe=dedupe)

    history = store.trials()
    rounds = store.rounds()
    ck = store.checkpoint()
    pending: _Round | None = None
    if ck is None:
        algorithm.setup(action_spaces_of(env), seed)
        rounds = []  # proposals without a checkpoint cannot exist; be safe
    elif ck[2] is not None:
        algorithm.setup(action_spaces_of(env), seed)  # some algorithms' load_state_dict expects a set-up object
        algorithm.load_state_dict(pickle.loads(ck[2]))
        if ck[1] == "proposed":
            pending = next(r for r in rounds if r.round == ck[0])
    else:  # no state_dict: replay the stored rounds
        algorithm.setup(action_spaces_of(env), seed)
        scores = {t.index: t.score for t in history}
        for r in rounds:
            again = algorithm.propose(r.n)
            if not _same_actions(again, r.proposals):
                warnings.warn(
                    f"{type(algorithm).__name__} proposed other actions when replaying round {r.round}: it is not "
                    "deterministic given its seed, so the resumed search differs from an uninterrupted one; "
                    "implement state_dict() for exact resumption", RuntimeWarning, stacklevel=3)
            if r.observed:
                algorithm.observe(r.proposals, [scores[r.start + i] for i in range(r.n)])
            else:
                pending = r
    if callable(getattr(callback, "resume", None)):
        callback.resume(list(history))

    by_index = {t.index: t for t in history}
    next_round = (rounds[-1].round + 1) if rounds else 0
    next_index = (rounds[-1].start + rounds[-1].n) if rounds else 0
    t0 = time.perf_counter()
    while pending is not None or next_index < budget:
        if pending is None:
            n = min(batch_size, budget - next_index)
            actions = algorithm.propose(n)
            if len(actions) != n:
                raise RuntimeError(f"{type(algorithm).__name__}.propose({n}) returned {len(actions)} actions")
            pending = _Round(next_round, next_index, n, list(actions), False)
            store.save_proposals(pending.round, pending.start, pending.proposals, _state_bytes(algorithm))
        new = _evaluate_round(store, env, pending, seed, dedupe, by_index)
        rnd, start, actions = pending.round, pending.start, pending.proposals
        algorithm.observe(actions, [t.score for t in new])
        store.save_observed(rnd, _state_bytes(algorithm))
        pending = None
        next_round, next_index = rnd + 1, start + len(actions)
        if callback is not None:
            callback(new)

    history = [by_index[i] for i in sorted(by_index)]
    result = SearchResult(getattr(algorithm, "name", type(algorithm).__name__), seed, history,
                          time.perf_counter() - t0)
    base = getattr(env, "unwrapped", env)
    if hasattr(base, "decode") and history:
        result.best_pipeline = base.decode({k: np.array(v) for k, v in result.best.actions.items()})
    return result


def _evaluate_round(store: TrialStore, env: Any, pending: _Round, seed: int, dedupe: bool,
                    by_index: dict[int, Trial]) -> list[Trial]:
    """Evaluate (or reuse, or serve from the store) every trial of one round, committing each as it ends."""
    rnd, start, actions = pending.round, pending.start, pending.proposals
    seeds = [seed * 1_000_003 + start + i for i in range(len(actions))]
    keys = [action_key(a) for a in actions]

    def commit(i: int, res: tuple[float, str, float, dict[str, Any]]) -> None:
        score = res[0] if math.isfinite(res[0]) else 0.0
        t = Trial(start + i, rnd, _to_lists(actions[i]), score, res[1], res[2], res[3])
        store.add_trial(t, seeds[i])
        by_index[t.index] = t

    todo = [i for i in range(len(actions)) if start + i not in by_index]
    first: dict[str, int] = {}
    if dedupe:
        evaluate = []
        for i in todo:
            hit = store.find(keys[i])
            if hit is not None:
                commit(i, _cached(hit))
            elif keys[i] in first:
                continue  # a duplicate inside the round: served from its first copy below
            else:
                first[keys[i]] = i
                evaluate.append(i)
    else:
        evaluate = todo
    if evaluate:
        _stream_evaluate(env, [actions[i] for i in evaluate], [seeds[i] for i in evaluate],
                         lambda j, res: commit(evaluate[j], res))
    for i in todo:  # in-round duplicates (dedupe), now that their first copy is stored
        if start + i not in by_index:
            src = by_index[start + first[keys[i]]]
            commit(i, _cached(src) if src.status in ("ok", "over_budget") else
                   (src.score, src.status, 0.0, {**src.info, "cached_from": src.index}))
    return [by_index[start + i] for i in range(len(actions))]


def _cached(t: Trial) -> tuple[float, str, float, dict[str, Any]]:
    return t.score, t.status, 0.0, {**t.info, "cached_from": t.index}
