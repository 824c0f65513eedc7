"""benchmarks/gpu_check.sh on the CPU: a lent card's minutes are few, so the script must leave a report whatever
happens (a failed stage, a spent budget, a lease killed mid-way). A stand-in interpreter that sleeps, then fails,
plays every Python stage, so the stages' timing is the test's to choose."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="a bash script")


def env_for(tmp_path: Path, budget_s: int, python_s: int) -> dict[str, str]:
    """The script's environment: no wheels, no data, report and scratch under tmp_path, and a stand-in interpreter
    that sleeps `python_s` seconds, then exits 1."""
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nsleep {python_s}\nexit 1\n")
    python.chmod(0o755)
    return {**os.environ, "OUT": str(tmp_path / "out"), "TMPDIR": str(tmp_path), "PYTHON": str(python),
            "WHEELS": str(tmp_path / "no-wheels"), "GPU_CHECK_BUDGET_S": str(budget_s)}


def stage_rows(report: Path) -> dict[str, str]:
    """The report's summary table: stage name -> status."""
    rows = [line.split(" | ") for line in report.read_text().splitlines() if line.startswith("| ") and not line.startswith("| stage")]
    return {r[0][2:]: r[1] for r in rows if len(r) == 3 and not r[0].startswith("| ---")}


def test_a_spent_budget_skips_the_remaining_stages_and_the_report_lists_them_all(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    # 15 s are kept for the report and a stage needs 20: with 45 s and 3 s per Python stage, the first stages run
    # (and fail), the rest are skipped.
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "data")], env=env_for(tmp_path, 45, 3), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = stage_rows(tmp_path / "out" / "gpu_check_report.md")
    assert rows["install wheels"] == "ok"  # no wheels folder: what is installed is used
    assert rows["CIFAR-10 data"].startswith("FAILED")  # and the stages after it still ran
    assert rows["environment"].startswith("FAILED")
    assert list(rows.values())[-1] == "SKIPPED (budget)"
    assert "pytest -m gpu" in rows


def test_a_lease_killed_mid_way_still_leaves_the_finished_stages_in_the_report(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    report = tmp_path / "out" / "gpu_check_report.md"
    # The third stage (the first Python one) hangs: the lease ends while the script is still running.
    proc = subprocess.Popen(["bash", str(SCRIPT), str(tmp_path / "data")], env=env_for(tmp_path, 0, 600),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (report.is_file() and "CIFAR-10 data" in stage_rows(report)):
            time.sleep(0.2)
        assert proc.poll() is None  # still running: the report was not written by the exit trap
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # no EXIT trap runs: only what was written after each stage remains
        proc.wait()
    rows = stage_rows(report)
    assert rows["install wheels"] == "ok" and rows["CIFAR-10 data"].startswith("FAILED")
