"""Durable, resumable searches: the SQLite trial store that :func:`agents.base.run` records into.

One SQLite file per search (WAL mode, ``synchronous=FULL``). Every completed evaluation is committed the
moment it finishes; the algorithm's ``state_dict`` is saved after each ``propose`` and each ``observe``. A
search killed at any moment (``kill -9``, power cut after the last commit, a crash) resumes with the same
command: no completed evaluation is lost or recomputed, the evaluations of a half-finished round that had
completed are reused, and the algorithm continues from its saved state, so the final trials are the same as
those of an uninterrupted :func:`agents.base.run` with the same arguments. The loop is
:func:`agents.base.run` itself (``store=TrialStore(...)``); :func:`run_durable` opens the store for it.

    from agents.store import run_durable, TrialStore
    result = run_durable(MA2ML(), env, budget=200, seed=0, batch_size=8, store_path="search.db")
    # ... killed; the same call again continues where it was.
    trials = TrialStore("search.db").trials()           # read a store (also while the search runs)

Tables: ``meta`` (the search's whole configuration, :func:`agents.base.search_config`: algorithm and its
config, seed, batch size, action spaces, modules, reward backend and its settings; a resume under any other
configuration is refused, naming the difference), ``trials`` (one row per completed evaluation, with the
evaluator's result unchanged and its joint action as a flat row: a JSON list of 0-based choice indices
in the codec's layout), ``rounds`` (each round's proposals: a JSON list of such rows) and ``checkpoint``
(the latest algorithm state). Only one process may run a search (``flock`` on ``PATH.lock``, taken when
the search starts and released when :func:`agents.base.run` returns or raises); readers may open it any
time.
Algorithms without ``state_dict`` are resumed by replaying their rounds (``setup``, then ``propose`` and
``observe`` of each stored round), which is exact when they are deterministic given their seed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import (
    Round,
    SearchAlgorithm,
    SearchResult,
    StoreMismatchError,
    Trial,
    check_run_arguments,
    config_differences,
    run,
)
from agents.jsonio import json_dumps
from ma2ml_env.rewards.base import SUCCESS_STATUSES

__all__ = ["StoreError", "StoreMismatchError", "TrialStore", "run_durable"]

#: 3: joint actions stored as flat rows (``trials.action``: a JSON list; ``rounds.proposals``: a JSON
#: list of rows); 2 stored per-agent dicts and pickled proposals.
SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    idx INTEGER PRIMARY KEY, round INTEGER NOT NULL, seed INTEGER NOT NULL, action_key TEXT NOT NULL,
    action TEXT NOT NULL, score REAL NOT NULL, status TEXT NOT NULL, result TEXT NOT NULL,
    finished_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS trials_by_action ON trials (action_key);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, start INTEGER NOT NULL, n INTEGER NOT NULL, proposals TEXT NOT NULL,
    proposed_at REAL NOT NULL, observed_at REAL
);
CREATE TABLE IF NOT EXISTS checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1), round INTEGER NOT NULL, phase TEXT NOT NULL, state BLOB,
    saved_at REAL NOT NULL
);
"""
_TABLES = ("meta", "trials", "rounds", "checkpoint")


class StoreError(ValueError):
    """A file that is not a readable search store (corrupted, another program's file, a newer schema)."""


