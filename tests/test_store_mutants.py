"""Tests written against surviving store mutants: what a results database is, who may take a job, what the queries return.

They pin the refusals of foreign, damaged, blank and other-version files (naming the problem and leaving the file as it
was), the upgrade path and its backups, the job life cycle between several processes (claims, heartbeats, owners that
died), the order and keys of the read-side queries, and the pairing and ranking of leaderboard rows. Every expected
value is set by construction (hand-written rows, timestamps and metrics) on tiny temporary databases: no dataset,
no model, no GPU.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update

from harness.api.config import PROTOCOL_VERSION
from harness.api.errors import HarnessError
from harness.api.metrics import Metric
from harness.store import queries
from harness.store.boards import (
    WORST,
    BoardRow,
    baseline_index,
    control_index,
    control_of,
    leaderboards,
    threat_of,
)
from harness.store.models import Job, Run
from harness.store.queries import (
    driver_gone,
    failed_jobs,
    job_records,
    result_rows,
    runs_in_flight,
    submission_records,
)
from harness.store.schema import SCHEMA_VERSION, DatabaseFileError, probe, upgrade
from harness.store.session import Store
from tests.test_boards import add_job, linf

FIXTURE_V1 = Path(__file__).resolve().parent / "fixtures" / "schema_v1.db"
FIELDS: dict[str, Any] = dict(dataset="d", architecture="a", pruner="p", pruner_label="p", sparsity=0.5, seed=0, dense_key="dk", pruned_key="pk")
TEN_MINUTES = timedelta(minutes=10)
LONG_AGO = datetime(2020, 1, 1, tzinfo=timezone.utc)


# ---- helpers ----


def fresh_db(path: Path) -> Path:
    """A current, empty harness database at `path`, closed."""
    Store(path).close()
    return path


def edit(path: Path, *sql: str) -> None:
    """Run raw SQL statements on a database file and commit (a hand-made damage or an older layout)."""
    con = sqlite3.connect(path)
    for stmt in sql:
        con.execute(stmt)
    con.commit()
    con.close()


def siblings(folder: Path) -> list[str]:
    """Names in `folder`, sorted."""
    return sorted(p.name for p in folder.iterdir())


def dead_pid() -> int:
    """The process id of a child that has already exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def submission(name: str, sha: str, **extra: Any) -> dict[str, Any]:
    """The fields of a submission row."""
    return {"name": name, "sha256": sha, "source": b"# x\n", "original_filename": f"{name}.py", "author": "me", "description": "d",
            "family": "filter", "class_name": "X", "harness_version": "0"} | extra


def job_field(store: Store, key: str, column: Any) -> Any:
    """One column of one job row."""
    with store.session() as s:
        return s.scalars(select(column).where(Job.key == key)).one()


# ---- harness/store/schema.py: which files are harness databases ----


@pytest.mark.parametrize("sql", ["UPDATE meta SET value = 'three' WHERE key = 'schema_version'", "DELETE FROM meta"],
                         ids=["version-not-a-number", "no-version-row"])
def test_a_harness_database_without_a_numeric_version_is_refused_by_name(sql: str, tmp_path: Path) -> None:
    """A version that is no number, or no version row beside every harness table (not a database being created):
    'no schema version', for readers and writers, file unchanged."""
    db = fresh_db(tmp_path / "r.db")
    edit(db, sql)
    before = db.read_bytes()
    with pytest.raises(DatabaseFileError, match="has no schema version"):
        probe(db)
    with pytest.raises(DatabaseFileError, match="has no schema version"):
        Store(db)
    assert db.read_bytes() == before


def unused_page_db(path: Path) -> int:
    """The v1 fixture plus one zero page its header counts but no b-tree uses (readable, fails quick_check); that page's number."""
    data = bytearray(FIXTURE_V1.read_bytes())
    pages = int.from_bytes(data[28:32], "big")  # the header's page count (SQLite file format, offset 28)
    data[28:32] = (pages + 1).to_bytes(4, "big")
    page_size = int.from_bytes(data[16:18], "big")
    path.write_bytes(bytes(data) + b"\0" * page_size)
    return pages + 1


