"""Reliability where grids really run: full disks, foreign databases, schema versions, signals, bounded input."""

from __future__ import annotations

import errno
import fcntl
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.api.files import WriteError, atomic_write_bytes
from harness.scheduling.runner import RunOptions, run
from tests.conftest import TIMING, TINY_GRID


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

    from harness.api.config import for_device
    from harness.engine.grid import parse_grid

    grid = tmp_path / "g.toml"
    grid.write_text(TINY_GRID.replace('pruners = ["none", "l1_filter"]', 'pruners = ["none", "l1_filter", "random_filter"]').replace("epochs = 4", "epochs = 1"))
    # Keys as the runner takes them, with "auto" precision resolved for the CPU.
    jobs = {j.pruner.name: for_device(j, "cpu") for j in parse_grid(tomllib.loads(grid.read_text())).jobs}
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


# ---------------------------------------------------------------- foreign, damaged and other-version databases

FIXTURE_V1 = Path(__file__).resolve().parent / "fixtures" / "schema_v1.db"


def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words the refusal must contain)."""
    files: dict[str, tuple[Path, str]] = {}
    (folder / "empty.db").write_bytes(b"")
    files["empty"] = (folder / "empty.db", "is empty (0 bytes)")
    (folder / "text.db").write_text("job_key,metric,value\nabc,clean_acc,0.9\n")
    files["not sqlite"] = (folder / "text.db", "is not an SQLite database")
    con = sqlite3.connect(folder / "other.db")
    con.execute("create table users (id integer primary key, name text)")
    con.execute("insert into users (name) values ('ada')")
    con.commit()
    con.close()
    files["other program"] = (folder / "other.db", "SQLite database of another program (its tables: users)")
    data = bytearray(FIXTURE_V1.read_bytes())
    data[3 * 4096 : 3 * 4096 + 512] = b"\xff" * 512  # a damaged page in the middle
    (folder / "corrupt.db").write_bytes(bytes(data))
    files["corrupt"] = (folder / "corrupt.db", "corrupt SQLite database")
    (folder / "truncated.db").write_bytes(FIXTURE_V1.read_bytes()[:5000])
    files["truncated"] = (folder / "truncated.db", "corrupt SQLite database (truncated")
    newer = folder / "newer.db"
    newer.write_bytes(FIXTURE_V1.read_bytes())
    con = sqlite3.connect(newer)
    con.execute("update meta set value = '99' where key = 'schema_version'")
    con.commit()
    con.close()
    files["newer"] = (newer, "written by a newer harness (schema version 99")
    older = folder / "older.db"
    older.write_bytes(FIXTURE_V1.read_bytes())
    files["older"] = (older, "has schema version 1; this harness uses")
    return files


COMMANDS = {
    "run": lambda db, tmp: ["run", "--grid", "smoke", "--device", "cpu", "--db", str(db), "--site-dir", str(tmp / "site")],
    "status": lambda db, tmp: ["status", "--db", str(db)],
    "results": lambda db, tmp: ["results", "--db", str(db), "--format", "json"],
    "site": lambda db, tmp: ["site", "--db", str(db), "--site-dir", str(tmp / "site")],
    "report": lambda db, tmp: ["report", "--db", str(db)],
    "db compare": lambda db, tmp: ["db", "compare", "a", "b", "--db", str(db)],
    "submit": lambda db, tmp: ["submit", str(Path(__file__).resolve().parent.parent / "examples" / "my_pruner.py"), "--db", str(db), "--site-dir", str(tmp / "site")],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_a_bad_database_with_one_line_and_leaves_it_unchanged(tmp_path: Path, command: str) -> None:
    from typer.testing import CliRunner

    from harness.cli.main import app

    runner = CliRunner()
    for case, (db, words) in _bad_files(tmp_path).items():
        before = db.read_bytes()
        res = runner.invoke(app, COMMANDS[command](db, tmp_path))
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code == 2, (command, case, res.output)
        assert len(lines) == 1 and str(db) in lines[0] and words in lines[0], (command, case, res.output)
        assert db.read_bytes() == before, (command, case)
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(db.name + "-")], (command, case)  # no -wal/-shm/-journal
    assert not (tmp_path / "site").exists()


def test_fixture_of_schema_v1_upgrades_with_a_backup_and_then_reads(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from harness.cli.main import app
    from harness.store.queries import result_rows, status_counts
    from harness.store.schema import SCHEMA_VERSION, probe
    from harness.store.session import Store

    db = tmp_path / "results.db"
    db.write_bytes(FIXTURE_V1.read_bytes())
    assert probe(db) == 1
    res = CliRunner().invoke(app, ["db", "upgrade", "--db", str(db)])
    assert res.exit_code == 0 and f"from schema version 1 to {SCHEMA_VERSION}" in res.output, res.output
    backup = tmp_path / "results.db.v1.bak"
    assert backup.read_bytes() == FIXTURE_V1.read_bytes()
    assert probe(db) == SCHEMA_VERSION
    store = Store(db, readonly=True)
    with store.session() as s:
        assert status_counts(s)["done"] == 2 and len(result_rows(s)) == 48  # the rows the v1 harness wrote
    store.close()
    # The upgraded schema is the one a fresh database gets: same tables, columns and indexes.
    fresh = Store(tmp_path / "fresh.db")
    fresh.close()

    def schema(path: Path) -> dict[str, object]:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        names = [r[0] for r in con.execute("select name from sqlite_master where type in ('table', 'index') order by name")]
        out = {n: con.execute(f"pragma table_info('{n}')").fetchall() or con.execute(f"pragma index_info('{n}')").fetchall() for n in names}
        con.close()
        return out

    assert schema(db) == schema(tmp_path / "fresh.db")
    again = CliRunner().invoke(app, ["db", "upgrade", "--db", str(db)])
    assert again.exit_code == 0 and "already at schema version" in again.output


def test_migrations_are_ordered_and_end_at_the_schema_version() -> None:
    from harness.store.schema import MIGRATIONS, SCHEMA_VERSION

    assert [m.version for m in MIGRATIONS] == list(range(2, SCHEMA_VERSION + 1))


# ---------------------------------------------------------------- workers running submitted code

WORKER_PROBE = '''
import os, socket
from torch import Tensor
from harness import register_pruner
from harness.pruning import ScoredFilterPruner

@register_pruner("probe_filter")
class Probe(ScoredFilterPruner):
    """Reports where it runs and what it may touch, by failing with that report."""

    def score(self, weight: Tensor) -> Tensor:
        cwd = os.getcwd()
        try:
            with open(VICTIM, "ab") as fh:
                fh.write(b"!")
            append = "appended"
        except OSError as exc:
            append = exc.strerror
        try:
            socket.create_connection(("127.0.0.1", 9), timeout=1).close()
            net = "connected"
        except OSError as exc:
            net = type(exc).__name__ + ":" + str(exc.errno)
        raise ValueError(f"cwd={cwd} listing={sorted(os.listdir(cwd))} append={append} net={net}")
'''


@pytest.mark.parametrize("sandbox", [True, False])
def test_workers_running_a_submission_start_in_an_empty_private_folder_sandboxed(sandbox: bool, tmp_path: Path) -> None:
    from harness.scheduling.isolation import sandbox_available

    if sandbox and not sandbox_available():
        pytest.skip("unprivileged user namespaces are not available here")
    victim = tmp_path / "victim.json"
    victim.write_text("{}")
    plugin = tmp_path / "probe.py"
    plugin.write_text(WORKER_PROBE.replace("VICTIM", repr(str(victim))))
    grid = tmp_path / "g.toml"
    grid.write_text(TINY_GRID.replace('pruners = ["none", "l1_filter"]', 'pruners = ["probe_filter"]').replace("epochs = 4", "epochs = 1"))
    summary = run(RunOptions(grid=str(grid), db=tmp_path / "r.db", site_dir=None, device="cpu", workers=1,
                             plugin_files=[plugin], pruner_stubs={"probe_filter": {"family": "filter"}}, sandbox=sandbox))
    (_, line), = summary.failed
    assert "/harness-run-" in line and "/worker0 listing=[]" in line, line  # an empty private folder, not the caller's
    if sandbox:
        assert "append=Read-only file system" in line and "net=" in line and "connected" not in line, line
        assert victim.read_text() == "{}"
    else:
        assert "append=appended" in line, line  # without the sandbox the write goes through: the check above is not vacuous


# ---------------------------------------------------------------- SIGTERM, SIGHUP, SIGKILL of a real `harness run`



def result_rows(db: Path) -> dict[tuple, float]:
    """(job key, metric, attack, eps) -> value for done jobs, timing metrics left out."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out = {(k, m, a, e): v for k, m, a, e, v in con.execute(
        "select j.key, r.metric, r.attack, r.eps, r.value from results r join jobs j on j.id = r.job_id where j.status = 'done'"
    ) if not any(t in m for t in TIMING)}
    con.close()
    return out


