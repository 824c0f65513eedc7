"""Scheduler: worker processes, failures and timeouts isolated, reruns retry only failures, SIGKILL-safe, concurrent runs."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from harness.engine.grid import parse_grid
from harness.scheduling.dag import build_dag
from harness.scheduling.ray import RayExecutor
from harness.scheduling.runner import RunOptions, run
from harness.scheduling.worker import WorkerConfig
from tests.conftest import TIMING, TINY_GRID
from tests.test_reliability import Reference, make_reference

FLAKY_PLUGINS = '''
import time
from pathlib import Path
from torch import Tensor
from harness import register_pruner
from harness.pruning import ScoredFilterPruner

@register_pruner("boom_filter")
class Boom(ScoredFilterPruner):
    """Raises while scoring (a buggy criterion)."""

    def score(self, weight: Tensor) -> Tensor:
        raise ValueError("boom: criterion crashed")

@register_pruner("hang_filter")
class Hang(ScoredFilterPruner):
    """Hangs while a marker file exists."""

    def score(self, weight: Tensor) -> Tensor:
        while Path(MARKER).exists():
            time.sleep(0.2)
        return weight.abs().flatten(1).sum(1)
'''


def rows(db: Path) -> dict[tuple, float]:
    """(job key, metric, attack, eps) -> value for done jobs, timing metrics left out."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out = {
        (k, m, a, e): v
        for k, m, a, e, v in con.execute(
            "select j.key, r.metric, r.attack, r.eps, r.value from results r join jobs j on j.id = r.job_id where j.status = 'done'"
        )
        if not any(t in m for t in TIMING)
    }
    con.close()
    return out


