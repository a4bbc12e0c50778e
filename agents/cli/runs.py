"""Reading a search run folder without changing it: its ``config.json``, its trials (from its SQLite store,
read through a private snapshot, else from ``trials.jsonl``), whether a search is still running on it, and
:func:`trial_pipeline`, the one place the application turns a trial into a pipeline.

A store is read through SQLite's read-only URI (``mode=ro``; ``immutable=1`` when no ``-wal`` file exists,
so that SQLite creates no ``-wal``/``-shm`` file next to it) and copied with SQLite's backup API into a
temporary file that :class:`agents.store.TrialStore` reads; nothing in the run folder is written, so a
read-only run folder can be reported on, and a running search is read consistently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import Trial
from agents.cli.args import UsageError

__all__ = ["RunData", "read_config", "read_run", "search_running", "stored_counts", "trial_pipeline"]


def trial_pipeline(decode: Callable[[Any], Any], trial: Trial) -> Any:
    """The :class:`~ma2ml_env.Pipeline` of ``trial``, decoded by ``decode`` (``env.unwrapped.decode`` or a
    ``SearchSpace.decode``). The one place where the application turns a trial's joint action into
    something else."""
    return decode(np.asarray(trial.action, dtype=np.int64))


def _ro_uri(path: Path) -> str:
    """A read-only SQLite URI of ``path``: ``immutable=1`` when no ``-wal`` file exists (no writer has
    uncommitted pages; SQLite then takes no lock and creates no ``-shm``/``-wal``), else ``mode=ro`` (reads
    the committed pages of a running or killed search from its ``-wal``)."""
    from urllib.parse import quote

    flag = "mode=ro" if Path(f"{path}-wal").exists() else "immutable=1"
    return f"file:{quote(str(path.resolve()))}?{flag}"


@contextlib.contextmanager
def store_snapshot(path: Path) -> Iterator[Any]:
    """A :class:`~agents.store.TrialStore` over a private copy of the store at ``path`` (taken read-only with
    SQLite's backup API, deleted on exit).

    Raises:
        agents.store.StoreError: not a readable search store (the message names the file).
    """
    from agents.store import StoreError, TrialStore

    broken = (f"{path} is not a readable search store ({{}}); it was not changed. Without its search.db a run "
              "folder is read from its trials.jsonl: move the broken store away to read that")
    if path.stat().st_size == 0:
        raise StoreError(broken.format("an empty file"))
    with tempfile.TemporaryDirectory(prefix="ma2ml-store-") as tmp:
        copy = Path(tmp) / "search.db"
        try:
            src = sqlite3.connect(_ro_uri(path), uri=True, timeout=60.0)
            try:
                dst = sqlite3.connect(str(copy))
                try:
                    src.backup(dst)
                finally:
                    dst.close()
            finally:
                src.close()
        except sqlite3.DatabaseError as exc:
            raise StoreError(broken.format(exc)) from None
        if stored_counts(copy) in (None, (0, 0)) and not _has_tables(copy):
            raise StoreError(broken.format("it holds no tables"))
        store = TrialStore(copy, create=False)
        try:
            yield store
        finally:
            store.close()


def _has_tables(path: Path) -> bool:
    db = sqlite3.connect(_ro_uri(path), uri=True)
    try:
        return bool(db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type='table'").fetchone()[0])
    finally:
        db.close()


def stored_counts(path: Path) -> tuple[int, int] | None:
    """``(trials, rounds)`` stored in the store at ``path``, read-only; ``None`` when there is no file or it is
    not a readable store."""
    if not path.is_file():
        return None
    if path.stat().st_size == 0:
        return (0, 0)
    try:
        db = sqlite3.connect(_ro_uri(path), uri=True, timeout=60.0)
        try:
            names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not names:
                return (0, 0)
            return (db.execute("SELECT COUNT(*) FROM trials").fetchone()[0],
                    db.execute("SELECT COUNT(*) FROM rounds").fetchone()[0])
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return None


def search_running(store_path: Path) -> bool:
    """Whether a process holds the run lock of the store at ``store_path`` (the ``flock`` on
    ``<store>.lock`` that :meth:`agents.store.TrialStore.lock` takes), probed without creating a file."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock to probe
        return False
    try:
        fd = os.open(f"{store_path}.lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


@dataclasses.dataclass
class RunData:
    """One search run folder, read.

    Attributes:
        path: the folder.
        config: its ``config.json`` (the options of ``ma2ml search``).
        trials: its trials in index order (those of the rounds that completed).
        source: the file they were read from (the store or ``trials.jsonl``).
    """

    path: Path
    config: dict[str, Any]
    trials: list[Trial]
    source: Path

    @property
    def task(self) -> str:
        """The tabular benchmark, else the reward backend."""
        return str(self.config.get("benchmark") or self.config.get("reward") or "?")


def _not_a_run(path: Path, why: str) -> UsageError:
    return UsageError(f"{str(path)!r} is not a search run folder ({why}); give the --out folder of a "
                      "`ma2ml search` run")


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a run folder.

    Raises:
        UsageError: not a folder, no ``config.json``, or one that is not a JSON object.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise _not_a_run(path, "no such folder" if not path.exists() else "not a folder")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise _not_a_run(path, "it has no config.json")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _not_a_run(path, f"cannot read its config.json: {exc}") from None
    if not isinstance(config, dict):
        raise _not_a_run(path, "its config.json is not a JSON object")
    return config


def _read_jsonl(path: Path) -> list[Trial]:
    lines = path.read_text(encoding="utf-8").splitlines()
    trials = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            trials.append(Trial.from_dict(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if n == len(lines):  # a search killed while appending: the half-written last line is not a trial
                break
            raise UsageError(f"{path} line {n} is not a trial ({type(exc).__name__}: {exc})") from None
    return trials


def read_run(run_dir: str | Path) -> RunData:
    """Read a search run folder: its ``config.json`` and its trials (from its ``search.db`` when present,
    else from its ``trials.jsonl``, which a search writes into its folder even with ``--store`` elsewhere),
    sorted by index. Only files inside the folder are read.

    Raises:
        UsageError: not a run folder, or it holds neither a store nor ``trials.jsonl``.
        agents.store.StoreError: the store exists but cannot be read.
    """
    path = Path(run_dir)
    config = read_config(path)
    store_path = path / "search.db"
    if store_path.is_file():
        with store_snapshot(store_path) as store:
            trials = store.completed_trials()
        source = store_path
    elif (path / "trials.jsonl").is_file():
        source = path / "trials.jsonl"
        trials = _read_jsonl(source)
    else:
        raise _not_a_run(path, "it has neither a search.db store nor a trials.jsonl")
    return RunData(path, config, sorted(trials, key=lambda t: t.index), source)