def job_states(db: Path) -> dict[str, tuple[str, str | None]]:
    """pruner -> (status, error)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {p: (s, e) for p, s, e in con.execute("select pruner, status, error from jobs")}
    finally:
        con.close()


def harness_run(args: list[str], cwd: Path) -> subprocess.Popen:
    """`python -m harness run ARGS` in a subprocess (stderr kept for the failure message)."""
    return subprocess.Popen([sys.executable, "-m", "harness", "run", *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@dataclass
class Reference:
    """An uninterrupted run of a three-job grid, and the checkpoint cache it filled."""

    grid: Path
    db: Path
    cache: Path
    held_lock: Path  # the lock a job's evaluation takes on its pruned checkpoint: holding it holds that job


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The uninterrupted run, shared by the tests of this module."""
    return make_reference(tmp_path_factory)


def make_reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """Run the three-job grid once, uninterrupted."""
    import tomllib

    from harness.api.config import for_device
    from harness.engine.grid import parse_grid

    tmp = tmp_path_factory.mktemp("reference")
    grid = tmp / "g.toml"
    grid.write_text(TINY_GRID.replace('pruners = ["none", "l1_filter"]', 'pruners = ["none", "l1_filter", "random_filter"]').replace("epochs = 4", "epochs = 1"))
    ref = harness_run(["--grid", str(grid), "--device", "cpu", "--db", str(tmp / "ref.db"), "--cache-dir", str(tmp / "cache"), "--site-dir", str(tmp / "site")], tmp)
    _, stderr = ref.communicate(timeout=900)
    assert ref.returncode == 0, stderr[-2000:]
    # Keyed as the runner keys it, with "auto" precision resolved for the CPU.
    job = for_device(next(j for j in parse_grid(tomllib.loads(grid.read_text())).jobs if j.pruner.name == "random_filter"), "cpu")
    return Reference(grid, tmp / "ref.db", tmp / "cache", tmp / "cache" / "artifacts" / "pruned" / f"{job.pruned_key}.lock")