def states(db: Path) -> dict[str, tuple[str, int, str | None]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    out = {p: (s, a, e) for p, s, a, e in con.execute("select pruner, status, attempts, error from jobs")}
    con.close()
    return out


def test_dag_shares_dense_and_orders_stages(tmp_path: Path) -> None:
    import tomllib

    raw = tomllib.loads(TINY_GRID)
    raw["pruners"] = ["none", "l1_filter", "random_filter"]
    jobs = parse_grid(raw).jobs
    tasks = build_dag(jobs, tmp_path)
    stages = sorted(t.stage for t in tasks.values())
    assert stages == ["dense", "eval", "eval", "eval", "pruned", "pruned"]
    dense = next(t for t in tasks.values() if t.stage == "dense")
    assert all(dense.id in t.deps for t in tasks.values() if t.stage == "pruned")
    # Cached artifacts drop their tasks.
    (tmp_path / "dense").mkdir()
    (tmp_path / "dense" / f"{jobs[0].dense_key}.pt").write_bytes(b"")
    assert not [t for t in build_dag(jobs, tmp_path).values() if t.stage == "dense"]


def test_tasks_run_row_by_row_references_first_seeds_innermost(tmp_path: Path) -> None:
    import tomllib

    raw = tomllib.loads(TINY_GRID)
    raw["pruners"], raw["sparsities"], raw["seeds"] = ["l1_filter", "none"], [0.3, 0.5], [0, 1]
    jobs = parse_grid(raw).jobs
    tasks = build_dag(jobs, tmp_path)
    ranked = [(t.stage, t.job.pruner.name, t.job.sparsity, t.job.seed) for t in sorted(tasks.values(), key=lambda t: t.priority)]
    # Dense models first (every job needs one), then row by row, the reference row first, each row's seeds in turn
    # and each job's stages before the next job's: a run cut short leaves finished rows with every seed.
    assert ranked == [
        ("dense", "none", 0.0, 0), ("dense", "none", 0.0, 1),
        ("eval", "none", 0.0, 0), ("eval", "none", 0.0, 1),
        ("pruned", "l1_filter", 0.3, 0), ("eval", "l1_filter", 0.3, 0), ("pruned", "l1_filter", 0.3, 1), ("eval", "l1_filter", 0.3, 1),
        ("pruned", "l1_filter", 0.5, 0), ("eval", "l1_filter", 0.5, 0), ("pruned", "l1_filter", 0.5, 1), ("eval", "l1_filter", 0.5, 1),
    ]


def test_failures_and_timeouts_are_isolated_and_rerun_retries_only_them(tmp_path: Path) -> None:
    marker = tmp_path / "hang.marker"
    marker.write_text("")
    plugin = tmp_path / "flaky.py"
    plugin.write_text(FLAKY_PLUGINS.replace("MARKER", repr(str(marker))))
    grid = tmp_path / "g.toml"
    grid.write_text(TINY_GRID.replace('pruners = ["none", "l1_filter"]', 'pruners = ["none", "l1_filter", "boom_filter", "hang_filter"]'))
    stubs = {"boom_filter": {"family": "filter"}, "hang_filter": {"family": "filter"}}
    # Run the healthy jobs first, so the time limit below meets only the crashing and the hanging job: on a loaded
    # machine, fine-tuning a healthy job could outlast any fixed limit and fail for the wrong reason.
    warm = tmp_path / "warm.toml"
    warm.write_text(TINY_GRID)
    run(RunOptions(grid=str(warm), db=tmp_path / "r.db", site_dir=None, device="cpu", workers=1))
    opts = RunOptions(grid=str(grid), db=tmp_path / "r.db", site_dir=None, device="cpu", workers=1,
                      timeout_s=45, plugin_files=[plugin], pruner_stubs=stubs)
    first = run(opts)
    assert first.cached == 2 and first.done == 0 and len(first.failed) == 2
    st = states(tmp_path / "r.db")
    assert st["none"][0] == st["l1_filter"][0] == "done"
    assert st["boom_filter"][0] == "failed" and "ValueError: boom: criterion crashed" in (st["boom_filter"][2] or "")
    assert st["hang_filter"][0] == "failed" and "timed out after 45 s" in (st["hang_filter"][2] or "")
    marker.unlink()  # the hanging plugin now finishes; no limit this time, so load cannot fail it
    second = run(replace(opts, timeout_s=None))
    assert second.cached == 2 and second.done == 1 and len(second.failed) == 1
    assert "ValueError: boom" in second.failed[0][1]
    st2 = states(tmp_path / "r.db")
    assert st2["none"][1] == st["none"][1] == 1 and st2["l1_filter"][1] == 1  # not rerun
    assert st2["hang_filter"][0] == "done" and st2["boom_filter"][0] == "failed"


def test_submission_stand_ins_last_only_as_long_as_their_run(tmp_path: Path) -> None:
    """A driver-side stub validates its run's grid, then leaves the registry as it found it."""
    from harness.api.plugins import pruners

    grid = tmp_path / "g.toml"
    grid.write_text(TINY_GRID.replace('pruners = ["none", "l1_filter"]', 'pruners = ["none", "stub_only_filter"]'))
    opts = RunOptions(grid=str(grid), db=tmp_path / "r.db", site_dir=None, device="cpu", workers=1, dry_run=True,
                      pruner_stubs={"stub_only_filter": {"family": "filter"}, "l1_filter": {"family": "filter"}})
    summary = run(opts)
    assert summary.total == 2 and summary.planned["eval"] == 2  # the stub's row validated and was planned
    # Left registered, it would pass for a shipped pruner in later runs (and tests) of this process.
    assert "stub_only_filter" not in pruners
    assert "l1_filter" in pruners  # a name that was already registered is not the stub's to remove
    with pytest.raises(Exception, match="stub_only_filter"):
        run(RunOptions(grid=str(grid), db=tmp_path / "r.db", site_dir=None, device="cpu", workers=1, dry_run=True))


def _harness(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", "run", *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _three_job_grid(tmp_path: Path) -> Path:
    grid = tmp_path / "g.toml"
    grid.write_text(TINY_GRID.replace('pruners = ["none", "l1_filter"]', 'pruners = ["none", "l1_filter", "random_filter"]'))
    return grid


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """An uninterrupted run of the three-job grid."""
    return make_reference(tmp_path_factory)


def test_sigkill_mid_grid_then_rerun_equals_uninterrupted(reference: Reference, tmp_path: Path) -> None:
    """SIGKILL while a job is held running (so the kill always lands mid-grid): `harness status` calls the run stale, the rerun finishes it."""
    from typer.testing import CliRunner

    from harness.cli.main import app
    from tests.test_reliability import (
        harness_run,
        job_states,
        result_rows,
        stop_mid_grid,
    )

    db = tmp_path / "killed.db"
    proc, _, workers = stop_mid_grid(reference, db, signal.SIGKILL, tmp_path)
    assert proc.returncode == -signal.SIGKILL
    st = job_states(db)
    assert st["random_filter"][0] == "running" and [s for s, _ in st.values()].count("done") == 2
    status = CliRunner().invoke(app, ["status", "--db", str(db)])
    assert status.exit_code == 0 and "stale (no heartbeat for" in status.output and "in flight" not in status.output, status.output
    args = ["--grid", str(reference.grid), "--device", "cpu", "--db", str(db), "--cache-dir", str(reference.cache), "--site-dir", str(tmp_path / "site")]
    again = harness_run(args, tmp_path)
    _, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr[-2000:]
    assert {s for s, _ in job_states(db).values()} == {"done"}
    assert result_rows(db) == result_rows(reference.db)


def test_a_database_another_run_is_creating_counts_as_empty(tmp_path: Path) -> None:
    from harness.scheduling.runner import _done_keys
    from harness.store.schema import DatabaseFileError, check_run_target

    # What a concurrent `harness run` sees while another one creates the file: no table yet, then tables but no
    # version row. Nothing in it is done, and it is not another program's database.
    blank = tmp_path / "blank.db"
    sqlite3.connect(blank).execute("pragma user_version = 1").connection.commit()
    assert blank.stat().st_size > 0 and _done_keys(blank, ["k"]) == set()
    check_run_target(blank)  # the check before the grid is read lets it through too
    sqlite3.connect(blank).execute("create table meta (key text, value text)").connection.commit()
    assert _done_keys(blank, ["k"]) == set()
    check_run_target(blank)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("create table users (id integer)").connection.commit()
    for check in (lambda: _done_keys(other, ["k"]), lambda: check_run_target(other)):
        with pytest.raises(DatabaseFileError, match="another program"):  # a foreign file is still refused
            check()


def test_two_concurrent_runs_share_the_work(tmp_path: Path) -> None:
    grid = _three_job_grid(tmp_path)
    db = tmp_path / "shared.db"
    args = ["--grid", str(grid), "--device", "cpu", "--db", str(db), "--site-dir", str(tmp_path / "site")]
    a, b = _harness(args, tmp_path), _harness(args, tmp_path)
    # communicate(), not wait(): a full stderr pipe would block the child; the message shows why a run failed.
    errs = [p.communicate(timeout=600)[1] for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, [e[-2000:] for e in errs]
    st = states(db)
    assert {s for s, _, _ in st.values()} == {"done"} and len(st) == 3
    assert all(attempts == 1 for _, attempts, _ in st.values())  # nobody ran a job twice
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    dup = con.execute("select count(*) from (select job_id, metric, attack, eps from results group by 1,2,3,4 having count(*) > 1)")
    assert dup.fetchone()[0] == 0
    con.close()


@pytest.mark.skipif(os.environ.get("HARNESS_SKIP_INLINE") == "1", reason="inline executor check disabled")
def test_inline_and_worker_executors_agree(tmp_path: Path) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text(TINY_GRID.replace('pruners = ["none", "l1_filter"]', 'pruners = ["none"]'))
    for workers, name in ((0, "inline"), (1, "worker")):
        run(RunOptions(grid=str(grid), db=tmp_path / f"{name}.db", cache_dir=tmp_path / f"{name}-cache", site_dir=None, device="cpu", workers=workers))
    inline, worker = rows(tmp_path / "inline.db"), rows(tmp_path / "worker.db")
    assert inline and inline == worker


@contextmanager
def deadline(seconds: int, what: str) -> Iterator[None]:
    """Fail with a clear message, instead of hanging the suite, if the block runs longer than `seconds`."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"{what} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_ray_executor_matches_local(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'harness[ray]'")
    grid = tmp_path / "g.toml"
    grid.write_text(TINY_GRID)
    for executor in ("local", "ray"):
        # The tiny grid takes well under a minute either way; a stall (e.g. starved Ray workers) must fail, not hang.
        with deadline(900, f"the tiny grid on the {executor} executor"):
            run(RunOptions(grid=str(grid), db=tmp_path / f"{executor}.db", cache_dir=tmp_path / f"{executor}-cache",
                           site_dir=None, device="cpu", workers=2, executor=executor, timeout_s=600))
    local, ray_rows = rows(tmp_path / "local.db"), rows(tmp_path / "ray.db")
    assert local and local == ray_rows


def test_local_ray_workers_run_at_the_drivers_priority(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'harness[ray]'")
    # Ray's default worker niceness (15) starves harness tasks whenever anything else uses the cores.
    executor = RayExecutor([WorkerConfig("cpu", 1, tmp_path / "cache", None)])
    with deadline(300, "starting a local Ray"):
        executor.start()
        try:
            worker_niceness = ray.get(ray.remote(num_cpus=1)(lambda: os.nice(0)).remote())
        finally:
            executor.shutdown()
    assert worker_niceness == os.nice(0)


def test_each_stub_names_its_own_submission_when_run_in_the_driver() -> None:
    from harness.api.errors import HarnessError
    from harness.api.plugins import pruners
    from harness.scheduling.stubs import register_stubs, unregister_stubs

    names = register_stubs({"first_stub_filter": {"family": "filter"}, "second_stub_filter": {"family": "layer"}})
    try:
        assert names == ["first_stub_filter", "second_stub_filter"]
        assert pruners.get("second_stub_filter").obj.family == "layer"
        for name in names:
            with pytest.raises(HarnessError, match=f"pruner '{name}' is a submission"):
                pruners.get(name).obj().prune(None, 0.5, None)  # type: ignore[arg-type]
    finally:
        unregister_stubs(names)
