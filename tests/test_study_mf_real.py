"""The real-training early-stopping study script: equal measured training time, the incumbent, the report."""

from __future__ import annotations

import json


def _study():
    from benchmarks import study_mf_real

    return study_mf_real


def test_cells_spend_the_same_training_time_and_the_report_reads_them(tmp_path):
    st = _study()
    out = tmp_path / "real"
    argv = ["run", "--out", str(out), "--datasets", "digits", "--methods", "ma2ml+hyperband", "ma2ml+full",
            "--seeds", "1", "--budget-seconds", "3", "--max-train", "120"]
    st.main(argv)
    hb = json.loads(st.cell_path(out, "digits", "ma2ml+hyperband", 0).read_text())
    full = json.loads(st.cell_path(out, "digits", "ma2ml+full", 0).read_text())
    for rec in (hb, full):
        assert rec["clock"] == sorted(rec["clock"]) and rec["max_train"] == 120
        # the budget is measured training seconds: spent, and nothing started once it was (one worker)
        assert rec["clock"][-2] < 3 <= rec["clock"][-1]
    assert all(full["full"]) and set(full["level"]) == {full["level"][0]}  # no early stopping
    assert len(set(hb["level"])) > 1 and not all(hb["full"])  # children stopped at lower levels
    # the incumbent: the best full training that had arrived by then, 0 before the first
    first = hb["full"].index(True) if any(hb["full"]) else None
    assert st.incumbent(hb, -1.0) == 0.0
    if first is not None:
        at = hb["clock"][first]
        assert st.incumbent(hb, at) >= hb["score"][first]
    assert st.incumbent(full, 1e9) == max(full["score"])
    mtime = st.cell_path(out, "digits", "ma2ml+full", 0).stat().st_mtime_ns
    st.main(argv)  # finished cells are skipped
    assert st.cell_path(out, "digits", "ma2ml+full", 0).stat().st_mtime_ns == mtime
    text = st.report(out).read_text()
    assert "## digits (budget 3 s of training)" in text
    assert "| ma2ml+hyperband | 1 |" in text and "| ma2ml+full | 1 |" in text