@contextmanager
def held(lock: Path) -> Iterator[None]:
    """Hold an artifact lock, so the job that needs it waits (mid-grid, whatever the machine's speed)."""
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def stop_mid_grid(reference: Reference, db: Path, sig: signal.Signals, cwd: Path) -> tuple[subprocess.Popen, str, list[int]]:
    """Run the grid with the random_filter job held, wait until the other two are done, send `sig`; returns (process, stderr, worker pids)."""
    args = ["--grid", str(reference.grid), "--device", "cpu", "--db", str(db), "--cache-dir", str(reference.cache), "--site-dir", str(cwd / "site"), "--workers", "2"]
    with held(reference.held_lock):
        proc = harness_run(args, cwd)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                st = job_states(db) if db.exists() else {}
            except sqlite3.OperationalError:  # the file exists before its tables do
                st = {}
            if [s for s, _ in st.values()].count("done") == 2 and st.get("random_filter", ("",))[0] == "running":
                break
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.2)
        else:
            raise AssertionError(f"the grid did not reach the held job: {job_states(db)}")
        workers = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    return proc, stderr, workers


def gone(pid: int) -> bool:
    """A process that no longer runs (absent, or a zombie left for init to reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, ProcessLookupError):
        return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_act_like_ctrl_c_and_the_rerun_equals_an_uninterrupted_run(sig: signal.Signals, reference: Reference, tmp_path: Path) -> None:
    db = tmp_path / "stopped.db"
    proc, stderr, workers = stop_mid_grid(reference, db, sig, tmp_path)
    assert proc.returncode == 128 + sig, stderr[-2000:]
    assert f"interrupted ({sig.name})" in stderr
    st = job_states(db)
    assert st["none"][0] == st["l1_filter"][0] == "done"
    assert st["random_filter"][0] == "interrupted" and f"interrupted ({sig.name})" in (st["random_filter"][1] or "")
    # The driver killed its workers before exiting; the kernel may take a moment to take them down on a busy machine.
    deadline = time.monotonic() + 15
    while not all(gone(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers and all(gone(p) for p in workers)  # no worker left computing
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    (ended, finished), = con.execute("select ended, finished_at from runs").fetchall()
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    con.close()
    assert ended == f"interrupted ({sig.name})" and finished is not None
    from typer.testing import CliRunner

    from harness.cli.main import app

    status = CliRunner().invoke(app, ["status", "--db", str(db)])
    assert status.exit_code == 0 and "in flight" not in status.output and "stale" not in status.output
    again = harness_run(["--grid", str(reference.grid), "--device", "cpu", "--db", str(db), "--cache-dir", str(reference.cache), "--site-dir", str(tmp_path / "site")], tmp_path)
    _, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr[-2000:]
    assert {s for s, _ in job_states(db).values()} == {"done"}
    assert result_rows(db) == result_rows(reference.db)


# ---------------------------------------------------------------- bounded grid input

BAD_GRIDS = {
    "too many jobs": ("seeds = [0]", f"seeds = {list(range(100_001))}", "expands to 200,002 jobs; a grid may have at most 100,000"),
    "linf eps above 1": ('eps = [0.1]\n\n[[attacks]]\nname = "pgd_linf"', 'eps = [8]\n\n[[attacks]]\nname = "pgd_linf"', "(Linf) eps 8 is outside (0, 1]"),
    "linf eps zero": ('eps = [0.1]\n\n[[attacks]]\nname = "pgd_linf"', 'eps = [0]\n\n[[attacks]]\nname = "pgd_linf"', "(Linf) eps 0 is outside (0, 1]"),
    "negative eps": ('eps = [0.1]\n\n[[attacks]]\nname = "pgd_linf"', 'eps = [0.1]\n\n[[attacks]]\nname = "pgd_l2"\neps = [-0.5]\n\n[[attacks]]\nname = "pgd_linf"', "eps must be >= 0"),
    "sparsity 1": ("sparsities = [0.5]", "sparsities = [0.5, 1.0]", "'sparsities' values must be numbers in [0, 1), got 1.0"),
    "negative sparsity": ("sparsities = [0.5]", "sparsities = [-0.1]", "got -0.1"),
}


@pytest.mark.parametrize("case", list(BAD_GRIDS))
def test_out_of_bounds_grids_are_refused_before_anything_runs(case: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from harness.cli.main import app

    old, new, words = BAD_GRIDS[case]
    assert old in TINY_GRID
    grid = tmp_path / "g.toml"
    grid.write_text(TINY_GRID.replace(old, new, 1))
    res = CliRunner().invoke(app, ["run", "--grid", str(grid), "--db", str(tmp_path / "r.db"), "--site-dir", str(tmp_path / "site"), "--device", "cpu"])
    assert res.exit_code == 1 and words in " ".join(res.output.split()), res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.toml"]  # no database, cache or site


def test_a_grid_file_over_10_mb_is_refused_unread(tmp_path: Path) -> None:
    from harness.api.errors import GridError
    from harness.engine.grid import load_grid

    grid = tmp_path / "g.toml"
    grid.write_text(TINY_GRID + "# " + "x" * (10 * 2**20) + "\n")
    with pytest.raises(GridError, match=r"g.toml: 10.0 MB; a grid file may be at most 10 MB"):
        load_grid(str(grid))


def test_duplicate_grid_entries_collapse_with_a_note() -> None:
    import tomllib

    from harness.engine.grid import parse_grid

    raw = tomllib.loads(TINY_GRID.replace('pruners = ["none", "l1_filter"]', 'pruners = ["none", "l1_filter", "l1_filter"]').replace("seeds = [0]", "seeds = [0, 0]").replace("eps = [0.1]", "eps = [0.1, 0.1]", 1))
    grid = parse_grid(raw)
    assert len(grid.jobs) == 2 and grid.jobs[0].attacks[0].eps == (0.1,)
    assert any("'pruners' lists 'l1_filter' more than once" in n for n in grid.notes)
    assert any("'seeds' lists '0' more than once" in n for n in grid.notes)
    assert any("attacks.fgsm.eps" in n for n in grid.notes)


# ---------------------------------------------------------------- submissions belong to their database


def test_a_submission_is_recorded_in_its_own_database_and_listed_by_that_databases_site(tmp_path: Path) -> None:
    import hashlib
    import json

    from harness.site.build import build_site
    from harness.store.queries import submission_source
    from harness.store.session import Store
    from harness.submission.submit import SubmitOptions, read_index, record

    repo = Path(__file__).resolve().parent.parent
    git_before = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo, capture_output=True, text=True).stdout
    source = (repo / "examples" / "my_pruner.py").read_bytes()
    sha = hashlib.sha256(source).hexdigest()
    report = {"name": "l1_over_l2_filter", "author": "Ada", "description": "L1 over L2.", "paper": "", "url": "", "family": "filter",
              "class": "L1OverL2", "dry_run": {"sparsity_achieved": 0.5}}
    where = record(source, sha, report, SubmitOptions(db=tmp_path / "scratch.db"), Path("my_pruner.py"))
    assert "scratch.db" in where
    assert read_index(tmp_path / "scratch.db")["submissions"]["l1_over_l2_filter"]["sha256"] == sha
    with Store(tmp_path / "scratch.db", readonly=True).session() as s:
        assert submission_source(s, "l1_over_l2_filter") == source
    # The checkout (and so an installed package) is untouched.
    assert subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo, capture_output=True, text=True).stdout == git_before
    build_site(Store(tmp_path / "scratch.db", readonly=True), tmp_path / "site-a")
    build_site(Store(tmp_path / "other.db"), tmp_path / "site-b")
    listed = json.loads((tmp_path / "site-a" / "submissions.json").read_text())
    assert [(e["name"], e["sha256"], e["author"]) for e in listed] == [("l1_over_l2_filter", sha, "Ada")]
    assert json.loads((tmp_path / "site-b" / "submissions.json").read_text()) == []
