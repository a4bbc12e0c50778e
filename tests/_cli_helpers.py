"""Helpers of the command-line tests: what is on disk, and a refused command that must leave it as it was."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agents.cli import main


def snapshot(folder: Path) -> dict[str, object]:
    """Every file under ``folder``: its bytes and modification time, or for an SQLite database its content
    (SQLite's own ``-wal``/``-shm`` files and the lock file come and go with readers)."""
    out: dict[str, object] = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.endswith(("-wal", "-shm", ".lock")):
            continue
        key = str(p.relative_to(folder))
        out[key] = (p.read_bytes(), p.stat().st_mtime_ns)
        if p.suffix == ".db":
            try:
                with sqlite3.connect(f"file:{p}?mode=ro", uri=True) as db:
                    out[key] = "\n".join(db.iterdump())
            except sqlite3.DatabaseError:
                out[key] = p.read_bytes()
    return out


def refused(argv: list[str], capsys: pytest.CaptureFixture, folder: Path, usage: str, *needles: str) -> str:
    """Run ``ma2ml argv``: it must exit with 2, print ``usage`` first and every needle, and change nothing
    under ``folder``. Returns the error text."""
    before = snapshot(folder)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage), err
    for needle in needles:
        assert needle in err, (needle, err)
    assert snapshot(folder) == before
    return err


def stored_count(path: Path) -> int:
    """The trials in the store at ``path``, read-only (0 while it is being created): for tests that watch a
    running search."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
