"""``ma2ml report``: the table and the best-so-far figure of surrogate search runs."""

from __future__ import annotations

import json
import math
import shutil
import statistics
import sys

import pytest

from agents.base import best_trial
from agents.cli import main
from agents.cli.report import best_so_far_curve, report
from agents.cli.runs import read_run
from agents.store import TrialStore
from tests._cli_helpers import refused, snapshot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _search(out, algo, seed, budget=24):
    assert main(["search", "--algo", algo, "--reward", "surrogate", "--budget", str(budget),
                 "--batch-size", "4", "--seed", str(seed), "--no-progress", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def surrogate_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [_search(root / "random-s0", "random", 0), _search(root / "random-s1", "random", 1),
            _search(root / "tpe-s0", "tpe", 0, budget=16)]


@pytest.fixture
def runs(surrogate_runs, tmp_path):
    out = []
    for src in surrogate_runs:
        shutil.copytree(src, tmp_path / src.name)
        out.append(tmp_path / src.name)
    return out


def _trials(run):
    with TrialStore(run / "search.db", create=False) as store:
        return sorted(store.completed_trials(), key=lambda t: t.index)


def _table(md):
    """The Markdown table's rows as lists of cells (header and separator dropped)."""
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows[1:]]


def _expected_row(run, trials):
    best = best_trial(trials)
    cfg = json.loads((run / "config.json").read_text())
    return [run.name, cfg["algorithm"], "surrogate", str(cfg["seed"]), str(len(trials)), f"{best.score:.4f}",
            str(best.index), str(sum(t.status not in ("ok", "over_budget") for t in trials)),
            f"{sum(t.seconds for t in trials):.1f}"]


def test_report_of_several_runs_writes_the_table_and_the_figure(runs, tmp_path, capsys):
    out = tmp_path / "reports" / "cmp"
    capsys.readouterr()
    assert main(["report", *map(str, runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "report.png"]
    assert (out / "report.png").read_bytes()[:8] == PNG_MAGIC and (out / "report.png").stat().st_size > 2000
    md = (out / "report.md").read_text()
    assert "![best score so far against evaluations](report.png)" in md
    rows = _table(md)
    trials = [_trials(r) for r in runs]
    assert rows[:3] == [_expected_row(r, t) for r, t in zip(runs, trials)]
    # one mean ± std row: the two random seeds (tpe has one run only)
    assert len(rows) == 4
    bests = [best_trial(t).score for t in trials[:2]]
    assert rows[3][:5] == ["**mean ± std (2 runs)**", "random", "surrogate", "0,1", "24"]
    assert rows[3][5] == f"{statistics.fmean(bests):.4f} ± {statistics.stdev(bests):.4f}"
    secs = [sum(t.seconds for t in ts) for ts in trials[:2]]
    assert rows[3][8] == f"{statistics.fmean(secs):.1f}"
    # the table is printed, and every source is named
    for row in rows:
        assert "| " + " | ".join(row) + " |" in printed
    for r in runs:
        assert str(r / "search.db") in md
    # nothing written into the run folders
    assert all(not (r / "report.md").exists() for r in runs)


def test_report_library_returns_the_paths(runs, tmp_path):
    written = report(runs[:1], tmp_path / "one", x="seconds", quiet=True)
    assert written == {"markdown": tmp_path / "one" / "report.md", "png": tmp_path / "one" / "report.png"}
    assert "against evaluation seconds" in written["markdown"].read_text()


def test_report_of_one_run_defaults_to_its_folder(runs, capsys):
    run = runs[2]
    before = {p.name for p in run.iterdir()}
    assert main(["report", str(run)]) == 0
    assert {p.name for p in run.iterdir()} == before | {"report.md", "report.png"}
    rows = _table((run / "report.md").read_text())
    assert rows == [_expected_row(run, _trials(run))]


def test_report_reads_trials_jsonl_without_a_store(runs, tmp_path):
    run = runs[0]
    trials = _trials(run)
    for name in ("search.db", "search.db.lock"):
        (run / name).unlink(missing_ok=True)
    # mark one evaluation as failed (as a diverged training would be) to see it counted
    lines = (run / "trials.jsonl").read_text().splitlines()
    row = json.loads(lines[5])
    row.update(status="diverged", score=0.0)
    lines[5] = json.dumps(row)
    (run / "trials.jsonl").write_text("\n".join(lines) + "\n")

    data = read_run(run)
    assert data.source == run / "trials.jsonl"
    assert [t.index for t in data.trials] == [t.index for t in trials]
    assert [t.action for t in data.trials] == [t.action for t in trials]
    assert [t.score for t in data.trials] == [0.0 if t.index == 5 else t.score for t in trials]
    report([run], tmp_path / "out", quiet=True)
    md = (tmp_path / "out" / "report.md").read_text()
    (cells,) = _table(md)
    assert cells[7] == "1"  # failures
    assert cells[4] == str(len(trials))
    assert cells[5] == f"{best_trial(data.trials).score:.4f}"
    assert str(run / "trials.jsonl") in md


def test_report_without_matplotlib_still_writes_the_markdown(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    out = tmp_path / "nomatplotlib"
    capsys.readouterr()
    assert main(["report", str(runs[0]), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert 'pip install "ma2ml[bench]"' in captured.err and "report.png not written" in captured.err
    assert [p.name for p in out.iterdir()] == ["report.md"]
    md = (out / "report.md").read_text()
    assert "report.png" not in md
    assert _table(md) == [_expected_row(runs[0], _trials(runs[0]))]


def test_best_so_far_curve():
    trials = _trials_from_scores([(0.3, 2.0), (0.1, 1.0), (0.5, 0.5), (0.4, 3.0)])
    assert best_so_far_curve(trials) == ([1.0, 2.0, 3.0, 4.0], [0.3, 0.3, 0.5, 0.5])
    assert best_so_far_curve(trials, "seconds") == ([2.0, 3.0, 3.5, 6.5], [0.3, 0.3, 0.5, 0.5])
    with pytest.raises(ValueError, match="'trials' or 'seconds'"):
        best_so_far_curve(trials, "wall")


def _trials_from_scores(pairs):
    from agents.base import Trial
    from ma2ml_env import EvalResult

    return [Trial(i, 0, {"a": [0]}, EvalResult(score=s, status="ok", seconds=sec)) for i, (s, sec) in
            enumerate(pairs)]


# ---------------------------------------------------------------------------------------------------
# Refusals: exit 2, nothing written
# ---------------------------------------------------------------------------------------------------
def _refused(argv, capsys, folder, *needles):
    return refused(argv, capsys, folder, "usage: ma2ml report", *needles)


def test_report_refusals_write_nothing(runs, tmp_path, capsys):
    a, b = map(str, runs[:2])
    _refused(["report", a, b], capsys, tmp_path, "several runs: give --out DIR")
    (tmp_path / "empty").mkdir()
    _refused(["report", a, str(tmp_path / "empty"), "--out", str(tmp_path / "o")], capsys, tmp_path,
             "is not a search run folder", "no config.json")
    assert not (tmp_path / "o").exists()
    (tmp_path / "afile").write_text("x")
    _refused(["report", a, "--out", str(tmp_path / "afile")], capsys, tmp_path, "is a file, not a folder")
    shutil.copy(runs[0] / "config.json", tmp_path / "empty" / "config.json")
    _refused(["report", str(tmp_path / "empty")], capsys, tmp_path,
             "neither a search.db store nor a trials.jsonl")
    (tmp_path / "empty" / "trials.jsonl").write_text("")
    _refused(["report", str(tmp_path / "empty")], capsys, tmp_path, "no completed trial yet")
    with pytest.raises(SystemExit) as exc:
        main(["report", a, "--x", "wall"])
    assert exc.value.code == 2 and "invalid choice: 'wall'" in capsys.readouterr().err


def test_half_written_last_line_of_trials_jsonl_is_ignored(runs):
    run = runs[1]
    (run / "search.db").unlink()
    lines = (run / "trials.jsonl").read_text().splitlines()
    n = len(lines)
    (run / "trials.jsonl").write_text("\n".join(lines) + "\n" + lines[0][:40])
    assert len(read_run(run).trials) == n
    assert not math.isnan(best_trial(read_run(run).trials).score)


# ---------------------------------------------------------------------------------------------------
# Issue 20: read-only run folders, truncated stores, runs of different budgets
# ---------------------------------------------------------------------------------------------------
def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_report_on_a_read_only_run_folder_opens_its_store_read_only_and_writes_nothing(runs, tmp_path, capsys,
                                                                                      monkeypatch):
    """Tests run as root (who may write anything), so the run folder is made read-only AND every SQLite
    connection to a file inside it must be a read-only URI: that is what a read-only folder allows."""
    import sqlite3

    run = runs[0]
    before, names = snapshot(run), _files(run)
    opened = []
    real = sqlite3.connect

    def spy(database, *a, **kw):
        opened.append((str(database), kw.get("uri", False)))
        return real(database, *a, **kw)

    monkeypatch.setattr(sqlite3, "connect", spy)
    for p in run.iterdir():
        p.chmod(0o444)
    run.chmod(0o555)
    try:
        assert main(["report", str(run), "--out", str(tmp_path / "rep")]) == 0
        inside = [(db, uri) for db, uri in opened if str(run.resolve()) in db or db.startswith(str(run))]
        assert inside, opened
        assert all(uri and db.startswith("file:") and ("mode=ro" in db or "immutable=1" in db)
                   for db, uri in inside), inside
        assert snapshot(run) == before and _files(run) == names
        assert "| random-s0 |" in (tmp_path / "rep" / "report.md").read_text()
    finally:
        run.chmod(0o755)


def test_report_on_a_truncated_store_changes_nothing_in_the_run_folder(runs, tmp_path, capsys):
    run = runs[0]
    data = (run / "search.db").read_bytes()
    for size in (0, len(data) // 3):
        (run / "search.db").write_bytes(data[:size])
        names = _files(run)
        capsys.readouterr()
        try:
            code = main(["report", str(run), "--out", str(tmp_path / "rep")])
        except SystemExit as exc:
            code = exc.code
        assert code != 0
        assert "search.db" in capsys.readouterr().err
        assert _files(run) == names  # no search.db-shm / -wal
        assert (run / "search.db").read_bytes() == data[:size]


def test_report_over_runs_of_different_budgets_warns(tmp_path, capsys):
    a = _search(tmp_path / "a", "random", 0, budget=8)
    b = _search(tmp_path / "b", "random", 1, budget=12)
    capsys.readouterr()
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "rep")]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "different budgets (8, 12 evaluations)" in err
    assert "different budgets (8, 12 evaluations)" in (tmp_path / "rep" / "report.md").read_text()
    c = _search(tmp_path / "c", "random", 2, budget=8)
    capsys.readouterr()
    assert main(["report", str(a), str(c), "--out", str(tmp_path / "rep2")]) == 0
    assert "warning" not in capsys.readouterr().err
