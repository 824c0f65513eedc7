"""Store: transactional writes, one row per (job, metric), numbers as numbers, stale jobs reclaimed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from harness.api.metrics import Metric
from harness.store import Job, JobStatus, Result, Store
from harness.store.queries import job_records, result_rows, status_counts

FIELDS = dict(dataset="d", architecture="a", pruner="p", pruner_label="p", sparsity=0.5, seed=0, dense_key="dk", pruned_key="pk")


def test_complete_records_metrics_atomically(store: Store) -> None:
    run = store.start_run("g", "g.toml", 1, {"torch": "x"})
    store.claim("k1", run, FIELDS)
    assert status_counts_of(store) == {"pending": 0, "running": 1, "done": 0, "failed": 0, "interrupted": 0}
    metrics = [Metric("clean_acc", 0.9), Metric("robust_acc", 0.4, attack="fgsm", eps=0.1), Metric("robust_acc", 0.2, attack="fgsm", eps=0.2)]
    store.complete("k1", metrics, {"env": 1}, 1.5)
    with store.session() as s:
        rows = result_rows(s)
        assert [(r.metric, r.attack, r.eps, r.value) for r in rows] == [
            ("clean_acc", "", None, 0.9),
            ("robust_acc", "fgsm", 0.1, 0.4),
            ("robust_acc", "fgsm", 0.2, 0.2),
        ]
        assert all(isinstance(r.value, float) for r in rows)
    assert store.done_keys(["k1", "k2"]) == {"k1"}


def test_failed_write_leaves_nothing_half_done(store: Store) -> None:
    run = store.start_run("g", "g.toml", 1, {})
    store.claim("k1", run, FIELDS)
    dup = [Metric("clean_acc", 0.9), Metric("clean_acc", 0.8)]  # violates the unique (job, metric) row
    with pytest.raises(IntegrityError):
        store.complete("k1", dup, {}, 1.0)
    with store.session() as s:
        assert s.scalars(select(Result)).all() == []
        assert s.scalars(select(Job.status)).one() is JobStatus.running


def test_fail_keeps_traceback_and_rerun_succeeds(store: Store) -> None:
    run = store.start_run("g", "g.toml", 1, {})
    store.claim("k1", run, FIELDS)
    try:
        raise ValueError("boom")
    except ValueError as exc:
        store.fail("k1", exc)
    with store.session() as s:
        job = s.scalars(select(Job)).one()
        assert job.status is JobStatus.failed and "ValueError: boom" in (job.error or "")
    store.claim("k1", run, FIELDS)
    store.complete("k1", [Metric("clean_acc", 1.0)], {}, 1.0)
    with store.session() as s:
        job = s.scalars(select(Job)).one()
        assert job.status is JobStatus.done and job.error is None and job.attempts == 2


def test_stale_running_jobs_are_reset(store: Store) -> None:
    run = store.start_run("g", "g.toml", 1, {})
    store.claim("k1", run, FIELDS)
    assert store.reset_stale(timedelta(minutes=10)) == 0
    assert store.reset_stale(timedelta(seconds=-1)) == 1
    assert status_counts_of(store)["pending"] == 1


def status_counts_of(store: Store) -> dict[str, int]:
    with store.session() as s:
        return status_counts(s)


def test_run_in_flight_reports_progress_and_eta(store: Store) -> None:
    from harness.store.queries import runs_in_flight

    run = store.start_run("g", "g.toml", 4, {}, n_todo=4)
    store.heartbeat([], "me", run, n_done=1, n_failed=1)
    with store.session() as s:
        (flight,) = runs_in_flight(s)
    assert (flight.done, flight.failed, flight.todo) == (1, 1, 4)
    assert flight.eta_s is not None and flight.eta_s >= 0
    store.finish_run(run, 4, 0, 0)
    with store.session() as s:
        assert runs_in_flight(s) == []


def test_status_folds_cut_short_runs_into_the_rerun_that_took_them_over(tmp_path: Path) -> None:
    """A study spread over sessions leaves one stale run per session: `harness status` names the rerun that resumed
    them instead of asking, run by run, for a rerun that already happened; a stale run with no rerun still asks, and a
    live run beside a later one (two drivers sharing the database) is in flight, not taken over."""
    from datetime import datetime, timezone

    from sqlalchemy import update
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.store.models import Run
    from harness.store.queries import runs_in_flight

    db = tmp_path / "r.db"
    store = Store(db)
    first, live, second, other, latest = (store.start_run(g, f"{g}.toml", 2, {}, n_todo=2) for g in ("g", "g", "g", "h", "g"))
    long_ago = datetime(2020, 1, 1, tzinfo=timezone.utc)
    with store.session() as s:
        s.execute(update(Run).where(Run.id.in_([first, second, other])).values(heartbeat_at=long_ago))
        flight = {r.run_id: r for r in runs_in_flight(s)}
    store.close()
    assert [flight[i].resumed_by for i in (first, live, second, other, latest)] == [latest, None, latest, None, None]
    assert flight[other].stale_s is not None and flight[latest].stale_s is None

    out = CliRunner().invoke(app, ["status", "--db", str(db)], env={"COLUMNS": "200"}).output
    assert f"runs {first}, {second} (g) were cut short; run {latest}, the latest of that grid, took over their unfinished jobs." in out
    assert f"run {other} (h) stale (no heartbeat for" in out
    assert f"run {live} (g) in flight" in out and f"run {latest} (g) in flight" in out
    assert f"run {first} (g) stale" not in out and f"run {second} (g) stale" not in out


def test_a_resumed_run_estimates_its_time_from_the_grids_earlier_runs(tmp_path: Path) -> None:
    """Before its first job finishes, a rerun's ETA comes from its grid's earlier runs (wall seconds per job); another
    grid's pace is not borrowed, and once a job finishes the run's own pace takes over."""
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import update
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.store.models import Run
    from harness.store.queries import runs_in_flight

    db = tmp_path / "r.db"
    store = Store(db)
    earlier = store.start_run("g", "g.toml", 10, {}, n_todo=10)
    start = datetime.now(timezone.utc) - timedelta(hours=2)
    with store.session() as s:  # 4 jobs in 4,000 s: 1,000 s per job
        s.execute(update(Run).where(Run.id == earlier).values(started_at=start, heartbeat_at=start + timedelta(seconds=4000), n_done=4))
    resumed, other = store.start_run("g", "g.toml", 6, {}, n_todo=6), store.start_run("h", "h.toml", 6, {}, n_todo=6)
    with store.session() as s:
        flight = {r.run_id: r for r in runs_in_flight(s)}
    assert flight[resumed].eta_s == pytest.approx(6000, abs=60) and flight[other].eta_s is None
    out = CliRunner().invoke(app, ["status", "--db", str(db)]).output
    assert f"run {resumed} (g) in flight: 0 done, 0 failed of 6;" in out and "ETA 1.7 h at the pace of this grid's earlier runs" in out
    store.heartbeat([], "me", resumed, n_done=1)
    with store.session() as s:
        own = {r.run_id: r for r in runs_in_flight(s)}[resumed].eta_s
    store.close()
    assert own is not None and own < 60  # a job finished within a second: 5 more at that pace


def test_forget_pending_drops_only_never_started_jobs_of_that_run(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from harness.cli import app
    from tests.test_boards import add_job, job_params, linf

    db = tmp_path / "r.db"
    store = Store(db)
    old = store.start_run("g", "grids/g.toml", 3, {})
    fields = {"dataset": "d", "architecture": "a", "pruner": "p1", "pruner_label": "p1", "sparsity": 0.5, "dense_key": "dk",
              "pruned_key": "pk"}
    store.add_jobs(old, [(f"stale{i}", fields | {"seed": i, "params": job_params("d", "a", i, "p1", 0.5)}) for i in range(3)])
    assert store.try_claim("stale2", old, "me", timedelta(minutes=10))  # started once, then abandoned: pending again,
    assert store.reset_stale(timedelta(seconds=-1)) == 1  # but it keeps its history
    new = store.start_run("g", "grids/g.toml", 1, {})
    store.add_jobs(new, [("fresh", fields | {"seed": 9, "params": job_params("d", "a", 9, "p1", 0.5)})])
    add_job(store, "done0", "p1", 0.5, 0, linf(0.9, (0.5, 0.4)))
    store.close()

    res = CliRunner().invoke(app, ["db", "forget-pending", "--run", str(old), "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "forgot 2 never-started jobs" in res.output
    with Store(db, readonly=True).session() as s:
        assert sorted(s.scalars(select(Job.key))) == ["done0", "fresh", "stale2"]
        assert [j.key for j in job_records(s)] == ["done0"] and job_records(s)[0].metrics

    bad = CliRunner().invoke(app, ["db", "forget-pending", "--run", "99", "--db", str(db)])
    assert bad.exit_code != 0 and "has no run 99" in bad.output and len(bad.output.strip().splitlines()) == 1