def test_a_file_that_fails_the_integrity_check_is_refused_as_corrupt(tmp_path: Path) -> None:
    """A page the header counts but no b-tree uses reads fine yet fails quick_check: 'corrupt', for readers and writers."""
    db = tmp_path / "r.db"
    extra = unused_page_db(db)
    before = db.read_bytes()
    with pytest.raises(DatabaseFileError, match=rf"corrupt SQLite database \(integrity check: [\s\S]*Page {extra} is never used"):
        probe(db)
    with pytest.raises(DatabaseFileError, match="corrupt SQLite database"):
        Store(db)
    assert db.read_bytes() == before and siblings(tmp_path) == ["r.db"]


def test_a_blank_sqlite_file_is_refused_by_a_reader_and_taken_by_a_writer(tmp_path: Path) -> None:
    """An SQLite file with no table yet (a run creating it) is no database to read, but a run may build the schema in it."""
    db = tmp_path / "r.db"
    edit(db, "CREATE TABLE scratch (x)", "DROP TABLE scratch")
    before = db.read_bytes()
    assert len(before) > 0
    with pytest.raises(DatabaseFileError, match=r"another program \(its tables: none\)"):
        Store(db, readonly=True)
    assert db.read_bytes() == before
    Store(db).close()
    assert probe(db) == SCHEMA_VERSION


def test_a_writer_refuses_another_programs_database_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    """Opening a foreign SQLite file for writing is refused, and no harness table or -wal file is added to it."""
    db = tmp_path / "other.db"
    edit(db, "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)", "INSERT INTO users (name) VALUES ('ada')")
    before = db.read_bytes()
    with pytest.raises(DatabaseFileError, match=r"another program \(its tables: users\)"):
        Store(db)
    assert db.read_bytes() == before and siblings(tmp_path) == ["other.db"]


def test_a_writer_refuses_an_older_database_and_names_the_upgrade(tmp_path: Path) -> None:
    """A schema-v1 file (core tables only, with its version row) is refused for writing until upgraded, unchanged."""
    db = tmp_path / "r.db"
    db.write_bytes(FIXTURE_V1.read_bytes())
    with pytest.raises(DatabaseFileError, match=r"has schema version 1; .*harness db upgrade"):
        Store(db)
    with pytest.raises(DatabaseFileError, match="has schema version 1"):
        Store(db, readonly=True)
    assert db.read_bytes() == FIXTURE_V1.read_bytes() and siblings(tmp_path) == ["r.db"]


def test_a_reader_sees_what_a_live_writer_has_committed(tmp_path: Path) -> None:
    """`harness status` beside a running writer: the committed rows still in the -wal file are read, not refused."""
    db = tmp_path / "r.db"
    writer = Store(db)
    add_job(writer, "j", "p1", 0.5, 0, [Metric("clean_acc", 0.75)])
    assert (tmp_path / "r.db-wal").exists()  # the writer keeps its connection, and so its WAL, open
    reader = Store(db, readonly=True)
    with reader.session() as s:
        assert [(r.job_key, r.value) for r in result_rows(s)] == [("j", 0.75)]
    reader.close()
    writer.close()


def test_upgrade_keeps_every_earlier_backup(tmp_path: Path) -> None:
    """Backups left by earlier upgrades are never overwritten: the new copy takes the next free number."""
    db = tmp_path / "results.db"
    db.write_bytes(FIXTURE_V1.read_bytes())
    (tmp_path / "results.db.v1.bak").write_bytes(b"first")
    (tmp_path / "results.db.v1.bak.1").write_bytes(b"second")
    got: list[tuple[int, int, Path | None]] = []
    worker = threading.Thread(target=lambda: got.append(upgrade(db)), daemon=True)
    worker.start()
    worker.join(timeout=300)  # a hang guard, not a speed bound: an upgrade of a tiny file takes well under a second
    assert not worker.is_alive(), "upgrade did not return"
    assert got == [(1, SCHEMA_VERSION, tmp_path / "results.db.v1.bak.2")]
    assert (tmp_path / "results.db.v1.bak").read_bytes() == b"first"
    assert (tmp_path / "results.db.v1.bak.1").read_bytes() == b"second"
    assert (tmp_path / "results.db.v1.bak.2").read_bytes() == FIXTURE_V1.read_bytes()


