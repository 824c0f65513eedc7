"""End to end: a tiny grid through train -> prune -> fine-tune -> attack -> store -> site, and the CLI's errors."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli.main import app
from harness.scheduling.runner import RunOptions, run
from harness.store import Store
from harness.store.queries import job_records, result_rows

runner = CliRunner()


def values(db: Path) -> dict[tuple[str, str, str, float | None], float]:
    with Store(db, create=False).session() as s:
        return {(r.pruner, r.metric, r.attack, r.eps): r.value for r in result_rows(s)}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.conftest import TINY_GRID

    root = tmp_path_factory.mktemp("run")
    grid = root / "tiny.toml"
    grid.write_text(TINY_GRID)
    result = runner.invoke(app, ["run", "--grid", str(grid), "--db", str(root / "results.db"), "--site-dir", str(root / "site"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    (root / "cli.log").write_text(result.output)
    return root, grid


def test_grid_runs_end_to_end(tiny_run: tuple[Path, Path]) -> None:
    root, _ = tiny_run
    v = values(root / "results.db")
    for pruner in ("none", "l1_filter"):
        assert v[(pruner, "clean_acc", "", None)] > 0.5  # learned: chance is 0.1
        # Attacks lower accuracy, and PGD (iterative) is at least as strong as FGSM here.
        assert v[(pruner, "robust_acc", "pgd_linf", 0.1)] < v[(pruner, "clean_acc_eval", "", None)]
    # The worst case read back from the store is the per-example AND of the attacks' stored outcomes, example by example.
    with Store(root / "results.db", create=False).session() as s:
        for rec in job_records(s):
            worst = rec.outcomes[("worst_case_acc", "linf", 0.1)]
            both = rec.outcomes[("robust_acc", "fgsm", 0.1)] & rec.outcomes[("robust_acc", "pgd_linf", 0.1)]
            assert len(worst) == 100 and worst.tolist() == both.tolist()
            assert rec.get("worst_case_acc", "linf", 0.1) == pytest.approx(worst.mean())
    # Structured pruning really removed parameters and MACs; the baseline did not.
    assert v[("l1_filter", "params_ratio", "", None)] < 0.6
    assert v[("l1_filter", "macs_ratio", "", None)] < 0.6
    assert v[("none", "params_ratio", "", None)] == 1.0
    assert abs(v[("l1_filter", "sparsity_achieved", "", None)] - 0.5) < 0.05
    index = (root / "site" / "index.html").read_text()
    assert "l1_filter" in index and "digits" in index
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', index)  # nothing fetched from elsewhere
    assert json.loads((root / "site" / "results.json").read_text())


def test_a_run_off_a_terminal_logs_a_dated_line_per_job(tiny_run: tuple[Path, Path]) -> None:
    """Under nohup or a batch system the progress bar draws nothing: each job's start and end is a line of the log."""
    root, _ = tiny_run
    lines = [ln for ln in (root / "cli.log").read_text().splitlines() if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (start|done) ", ln)]
    assert sorted(ln.split(" ", 2)[2].split(" ")[0] for ln in lines) == ["done", "done", "start", "start"]
    assert {ln.split(" ")[-1] for ln in lines} == {"digits/small_cnn/none@0/s0", "digits/small_cnn/l1_filter@0.5/s0"}
    assert [ln.split(" ")[3] for ln in lines if " done " in ln] == ["1/2", "2/2"]


def test_rerun_recomputes_nothing(tiny_run: tuple[Path, Path]) -> None:
    root, grid = tiny_run
    db = root / "results.db"
    before = values(db)
    summary = run(RunOptions(grid=str(grid), db=db, site_dir=None, device="cpu"))
    assert (summary.done, summary.cached, summary.failed) == (0, 2, [])
    assert values(db) == before


def test_fresh_recomputes_finished_jobs_and_replaces_their_results(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    """--fresh reruns the finished jobs itself: before, it retrained the models and counted the old results as done by others."""
    root, grid = tiny_run
    db = tmp_path / "results.db"
    shutil.copy(root / "results.db", db)
    with Store(db, create=False).session() as s:
        before = {r.key: r.run_id for r in job_records(s)}
    summary = run(RunOptions(grid=str(grid), db=db, site_dir=None, device="cpu", cache_dir=tmp_path / "cache", fresh=True))
    assert (summary.done, summary.cached, summary.by_others, summary.failed) == (2, 0, 0, [])
    with Store(db, create=False).session() as s:
        after = {r.key: r.run_id for r in job_records(s)}
    assert after.keys() == before.keys() and all(after[k] > before[k] for k in before)  # each result is the new run's
    assert values(db).keys() == values(root / "results.db").keys()  # replaced, not added beside the old ones


def test_dry_run_says_what_a_run_would_compute_and_writes_nothing(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    root, grid = tiny_run
    fresh_db = tmp_path / "new.db"
    out = runner.invoke(app, ["run", "--grid", str(grid), "--db", str(fresh_db), "--site-dir", str(tmp_path / "site"), "--device", "cpu", "--dry-run"])
    assert out.exit_code == 0, out.output
    # Two jobs (none, l1_filter) on one seed: one dense model, one pruned model, two evaluations; the cache is new.
    assert "2 jobs, 0 already done" in out.output and "train 1 dense models, make 1 pruned models" in out.output
    assert "evaluate 2 jobs" in out.output
    assert not fresh_db.exists() and not (tmp_path / "site").exists() and not (tmp_path / ".harness").exists()
    db = root / "results.db"
    before = db.read_bytes()
    done = runner.invoke(app, ["run", "--grid", str(grid), "--db", str(db), "--site-dir", str(tmp_path / "site"), "--device", "cpu", "--dry-run"])
    assert done.exit_code == 0 and "2 jobs, 2 already done" in done.output and "evaluate 0 jobs" in done.output
    assert db.read_bytes() == before
    bad = runner.invoke(app, ["run", "--grid", str(tmp_path / "missing.toml"), "--db", str(fresh_db), "--dry-run"])
    assert bad.exit_code != 0 and not fresh_db.exists()


def test_provenance_recorded(tiny_run: tuple[Path, Path]) -> None:
    root, _ = tiny_run
    from sqlalchemy import select

    from harness.store import Job

    with Store(root / "results.db", create=False).session() as s:
        job = s.scalars(select(Job).where(Job.pruner == "l1_filter")).one()
        prov = job.provenance
    env = prov["environment"]
    assert env["torch"] and env["device"] == "cpu" and env["harness"]
    src = prov["plugins"]["pruner"]
    assert src["sha256"] == hashlib.sha256(Path(src["source"]).read_bytes()).hexdigest()
    assert job.params["pruned"]["sparsity"] == 0.5


def test_dense_model_trained_once(tmp_path: Path, tiny_grid: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.engine.pipeline as pipeline

    calls: list[int] = []
    real = pipeline.train
    monkeypatch.setattr(pipeline, "train", lambda *a, **k: calls.append(1) or real(*a, **k))
    # Inline executor (workers=0): the patched function must be the one the tasks call.
    summary = run(RunOptions(grid=str(tiny_grid), db=tmp_path / "r.db", site_dir=None, device="cpu", workers=0))
    assert summary.failed == []
    # One dense training + one fine-tune of the single pruned model.
    assert len(calls) == 2


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--grid", "nonexistent"], "Unknown grid 'nonexistent'"),
        (["--grid", "BADPRUNER"], "Unknown pruner 'l1_filtr'"),
        (["--grid", "CIFAR", "--data-dir", "/nowhere/at/all"], "cifar10: not found"),
        (["--device", "tpu"], "Unknown device 'tpu'"),
    ],
)
def test_bad_input_exits_nonzero_and_keeps_db(tiny_run: tuple[Path, Path], tmp_path: Path, args: list[str], needle: str) -> None:
    root, grid = tiny_run
    db = tmp_path / "results.db"
    db.write_bytes((root / "results.db").read_bytes())
    before = digest(db)
    text = grid.read_text()
    bad = tmp_path / "bad.toml"
    if "BADPRUNER" in args:
        bad.write_text(text.replace('"l1_filter"', '"l1_filtr"'))
    elif "CIFAR" in args:
        bad.write_text(text.replace('datasets = ["digits"]', 'datasets = ["cifar10"]'))
    args = [str(bad) if a in ("BADPRUNER", "CIFAR") else a for a in args]
    if "--grid" not in args:
        args += ["--grid", str(grid)]
    result = runner.invoke(app, ["run", *args, "--db", str(db), "--site-dir", str(tmp_path / "site")])
    assert result.exit_code != 0
    assert needle in result.output
    assert digest(db) == before


def test_list_status_results_site(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = tiny_run
    db = str(root / "results.db")
    out = runner.invoke(app, ["list", "pruners", "--json"])
    assert out.exit_code == 0 and {"none", "l1_filter"} <= {p["name"] for p in json.loads(out.output)}
    for kind in ("architectures", "attacks", "datasets", "grids"):
        assert runner.invoke(app, ["list", kind]).exit_code == 0
    st = runner.invoke(app, ["status", "--db", db])
    assert st.exit_code == 0 and "done" in st.output
    rows = json.loads(runner.invoke(app, ["results", "--db", db, "--format", "json"]).output)
    assert {"clean_acc", "robust_acc", "params"} <= {r["metric"] for r in rows}
    csv_out = runner.invoke(app, ["results", "--db", db, "--format", "csv"]).output
    assert csv_out.splitlines()[0].startswith("job_key,dataset")
    site = runner.invoke(app, ["site", "--db", db, "--site-dir", str(tmp_path / "s")])
    assert site.exit_code == 0 and (tmp_path / "s" / "index.html").exists()
    missing = runner.invoke(app, ["status", "--db", str(tmp_path / "none.db")])
    assert missing.exit_code == 1 and "No results database" in missing.output
    assert not (tmp_path / "none.db").exists()


def test_sanity_checks_run_inside_a_grid(tmp_path: Path, digits: object) -> None:
    """With sanity_examples > 0 a grid job records the sanity flags, including the convergence check of its PGD."""
    import tomllib
    import torch

    from harness.engine.artifacts import ArtifactCache
    from harness.engine.grid import parse_grid
    from harness.engine.pipeline import execute
    from tests.conftest import TINY_GRID

    raw = tomllib.loads(TINY_GRID.replace("sanity_examples = 0", "sanity_examples = 16"))
    job = next(j for j in parse_grid(raw).jobs if j.pruner.name == "none")
    metrics, _ = execute(job, digits, ArtifactCache(tmp_path / "artifacts"), torch.device("cpu"))  # type: ignore[arg-type]
    flags = {(m.metric, m.attack): m.value for m in metrics if m.metric.startswith("flag_")}
    for key in [("flag_not_converged", "pgd_linf"), ("flag_zero_gradients", ""), ("flag_unbounded_eps", "pgd_linf"), ("flag_gradient_masking", "")]:
        assert flags[key] in (0.0, 1.0), key
