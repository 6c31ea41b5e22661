"""The measurement kit shared by ``sslalm bench`` and ``sslalm demo`` (``sslalm.bench.common``)."""

from __future__ import annotations

import numpy as np

from sslalm.bench.common import format_table, peak_rss, reset_peak_rss, run_isolated


def test_an_isolated_case_reports_its_own_peak_not_its_parents():
    """A spawned child's ``getrusage`` peak includes the parent's memory at the spawn; ours must not."""
    block = np.ones(400 * 1024 * 1024 // 8)  # 400 MB in this (parent) process, touched
    assert peak_rss() > 400
    child = run_isolated(dict)  # a case that allocates nothing
    assert 0 < child["peak_rss_mb"] < 300 and child["baseline_rss_mb"] <= child["peak_rss_mb"]
    del block


def test_peak_counts_from_the_reset():
    """Fresh anonymous pages (an mmap, not the heap, whose freed pages may already be resident) raise the
    peak counted from the reset."""
    import mmap

    start = reset_peak_rss()
    with mmap.mmap(-1, 64 * 1024 * 1024) as block:
        block.write(b"\1" * len(block))
        assert peak_rss() >= start + 50


def test_tables_plain_and_markdown():
    rows = [{"model": "ours", "ms": 1.23456}, {"model": "transformers", "ms": 12345.6, "note": "slow"}]
    assert format_table(rows, ["model", "ms", "note"]).splitlines() == [
        "       model     ms  note",
        "------------  -----  ----",
        "        ours   1.23      ",
        "transformers  12346  slow",
    ]
    assert format_table(rows, ["model", "ms"], markdown=True).splitlines() == [
        "| model | ms |",
        "| --- | --- |",
        "| ours | 1.23 |",
        "| transformers | 12346 |",
    ]