class TrialStore:
    """The SQLite file of one search, a recorder of :func:`agents.base.run`.

    Args:
        path: the database file.
        synchronous: SQLite ``synchronous`` pragma: ``"FULL"`` (default: a commit survives a power cut) or
            ``"NORMAL"`` (survives a killed process; faster on slow disks).
        create: create the file (and its folder) when missing; ``False`` raises :class:`FileNotFoundError`.

    Raises:
        StoreError: the file exists but is not a search store this version can read (one line, no
            traceback from sqlite; nothing in the file is changed).

    Readers may open the file while a search writes it (WAL mode).
    """

    durable = True

    def __init__(self, path: str | os.PathLike, synchronous: str = "FULL", create: bool = True) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._began_lock = False  # begin() took the lock, so end() releases it
        exists = self.path.exists()
        if not exists and not create:
            raise FileNotFoundError(f"there is no search store at {self.path}")
        if exists and not self.path.is_file():
            raise StoreError(f"{self.path} is not a file, so it cannot be a search store")
        if exists:
            exists = self._check_readable()  # an empty database file is set up like a new one
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            if not exists:
                self._db.executescript(_SCHEMA)
                self.set_meta(schema=SCHEMA_VERSION)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"{self.path} is not a readable search store ({exc})") from None

    def _check_readable(self) -> bool:
        """Read-only checks of an existing file: an SQLite database with our tables and schema version.
        Returns whether it holds a store (``False``: an empty database, set up as a new one)."""
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=60.0)
            try:
                names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone() \
                    if "meta" in names else None
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a readable search store ({exc}); it is left untouched: move "
                             "it away or choose another store path") from None
        if not names:
            return False
        if not set(_TABLES) <= names or row is None:
            raise StoreError(f"{self.path} is an SQLite database but not a ma2ml search store (tables "
                             f"{sorted(names)}); it is left untouched: choose another store path")
        if json.loads(row[0]) != SCHEMA_VERSION:
            raise StoreError(f"{self.path} is a search store of schema {json.loads(row[0])}, which this version "
                             f"of ma2ml cannot read (it reads schema {SCHEMA_VERSION}); it is left untouched: "
                             "finish or report it with the ma2ml version that wrote it, or start the search "
                             "again in another store")
        return True

    # -- life cycle ------------------------------------------------------------------------------------------
    def close(self) -> None:
        self.unlock()
        self._db.close()

    def __enter__(self) -> TrialStore:
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
        process ends, even by ``kill -9``). Idempotent.

        Raises:
            RuntimeError: another process is running this search.
        """
        if self._lock_fd is not None:
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no protection against two writers
            return
        fd = os.open(f"{self.path}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RuntimeError(f"the search store {self.path} is in use by another running search; wait for it "
                               "to finish or stop it first") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def clear(self) -> None:
        """Delete every trial, round and checkpoint and the configuration (start the search again)."""
        self.lock()
        with self._txn() as db:
            for t in _TABLES:
                db.execute(f"DELETE FROM {t}")
            db.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (json_dumps(SCHEMA_VERSION),))

    # -- meta ------------------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    def set_meta(self, **items: Any) -> None:
        with self._txn() as db:
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                           [(k, json_dumps(v)) for k, v in items.items()])

    def config(self) -> dict[str, Any] | None:
        """The stored search configuration (:func:`agents.base.search_config`), ``None`` if none yet."""
        return self.meta().get("config")

    def check(self, config: Mapping[str, Any]) -> None:
        """Raise :class:`StoreMismatchError` naming every difference between the stored configuration and
        ``config`` (nothing is written)."""
        stored = self.config()
        if stored is None:
            return
        diff = config_differences(stored, dict(config))
        if diff:
            raise StoreMismatchError(
                f"{self.path} holds a different search: " + "; ".join(diff)
                + ". Resume with the options it was started with, or use another store for a new search")

    def begin(self, config: Mapping[str, Any], resume: bool, budget: int, dedupe: bool) -> None:
        """Start or resume recording the search ``config`` (takes the lock, unless this object holds it
        already; :meth:`end` releases what ``begin`` took)."""
        self._began_lock = self._lock_fd is None
        self.lock()
        if self.config() is not None:
            if not resume and (len(self) or self.checkpoint() is not None):
                raise FileExistsError(
                    f"{self.path} already holds a search ({len(self)} trials); resume it (resume=True / --resume) "
                    "or choose another store path")
            self.check(config)
        else:
            self.set_meta(config=dict(config), created=time.time())
        self.set_meta(budget=budget, dedupe=dedupe)

    def end(self) -> None:
        """The end of a :func:`~agents.base.run` (returned or raised): release the lock :meth:`begin` took,
        so the store can be opened for another search at once, in this process or another."""
        if self._began_lock:
            self._began_lock = False
            self.unlock()

    # -- trials ----------------------------------------------------------------------------------------------
    def add_trial(self, trial: Trial) -> None:
        """Commit one completed evaluation."""
        with self._txn() as db:
            db.execute(
                "INSERT OR REPLACE INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (trial.index, trial.round, int(trial.seed), trial.key, json_dumps(trial.action),
                 float(trial.score), trial.status,
                 json_dumps({**trial.result.to_dict(), **(trial.fidelity_dict() if trial.level is not None else {})}),
                 time.time()),
            )

    def _rows(self, where: str = "", args: Sequence[Any] = ()) -> list[Trial]:
        rows = self._db.execute(
            f"SELECT idx, round, seed, action_key, action, result FROM trials {where}", tuple(args)).fetchall()
        return [Trial.from_dict({"index": i, "round": r, "seed": s, "key": k, "action": json.loads(a),
                                 **json.loads(res)}) for i, r, s, k, a, res in rows]

    def trials(self) -> list[Trial]:
        """Every stored trial, by index."""
        return self._rows("ORDER BY idx")

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]

    def find(self, key: str, statuses: Sequence[str] = SUCCESS_STATUSES) -> Trial | None:
        """The first stored trial of a joint action (by its codec key, ``Trial.key``) with one of ``statuses``."""
        marks = ",".join("?" * len(statuses))
        rows = self._rows(f"WHERE action_key = ? AND status IN ({marks}) ORDER BY idx LIMIT 1", (key, *statuses))
        return rows[0] if rows else None

    # -- rounds and checkpoints ------------------------------------------------------------------------------
    def rounds(self) -> list[Round]:
        rows = self._db.execute(
            "SELECT round, start, n, proposals, observed_at FROM rounds ORDER BY round").fetchall()
        return [Round(r, s, n, _rows_of(p, n), o is not None) for r, s, n, p, o in rows]

    def save_proposals(self, rnd: int, start: int, proposals: np.ndarray, state: bytes | None) -> None:
        """Commit a round's proposals (validated, ``int64 [n, D]``) together with the algorithm's state right
        after ``propose``."""
        with self._txn() as db:
            db.execute("INSERT OR REPLACE INTO rounds VALUES (?, ?, ?, ?, ?, NULL)",
                       (rnd, start, len(proposals), json.dumps(np.asarray(proposals).tolist()), time.time()))
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

    def completed_trials(self) -> list[Trial]:
        """The trials of the rounds the algorithm has observed (what an interrupted round's output files
        hold: its trials are reported when the round completes); in a multi-fidelity search, every trial
        (each is final the moment it is recorded)."""
        if (self.config() or {}).get("scheduler") is not None:
            return self.trials()
        done = {r.round for r in self.rounds() if r.observed}
        return [t for t in self.trials() if t.round in done]


def _rows_of(text: str, n: int) -> np.ndarray:
    """A round's stored proposals as the read-only ``int64 [n, D]`` batch :func:`agents.base.run` proposed."""
    rows = np.array(json.loads(text), dtype=np.int64).reshape(n, -1)
    rows.flags.writeable = False
    return rows


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
        algorithm, env, budget, seed, batch_size, callback, resume, dedupe: as in :func:`agents.base.run`.
        store_path: the SQLite file of this search (created when missing).
        synchronous: see :class:`TrialStore`.

    Raises:
        StoreMismatchError: the store holds a different search (the message names each difference).
        StoreError: the file is not a readable search store.
        FileExistsError: ``resume=False`` and the store already has trials.
        RuntimeError: another process is running this search.
    """
    check_run_arguments(budget, batch_size)  # before the store file is created
    with TrialStore(store_path, synchronous=synchronous) as store:
        return run(algorithm, env, budget, seed, batch_size, callback, store=store, resume=resume, dedupe=dedupe)
