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


def test_an_isolated_child_exits_when_its_parent_is_killed(tmp_path):
    """``sslalm demo`` trains in a child: killing the demo with a signal must not leave the child training."""
    import os
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "slow_case.py").write_text(
        "import os, time\n"
        "def case(path):\n"
        "    open(path, 'w').write(str(os.getpid()))\n"
        "    time.sleep(120)\n"
        "    return {}\n"
    )
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import slow_case; "
            "from sslalm.bench.common import run_isolated; "
            f"run_isolated(slow_case.case, {str(pid_file)!r})",
        ]
    )
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        child = int(pid_file.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            try:  # a zombie waiting for its new parent counts as gone, and so does one reaped meanwhile
                with open(f"/proc/{child}/stat") as fh:
                    if fh.read().split(") ", 1)[1].startswith("Z"):
                        break
            except FileNotFoundError:
                break
            time.sleep(0.2)
        else:
            os.kill(child, signal.SIGKILL)
            raise AssertionError("the isolated child outlived its killed parent")
    finally:
        parent.kill()
