"""Reliability where grids really run: full disks, foreign databases, schema versions, signals, bounded input."""

from __future__ import annotations

import errno
import io
import os
import sqlite3
from pathlib import Path

import pytest

from harness.api.errors import HarnessError
from harness.api.files import WriteError, atomic_write_bytes
from harness.scheduling.runner import RunOptions, run
from tests.conftest import TINY_GRID


class FullDisk(io.FileIO):
    """A file whose every write fails as on a full disk."""

    def write(self, b: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fill_disk(monkeypatch: pytest.MonkeyPatch, when: str = "") -> None:
    """Make atomic writes whose target folder path contains `when` fail with ENOSPC."""
    real = os.fdopen

    def fdopen(fd: int, mode: str = "r", *a: object, **k: object) -> object:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if "w" in mode and Path(target).name.endswith(".tmp") and when in target:
            return FullDisk(fd, "wb")
        return real(fd, mode, *a, **k)

    monkeypatch.setattr("harness.api.files.os.fdopen", fdopen)


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- full disk


def test_full_disk_keeps_the_previous_file_and_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "leaderboard.csv"
    atomic_write_bytes(target, b"old contents\n")
    fill_disk(monkeypatch)
    with pytest.raises(WriteError, match=r"leaderboard.csv: no space left on device; the previous version is left intact"):
        atomic_write_bytes(target, b"new contents\n")
    assert listing(tmp_path) == {"leaderboard.csv": b"old contents\n"}


def test_full_disk_while_writing_the_site_keeps_the_old_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.site.build import build_site
    from harness.store.session import Store

    store = Store(tmp_path / "r.db")
    build_site(store, tmp_path / "site")
    before = listing(tmp_path / "site")
    assert "results.json" in before and "index.html" in before
    fill_disk(monkeypatch, "site")
    with pytest.raises(WriteError, match="no space left on device"):
        build_site(store, tmp_path / "site")
    # Nothing half written: every file is the old one, and no temporary file is left behind.
    assert listing(tmp_path / "site") == before


def test_full_disk_while_saving_a_checkpoint_fails_that_job_and_the_grid_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tomllib

    from harness.engine.grid import parse_grid

    grid = tmp_path / "g.toml"
    grid.write_text(TINY_GRID.replace('pruners = ["none", "l1_filter"]', 'pruners = ["none", "l1_filter", "random_filter"]').replace("epochs = 4", "epochs = 1"))
    jobs = {j.pruner.name: j for j in parse_grid(tomllib.loads(grid.read_text())).jobs}
    fill_disk(monkeypatch, f"/pruned/.{jobs['l1_filter'].pruned_key}.pt.")  # only l1_filter's checkpoint meets a full disk
    summary = run(RunOptions(grid=str(grid), db=tmp_path / "r.db", site_dir=None, device="cpu", workers=0))
    assert summary.done == 2 and [k for k, _ in summary.failed] == [jobs["l1_filter"].key]
    assert "no space left on device" in summary.failed[0][1]
    con = sqlite3.connect(f"file:{tmp_path / 'r.db'}?mode=ro", uri=True)
    st = dict(con.execute("select pruner, status from jobs"))
    con.close()
    assert st == {"none": "done", "l1_filter": "failed", "random_filter": "done"}
    pruned = tmp_path / ".harness" / "artifacts" / "pruned"
    assert sorted(p.name for p in pruned.iterdir() if p.suffix != ".lock") == [f"{jobs['random_filter'].pruned_key}.pt"]