def test_upgrading_a_version_2_database_applies_only_the_later_steps(tmp_path: Path) -> None:
    """A v2 file (runs.driver and submissions present, no outcomes) gets the outcomes table and keeps its rows."""
    db = tmp_path / "r.db"
    store = Store(db)
    add_job(store, "j", "p1", 0.5, 0, [Metric("clean_acc", 0.75)])
    store.close()
    edit(db, "DROP TABLE outcomes", "UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    assert probe(db) == 2
    assert upgrade(db) == (2, SCHEMA_VERSION, tmp_path / "r.db.v2.bak")
    assert probe(db) == SCHEMA_VERSION
    reader = Store(db, readonly=True)
    with reader.session() as s:
        assert [(r.job_key, r.value) for r in result_rows(s)] == [("j", 0.75)]
    reader.close()
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM outcomes").fetchone() == (0,)
    con.close()


def test_upgrading_a_current_database_changes_nothing_and_copies_nothing(tmp_path: Path) -> None:
    """A current file: (version, version, no backup), the same bytes, and no .bak beside it."""
    db = fresh_db(tmp_path / "r.db")
    before = db.read_bytes()
    assert upgrade(db) == (SCHEMA_VERSION, SCHEMA_VERSION, None)
    assert db.read_bytes() == before and siblings(tmp_path) == ["r.db"]


def test_upgrading_a_missing_file_says_there_is_none_and_creates_nothing(tmp_path: Path) -> None:
    """No file to upgrade is named as such (not as an unreadable file), and none is made."""
    with pytest.raises(DatabaseFileError, match="No results database at .*nothing to upgrade"):
        upgrade(tmp_path / "nope.db")
    assert siblings(tmp_path) == []


# ---- harness/store/session.py: opening, and the life cycle of jobs and runs ----


def test_a_store_that_may_not_create_makes_no_file(tmp_path: Path) -> None:
    """Store(create=False) on a missing path raises and leaves no file behind."""
    with pytest.raises(HarnessError, match="No results database at"):
        Store(tmp_path / "r.db", create=False)
    assert siblings(tmp_path) == []


def test_heartbeat_refreshes_only_our_own_running_jobs(tmp_path: Path) -> None:
    """Our heartbeat never keeps another owner's job alive: that job still goes stale and can be taken over."""
    store = Store(tmp_path / "r.db")
    run = store.start_run("g", "g.toml", 2, {})
    store.add_jobs(run, [("ka", FIELDS | {"seed": 1}), ("kb", FIELDS | {"seed": 2})])
    assert store.try_claim("ka", run, "A", TEN_MINUTES) and store.try_claim("kb", run, "B", TEN_MINUTES)
    with store.session() as s:
        s.execute(update(Job).values(heartbeat_at=LONG_AGO))
    store.heartbeat(["ka", "kb"], "A")
    assert not store.try_claim("ka", run, "C", TEN_MINUTES)  # A's beat is fresh
    assert store.try_claim("kb", run, "C", TEN_MINUTES)  # B stopped beating long ago
    assert (job_field(store, "ka", Job.owner), job_field(store, "kb", Job.owner)) == ("A", "C")


def test_heartbeat_sets_only_the_counters_it_is_given_and_only_on_its_run(tmp_path: Path) -> None:
    """A heartbeat with n_done keeps n_failed, one with n_failed keeps n_done, and other runs keep theirs."""
    store = Store(tmp_path / "r.db")
    r1, r2 = store.start_run("g", "g.toml", 9, {}), store.start_run("h", "h.toml", 9, {})
    store.heartbeat([], "me", r1, n_done=3)
    store.heartbeat([], "me", r1, n_failed=2)
    with store.session() as s:
        counts = {i: (d, f) for i, d, f in s.execute(select(Run.id, Run.n_done, Run.n_failed))}
    assert counts == {r1: (3, 2), r2: (0, 0)}


def test_finishing_a_run_closes_that_run_only(tmp_path: Path) -> None:
    """finish_run stores the counts and how the run ended on its own row; a concurrent run stays in flight."""
    store = Store(tmp_path / "r.db")
    r1, r2 = store.start_run("g", "g.toml", 3, {}), store.start_run("g", "g.toml", 3, {})
    store.finish_run(r1, 2, 1, 0, ended="interrupted (SIGTERM)")
    with store.session() as s:
        assert [r.run_id for r in runs_in_flight(s)] == [r2]
        row = s.execute(select(Run.n_done, Run.n_failed, Run.ended).where(Run.id == r1)).one()
    assert tuple(row) == (2, 1, "interrupted (SIGTERM)")


def test_complete_stores_the_duration_and_provenance(tmp_path: Path) -> None:
    """A done job reads back the wall time and provenance it was completed with."""
    store = Store(tmp_path / "r.db")
    run = store.start_run("g", "g.toml", 1, {})
    store.claim("k", run, FIELDS)
    store.complete("k", [Metric("clean_acc", 0.5)], {"torch": "2"}, 12.5)
    with store.session() as s:
        (rec,) = job_records(s)
    assert (rec.duration_s, rec.provenance, rec.attempts) == (12.5, {"torch": "2"}, 1)


def test_a_submission_name_is_replaced_only_when_asked_and_a_duplicate_is_one_clear_error(tmp_path: Path) -> None:
    """A second row of a taken name is a HarnessError (the first stays); with replace it overwrites the one row."""
    store = Store(tmp_path / "r.db")
    store.record_submission(submission("s", "a" * 64))
    with pytest.raises(HarnessError, match="another submission with the name 's'"):
        store.record_submission(submission("s", "b" * 64))
    with store.session() as s:
        assert [(r.name, r.sha256) for r in submission_records(s)] == [("s", "a" * 64)]
    store.record_submission(submission("s", "b" * 64), replace=True)
    with store.session() as s:
        assert [(r.name, r.sha256) for r in submission_records(s)] == [("s", "b" * 64)]


def test_a_job_whose_owner_died_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    """Owner host:pid:run with a fresh heartbeat: taken over when that pid is gone, refused while it lives."""
    store = Store(tmp_path / "r.db")
    run = store.start_run("g", "g.toml", 2, {})
    store.add_jobs(run, [("dead", FIELDS | {"seed": 1}), ("live", FIELDS | {"seed": 2})])
    host = socket.gethostname()
    assert store.try_claim("dead", run, f"{host}:{dead_pid()}:{run}", TEN_MINUTES)
    assert store.try_claim("live", run, f"{host}:{os.getpid()}:{run}", TEN_MINUTES)
    assert store.try_claim("dead", run, "rescuer", TEN_MINUTES)
    assert not store.try_claim("live", run, "rescuer", TEN_MINUTES)
    assert store.reset_stale(TEN_MINUTES) == 0  # the rescuer's claim is fresh, and 'live' is alive


def test_of_two_racing_claimants_only_one_takes_the_job(tmp_path: Path) -> None:
    """A rival that claims the job between our read and our write wins alone: our claim is refused, its stays."""
    db = tmp_path / "r.db"
    store, rival = Store(db), Store(db)
    run = store.start_run("g", "g.toml", 1, {})
    store.add_jobs(run, [("k", FIELDS)])
    fired: list[bool] = []

    def rival_claims_after_our_read(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not fired and statement.lstrip().upper().startswith("SELECT") and "FROM jobs" in statement:
            fired.append(rival.try_claim("k", run, "rival", TEN_MINUTES))

    event.listen(store.engine, "after_cursor_execute", rival_claims_after_our_read)
    assert not store.try_claim("k", run, "me", TEN_MINUTES)
    event.remove(store.engine, "after_cursor_execute", rival_claims_after_our_read)
    assert fired == [True]
    assert (job_field(store, "k", Job.owner), job_field(store, "k", Job.attempts)) == ("rival", 1)
    store.close()
    rival.close()


# ---- harness/store/queries.py: what the read side returns, in which order ----


def test_failed_jobs_are_listed_newest_first(tmp_path: Path) -> None:
    """failed_jobs orders by when each job failed, the latest first, whatever the order of the rows."""
    store = Store(tmp_path / "r.db")
    run = store.start_run("g", "g.toml", 3, {})
    for i, key in enumerate(("old", "new", "mid")):
        store.claim(key, run, FIELDS | {"seed": i})
        store.fail(key, "boom")
    with store.session() as s:
        for key, day in (("old", 1), ("new", 3), ("mid", 2)):
            s.execute(update(Job).where(Job.key == key).values(finished_at=datetime(2024, 1, day, tzinfo=timezone.utc)))
    with store.session() as s:
        assert [j.key for j in failed_jobs(s)] == ["new", "mid", "old"]


def test_an_eps_of_zero_is_a_number_not_no_eps(tmp_path: Path) -> None:
    """Only the stored -1 means 'no eps': eps 0.0 reads back as 0.0 in result rows and job records."""
    store = Store(tmp_path / "r.db")
    add_job(store, "k", "p1", 0.5, 0, [Metric("clean_acc", 0.9), Metric("robust_acc", 0.9, "fgsm", 0.0)])
    with store.session() as s:
        assert [(r.metric, r.eps) for r in result_rows(s)] == [("clean_acc", None), ("robust_acc", 0.0)]
        (rec,) = job_records(s)
    assert set(rec.metrics) == {("clean_acc", "", None), ("robust_acc", "fgsm", 0.0)}


def test_result_rows_of_a_job_are_sorted_by_metric_attack_and_eps(tmp_path: Path) -> None:
    """Within one job the rows come by metric, attack, eps, not in the order they were written."""
    store = Store(tmp_path / "r.db")
    metrics = [Metric("robust_acc", 0.1, "pgd", 0.2), Metric("robust_acc", 0.2, "fgsm", 0.2), Metric("robust_acc", 0.3, "fgsm", 0.1),
               Metric("clean_acc", 0.9)]
    add_job(store, "k", "p1", 0.5, 0, metrics)
    with store.session() as s:
        got = [(r.metric, r.attack, r.eps) for r in result_rows(s)]
    assert got == [("clean_acc", "", None), ("robust_acc", "fgsm", 0.1), ("robust_acc", "fgsm", 0.2), ("robust_acc", "pgd", 0.2)]


def test_job_records_come_sorted_by_label_sparsity_and_seed(tmp_path: Path) -> None:
    """job_records orders by dataset, architecture, pruner label, sparsity, seed, key, not by insertion."""
    store = Store(tmp_path / "r.db")
    for key, pruner, sparsity, seed in (("k1", "p2", 0.5, 1), ("k2", "p2", 0.5, 0), ("k3", "p1", 0.7, 0), ("k4", "p1", 0.3, 0)):
        add_job(store, key, pruner, sparsity, seed, [Metric("clean_acc", 0.5)])
    with store.session() as s:
        assert [r.key for r in job_records(s)] == ["k4", "k3", "k2", "k1"]


def test_a_driver_on_another_host_is_never_taken_for_gone() -> None:
    """A host:pid of another machine is not looked up here, even when that pid does not exist on this one."""
    pid = dead_pid()
    assert driver_gone(f"{socket.gethostname()}:{pid}")
    assert not driver_gone(f"not-{socket.gethostname()}:{pid}")
    assert not driver_gone(f"{socket.gethostname()}:abc") and not driver_gone(None)


def test_a_driver_we_may_not_signal_is_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pid that exists but belongs to another user (kill -0 refused) counts as alive."""

    def refused(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(queries.os, "kill", refused)
    assert not driver_gone(f"{socket.gethostname()}:12345")


def test_eta_is_never_negative(tmp_path: Path) -> None:
    """A run that finished more jobs than it had to do has nothing left: ETA 0, not a negative time."""
    store = Store(tmp_path / "r.db")
    run = store.start_run("g", "g.toml", 2, {}, n_todo=2)
    store.heartbeat([], "me", run, n_done=3)
    with store.session() as s:
        (flight,) = runs_in_flight(s)
    assert flight.eta_s == 0.0


def test_an_earlier_run_that_finished_nothing_gives_no_pace(tmp_path: Path) -> None:
    """A grid's earlier run that finished no job says nothing about the time per job: the new run has no ETA yet."""
    store = Store(tmp_path / "r.db")
    earlier = store.start_run("g", "g.toml", 4, {}, n_todo=4)
    start = datetime.now(timezone.utc) - timedelta(hours=2)
    with store.session() as s:
        s.execute(update(Run).where(Run.id == earlier).values(started_at=start, heartbeat_at=start + timedelta(seconds=4000)))
    later = store.start_run("g", "g.toml", 4, {}, n_todo=4)
    with store.session() as s:
        flight = {r.run_id: r for r in runs_in_flight(s)}
    assert flight[later].eta_s is None


def test_submissions_are_listed_oldest_first(tmp_path: Path) -> None:
    """submission_records orders by submission time, not by name or insertion."""
    store = Store(tmp_path / "r.db")
    store.record_submission(submission("alpha", "a" * 64, submitted_at=datetime(2021, 1, 1, tzinfo=timezone.utc)))
    store.record_submission(submission("zeta", "b" * 64, submitted_at=datetime(2020, 1, 1, tzinfo=timezone.utc)))
    store.record_submission(submission("mid", "c" * 64, submitted_at=datetime(2020, 6, 1, tzinfo=timezone.utc)))
    with store.session() as s:
        assert [r.name for r in submission_records(s)] == ["zeta", "mid", "alpha"]


# ---- harness/store/boards.py: families, references and ranking ----

FAMILIES = {"none": "none", "p1": "filter", "p2": "layer", "ctl": "control"}
THREATS = {"fgsm": "linf"}


def only_board(store: Store) -> Any:
    """The one leaderboard of `store`'s jobs."""
    with store.session() as s:
        (board,) = leaderboards(s, FAMILIES, THREATS)
    return board


def test_equal_robustness_ranks_the_more_accurate_row_first(tmp_path: Path) -> None:
    """Rows with the same mean worst case are ranked by clean accuracy, higher first (names only break full ties)."""
    store = Store(tmp_path / "r.db")
    add_job(store, "a", "p1", 0.5, 0, linf(0.80, (0.40, 0.20)))
    add_job(store, "b", "p2", 0.5, 0, linf(0.90, (0.40, 0.20)))
    board = only_board(store)
    assert [(r.rank, r.pruner) for r in board.rows] == [(1, "p2"), (2, "p1")]


def test_the_control_evaluated_the_same_way_is_preferred(tmp_path: Path) -> None:
    """Of two controls of the same trained model and fine-tuning, a job is paired with the one evaluated like it."""
    store = Store(tmp_path / "r.db")
    add_job(store, "c-big", "ctl", 0.0, 0, linf(0.9, (0.3, 0.1)), n_examples=1000)
    add_job(store, "c-small", "ctl", 0.0, 0, linf(0.9, (0.5, 0.1)), n_examples=100)
    add_job(store, "p", "p1", 0.5, 0, linf(0.9, (0.4, 0.1)), n_examples=100)
    with store.session() as s:
        jobs = job_records(s)
    p = next(j for j in jobs if j.key == "p")
    ref = control_of(p, control_index(jobs, FAMILIES))
    assert ref is not None and ref.key == "c-small"


def test_an_unregistered_attack_of_a_job_with_two_threat_models_is_unknown() -> None:
    """An attack outside the registry joins the job's threat model only when the job has exactly one."""
    assert threat_of("mystery", {}, {"linf"}) == "linf"
    assert threat_of("mystery", {}, {"linf", "l2"}) == "unknown"
    assert threat_of("mystery", {}, set()) == "unknown"
    assert threat_of("fgsm/x", {"fgsm": "linf"}, {"l2"}) == "linf"


def test_a_pruner_registered_as_the_dense_family_is_a_baseline(tmp_path: Path) -> None:
    """A pruner whose family is 'none' serves as the dense baseline like the built-in 'none'."""
    store = Store(tmp_path / "r.db")
    add_job(store, "d", "dense2", 0.0, 0, linf(0.9, (0.3, 0.1)))
    add_job(store, "p", "p1", 0.5, 0, linf(0.9, (0.4, 0.1)))
    with store.session() as s:
        jobs = job_records(s)
    assert {k: [j.key for j in v] for k, v in baseline_index(jobs, FAMILIES | {"dense2": "none"}).items()} == {"dense-d-a-0": ["d"]}


def test_an_unregistered_pruner_takes_its_family_from_its_provenance(tmp_path: Path) -> None:
    """A submitted pruner not in the registry is shown in the family its job's provenance recorded."""
    store = Store(tmp_path / "r.db")
    add_job(store, "s", "sub", 0.5, 0, linf(0.9, (0.4, 0.1)), provenance={"plugins": {"pruner": {"family": "filter"}}})
    board = only_board(store)
    (row,) = board.rows
    assert (row.family, row.unit) == ("filter", "filters")


def test_reference_rows_are_not_compared_with_a_control(tmp_path: Path) -> None:
    """The dense row and the control row carry no control pairing; a pruned row is paired with its seed's control."""
    store = Store(tmp_path / "r.db")
    add_job(store, "n", "none", 0.0, 0, linf(0.9, (0.3, 0.1)))
    add_job(store, "c", "ctl", 0.0, 0, linf(0.9, (0.35, 0.1)))
    add_job(store, "p", "p1", 0.5, 0, linf(0.9, (0.4, 0.1)))
    board = only_board(store)
    by_pruner = {r.pruner: r for r in board.rows}
    assert by_pruner["ctl"].control_jobs == {} and by_pruner["none"].control_jobs == {}
    assert {k: j.key for k, j in by_pruner["p1"].control_jobs.items()} == {"p": "c"}


def test_a_rows_jobs_are_in_seed_order(tmp_path: Path) -> None:
    """A row lists its jobs by seed (then key), whatever their keys."""
    store = Store(tmp_path / "r.db")
    add_job(store, "z-seed0", "p1", 0.5, 0, linf(0.9, (0.4, 0.1)))
    add_job(store, "a-seed1", "p1", 0.5, 1, linf(0.9, (0.4, 0.1)))
    board = only_board(store)
    assert [j.key for j in board.rows[0].jobs] == ["z-seed0", "a-seed1"]


def test_the_score_change_reads_worst_case_columns_only(tmp_path: Path) -> None:
    """delta_score pairs the mean worst case with the dense one; per-attack columns of other values do not enter it."""
    store = Store(tmp_path / "r.db")

    def job(worst: float, fgsm: float) -> list[Metric]:
        return [Metric("clean_acc", 0.9), Metric("worst_case_acc", worst, "linf", 0.1), Metric("robust_acc", fgsm, "fgsm", 0.1)]

    add_job(store, "n", "none", 0.0, 0, job(0.30, 0.50))
    add_job(store, "p", "p1", 0.5, 0, job(0.40, 0.90))
    board = only_board(store)
    p1 = next(r for r in board.rows if r.pruner == "p1")
    assert p1.delta_score is not None and p1.delta_score.mean == pytest.approx(0.10)
    assert p1.delta_robust[("fgsm", 0.1)].mean == pytest.approx(0.40)


def test_a_metric_stored_without_eps_makes_no_column(tmp_path: Path) -> None:
    """Robust and worst-case values recorded without an eps are not columns of the board."""
    store = Store(tmp_path / "r.db")
    add_job(store, "p", "p1", 0.5, 0, linf(0.9, (0.4, 0.1)) + [Metric("robust_acc", 0.3, "fgsm"), Metric("worst_case_acc", 0.3, "linf")])
    board = only_board(store)
    assert board.columns == [(WORST, 0.1), (WORST, 0.2), ("fgsm", 0.1), ("fgsm", 0.2)]


def test_only_an_older_protocol_marks_a_row_outdated() -> None:
    """A row whose oldest job ran under an older protocol is outdated; the current or a newer one is not."""

    def row(protocol: int) -> BoardRow:
        return BoardRow("a", "p", "p", "filter", 0.5, "s", [], protocol=protocol)

    assert row(PROTOCOL_VERSION - 1).outdated
    assert not row(PROTOCOL_VERSION).outdated and not row(PROTOCOL_VERSION + 1).outdated


# ---- bugs these tests found: paths read as URLs ----


@pytest.mark.parametrize("name", ["run#2", "what?", "a%41b"])
def test_a_database_in_a_folder_named_with_url_characters_is_that_file(name: str, tmp_path: Path) -> None:
    """A folder named 'run#2', 'what?' or 'a%41b' holds a database like any other: the writer writes that file, the
    reader reads it, and nothing is created beside the folder ('#' and '?' cut a URL, '%41' decodes to 'A')."""
    folder = tmp_path / name
    folder.mkdir()
    writer = Store(folder / "results.db")
    add_job(writer, "j", "p1", 0.5, 0, [Metric("clean_acc", 0.75)])
    writer.close()
    assert probe(folder / "results.db") == SCHEMA_VERSION
    reader = Store(folder / "results.db", readonly=True)
    with reader.session() as s:
        values = [(r.job_key, r.value) for r in result_rows(s)]
    reader.close()
    assert values == [("j", 0.75)] and siblings(tmp_path) == [name]


def test_a_database_failing_the_integrity_check_is_refused_in_one_line(tmp_path: Path) -> None:
    """`harness status` on a file that fails quick_check exits 2 with one line naming the file, like every other refusal."""
    from typer.testing import CliRunner

    from harness.cli.main import app

    db = tmp_path / "r.db"
    unused_page_db(db)
    res = CliRunner().invoke(app, ["status", "--db", str(db)])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2
    assert len(lines) == 1 and str(db) in lines[0] and "corrupt SQLite database" in lines[0], res.output
