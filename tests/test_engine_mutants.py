"""Tests written against surviving mutants of published models, the zoo, provenance, job comparison and `harness db`.

Every expected value is known by construction: hand-made cache entries, state dicts, job records and databases,
with no dataset beyond the session's digits fixture, no GPU and no network.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from sqlalchemy import select, update
from torch import nn
from typer.testing import CliRunner

from harness.api.config import JobSpec, for_device
from harness.api.data import ImageData
from harness.api.errors import CheckpointError, HarnessError
from harness.api.nets import Normalized
from harness.api.plugins import architectures
from harness.cli.main import app
from harness.engine import provenance, published, zoo
from harness.engine.artifacts import ArtifactCache
from harness.engine.checkpoints import sha256_file
from harness.engine.grid import load_grid
from harness.store.compare import comparable, compare_jobs, find_job
from harness.store.models import Job, JobStatus, Outcome, Result, Run, Submission
from harness.store.queries import JobRecord
from harness.store.session import Store
from tests.test_boards import add_job, job_params, linf
from tests.test_store_mutants import submission

CPU = torch.device("cpu")

# ---- helpers ----


def grid_job(tiny_grid: Path) -> JobSpec:
    """The first job of the tiny test grid, for the CPU."""
    return for_device(load_grid(str(tiny_grid)).jobs[0], "cpu")


E1, E2 = 1 / 255, 2 / 255


def record(key: str, dataset: str = "d", n_examples: int = 20, protocol: int | None = None,
           accs: dict[tuple[str, str, float | None], list[bool]] | None = None) -> JobRecord:
    """A done job record: what decides whether two jobs attacked the same images, and accuracies with their outcomes."""
    params: dict[str, Any] = {"eval": {"n_examples": n_examples}} | ({"protocol": protocol} if protocol is not None else {})
    accs = accs or {}
    return JobRecord(key=key, dataset=dataset, architecture="a", pruner="none", pruner_label="none", sparsity=0.0, seed=0, dense_key="dk",
                     params=params, provenance={}, duration_s=None, started_at=None, finished_at=None, attempts=1, run_id=1,
                     metrics={k: sum(v) / len(v) for k, v in accs.items()}, outcomes={k: np.array(v, dtype=bool) for k, v in accs.items()})


def scrub_cli(db: Path) -> str:
    """Run `harness db scrub` on `db`; its output (the command must succeed)."""
    res = CliRunner().invoke(app, ["db", "scrub", "--db", str(db)])
    assert res.exit_code == 0, res.output
    return res.output


# ---- harness/engine/published.py ----


def test_publish_then_find_carries_the_training_metadata(tiny_grid: Path, tmp_path: Path) -> None:
    """publish() keeps exactly the META_KEYS of the cached metadata, and find(root=...) returns them with the file."""
    job = grid_job(tiny_grid)
    meta = {"train_seconds": 2.0, "train_loss": 0.5, "train_img_per_s": 100.0, "params": 1234, "host": "/home/me"}
    ArtifactCache(tmp_path / "run" / "artifacts").save("dense", job.dense_key, nn.Linear(2, 2), meta)
    folder = tmp_path / "pub" / "a-d"
    sha = published.publish(tmp_path / "run", job, folder)
    entry = json.loads((folder / "keys.json").read_text())[job.dense_key]
    want = {"train_seconds": 2.0, "train_loss": 0.5, "train_img_per_s": 100.0, "params": 1234}
    assert entry == {"file": "seed0.pt", "sha256": sha, "seed": 0, "meta": want}
    found = published.find(job.dense_key, root=tmp_path / "pub")
    assert found == published.Published(folder / "seed0.pt", sha, want)
    assert published.find("no-such-key", root=tmp_path / "pub") is None


def test_restore_names_its_file_relative_to_the_repository(digits: ImageData, tiny_grid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restored model's `restored_from` is the repository-relative path, never the machine's absolute one."""
    job = grid_job(tiny_grid)
    torch.manual_seed(0)
    net = Normalized(architectures.get(job.architecture).obj(num_classes=digits.num_classes, in_channels=digits.in_channels), digits.mean, digits.std)
    path = tmp_path / "checkpoints" / "a-d" / "seed0.pt"
    path.parent.mkdir(parents=True)
    torch.save(net.state_dict(), path)
    monkeypatch.setattr(published, "REPO", tmp_path)
    model, meta = published.restore(job, digits, CPU, published.Published(path, sha256_file(path), {"train_seconds": 3.0}))
    assert meta == {"train_seconds": 3.0, "restored_from": str(Path("checkpoints") / "a-d" / "seed0.pt")}
    for (name, a), b in zip(model.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), name


def test_publish_grid_leaves_out_models_trained_elsewhere(tiny_grid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job whose dense model came from `[train] checkpoint` is not republished: only the grid's own training is."""
    job = grid_job(tiny_grid)
    given = dataclasses.replace(job, train=dataclasses.replace(job.train, checkpoint="/x/model.pt"), checkpoint_sha256="ab" * 32)
    cache = ArtifactCache(tmp_path / "run" / "artifacts")
    for j in (given, job):
        cache.save("dense", j.dense_key, nn.Linear(2, 2), {})
    monkeypatch.setattr(published, "load_grid", lambda grid: SimpleNamespace(jobs=[given, job]))
    out = published.publish_grid("g", tmp_path / "run", tmp_path / "pub")
    folder = tmp_path / "pub" / f"{job.architecture}-{job.dataset}"
    assert [p for p, _ in out] == [folder / "seed0.pt"]
    assert list(json.loads((folder / "keys.json").read_text())) == [job.dense_key]


# ---- harness/engine/zoo.py ----


@pytest.mark.parametrize("spec", ["robustbench:cifar10/Linf/Standard/extra", "robustbench:cifar10//Standard", "robustbench:/Linf/Standard"])
def test_zoo_spec_needs_three_nonempty_parts(spec: str) -> None:
    """A zoo spec is exactly DATASET/THREAT/NAME, none of them empty; anything else is one clear error."""
    with pytest.raises(CheckpointError, match="write robustbench:DATASET/THREAT/NAME"):
        zoo.parse(spec)


def test_zoo_spec_parts_in_order(tmp_path: Path) -> None:
    """parse() gives (dataset, threat, name), and the weights are looked for at DIR/dataset/threat/name.pt."""
    assert zoo.parse("robustbench:cifar10/Linf/Standard") == ("cifar10", "Linf", "Standard")
    path = tmp_path / "cifar10" / "Linf" / "Standard.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    assert zoo.model_file("robustbench:cifar10/Linf/Standard", str(tmp_path)) == path
    with pytest.raises(CheckpointError, match="Other.pt not found; download it once"):
        zoo.model_file("robustbench:cifar10/Linf/Other", str(tmp_path))


def test_copy_weights_copies_values_and_refuses_extra_tensors() -> None:
    """Weights land in the target in order; a zoo net with more tensors than the target is refused by count."""
    torch.manual_seed(0)
    src, dst = nn.Linear(3, 2), nn.Linear(3, 2)
    zoo.copy_weights(src, dst, "zoo", "lin")
    assert torch.equal(dst.weight, src.weight) and torch.equal(dst.bias, src.bias)
    with pytest.raises(CheckpointError, match=r"is not architecture 'lin' \(4 tensors vs 2\)"):
        zoo.copy_weights(nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2)), nn.Linear(3, 2), "zoo", "lin")


# ---- harness/engine/provenance.py ----


def fake_git(monkeypatch: pytest.MonkeyPatch, head_rc: int, porcelain: str) -> list[list[str]]:
    """Replace git with canned answers (HEAD 'abc', `status` printing `porcelain`); the commands it was asked."""
    calls: list[list[str]] = []

    def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        out = "abc\n" if "rev-parse" in cmd else porcelain
        return subprocess.CompletedProcess(cmd, head_rc if "rev-parse" in cmd else 0, out, "")

    monkeypatch.setattr(provenance.subprocess, "run", run)
    provenance.git_commit.cache_clear()
    return calls


@pytest.mark.parametrize(("rc", "porcelain", "want"), [(0, "", "abc"), (0, " M harness/x.py\n", "abc-dirty"), (128, "", None)])
def test_git_commit_marks_local_changes(monkeypatch: pytest.MonkeyPatch, rc: int, porcelain: str, want: str | None) -> None:
    """The commit is HEAD, '-dirty' only with tracked changes, None outside a checkout; untracked files are not asked."""
    calls = fake_git(monkeypatch, rc, porcelain)
    try:
        assert provenance.git_commit() == want
    finally:
        provenance.git_commit.cache_clear()
    status = [c for c in calls if "status" in c]
    assert all("--untracked-files=no" in c for c in status)


def test_cpu_environment_names_the_processor(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU the device name is the processor's, and no CUDA version is recorded."""

    def no_cuda(*args: object) -> str:
        raise AssertionError("asked CUDA about a CPU run")

    monkeypatch.setattr(torch.cuda, "get_device_name", no_cuda)
    monkeypatch.setattr(torch.version, "cuda", "12.1")
    env = provenance.environment(CPU)
    assert env["device_name"] == (platform.processor() or platform.machine()) and env["cuda"] is None and env["device"] == "cpu"


def test_a_module_without_a_version_is_recorded_as_none() -> None:
    """A package that is installed but has no __version__ is recorded as None, not a crash of the run."""
    assert provenance._version("math") is None and provenance._version("no_such_module_here") is None
    assert provenance._version("torch") == torch.__version__


# ---- harness/store/compare.py ----


def test_find_job_takes_the_key_literally(tmp_path: Path) -> None:
    """SQL wildcards in a key prefix match nothing: '_' and '%' are characters, not patterns."""
    store = Store(tmp_path / "r.db")
    add_job(store, "aaaa1111", "none", 0.0, 0, linf(0.9, (0.5, 0.4)))
    with store.session() as s:
        assert find_job(s, "aaaa").key == "aaaa1111"
        for key in ("_", "%", "a_aa"):
            with pytest.raises(HarnessError, match=f"no job with a key starting '{key}'"):
                find_job(s, key)
    store.close()


@pytest.mark.parametrize(("b", "what"), [(record("b", dataset="e"), "dataset (d against e)"), (record("b", protocol=2), "protocol version (1 against 2)"),
                                         (record("b", n_examples=50), "evaluation images (n_examples) (20 against 50)")])
def test_jobs_on_other_images_are_not_comparable(b: JobRecord, what: str) -> None:
    """Another dataset, protocol version or evaluation-set size means other images: refused, naming the difference."""
    comparable(record("a"), record("a2"))
    with pytest.raises(HarnessError, match=re.escape(f"jobs a and b differ in {what}")):
        comparable(record("a"), b)


def test_compare_lists_clean_then_worst_case_then_robust_and_checks_attacks_per_eps() -> None:
    """Rows come clean, worst case, robust (then attack, eps); a worst case counts only the attacks at its own eps."""
    four = [True, True, False, False]
    a = record("a", accs={("robust_acc", "fgsm", E1): four, ("clean_acc_eval", "", None): four, ("worst_case_acc", "linf", E1): four,
                          ("robust_acc", "autoattack", E2): four, ("worst_case_acc", "linf", E2): four})
    b = record("b", accs={("robust_acc", "fgsm", E1): four, ("clean_acc_eval", "", None): four, ("worst_case_acc", "linf", E1): four})
    rows, skipped = compare_jobs(a, b)
    assert [r.metric for r in rows] == [("clean_acc_eval", "", None), ("worst_case_acc", "linf", E1), ("robust_acc", "fgsm", E1)]
    assert skipped == []


def test_compare_leaves_out_outcomes_of_other_lengths() -> None:
    """An accuracy whose stored outcomes differ in length between the jobs is not paired (its test would have no p)."""
    a = record("a", accs={("clean_acc_eval", "", None): [True, False], ("robust_acc", "fgsm", E1): [True, False, True]})
    b = record("b", accs={("clean_acc_eval", "", None): [True, True], ("robust_acc", "fgsm", E1): [True, False]})
    rows, _ = compare_jobs(a, b)
    assert [r.metric for r in rows] == [("clean_acc_eval", "", None)] and rows[0].test.p_value is not None


def test_compare_refuses_jobs_with_no_shared_outcomes() -> None:
    """Two jobs without one accuracy stored per example by both are one clear error, not an empty table."""
    a = record("a", accs={("clean_acc_eval", "", None): [True, False]})
    b = record("b", accs={("robust_acc", "fgsm", E1): [True, False]})
    with pytest.raises(HarnessError, match="jobs a and b share no accuracy with per-example outcomes"):
        compare_jobs(a, b)


# ---- harness/cli/db.py ----


def test_db_scrub_cleans_errors_environments_and_submission_reports(tmp_path: Path) -> None:
    """`db scrub` rewrites machine paths in a failed job's error, a run's environment and a submission's report; counts the rows."""
    db = tmp_path / "pub.db"
    store = Store(db)
    run = store.start_run("g", "grids/g.toml", 1, {"cwd": "/home/me/harness", "threads": 4})
    fields = {"dataset": "d", "architecture": "a", "pruner": "p", "pruner_label": "p", "sparsity": 0.5, "seed": 0, "dense_key": "dk",
              "pruned_key": "pk", "params": job_params("d", "a", 0, "p", 0.5)}
    store.claim("failed", run, fields)
    store.fail("failed", 'Traceback:\n  File "/home/me/harness/x.py", line 3\nValueError: boom')
    store.record_submission(submission("s", "a" * 64, report={"checked": "/home/me/p.py", "ok": True}))
    store.close()
    out = scrub_cli(db)
    assert "machine paths replaced in 3 rows" in out
    with Store(db, readonly=True).session() as s:
        error = s.scalars(select(Job.error).where(Job.key == "failed")).one()
        env = s.scalars(select(Run.environment).where(Run.id == run)).one()
        report = s.scalars(select(Submission.report)).one()
    assert "/home/me" not in error and "ValueError: boom" in error
    assert "/home/me" not in env["cwd"] and env["threads"] == 4
    assert "/home/me" not in report["checked"] and report["ok"] is True
    assert "machine paths replaced in 0 rows" in scrub_cli(db)  # scrubbing twice changes nothing


def test_db_compare_never_creates_a_missing_database(tmp_path: Path) -> None:
    """Comparing against a database that does not exist is one error line, and leaves no new file behind."""
    store = Store(tmp_path / "a.db")
    add_job(store, "aaaa1111", "none", 0.0, 0, linf(0.9, (0.5, 0.4)))
    store.close()
    missing = tmp_path / "nope.db"
    res = CliRunner().invoke(app, ["db", "compare", "aaaa", "bbbb", "--db", str(tmp_path / "a.db"), "--db-b", str(missing)])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
    assert not missing.exists()


def test_forget_pending_keeps_every_job_with_any_trace_of_a_start(tmp_path: Path) -> None:
    """Only a pending job of that run, never started, never attempted, with no result or outcome, is forgotten."""
    db = tmp_path / "r.db"
    store = Store(db)
    old, other = store.start_run("g", "grids/g.toml", 7, {}), store.start_run("h", "grids/h.toml", 1, {})

    def fields(seed: int) -> dict[str, Any]:
        return {"dataset": "d", "architecture": "a", "pruner": "p", "pruner_label": "p", "sparsity": 0.5, "seed": seed, "dense_key": "dk",
                "pruned_key": "pk", "params": job_params("d", "a", seed, "p", 0.5)}

    names = ["fresh", "started", "attempted", "result", "outcome", "running"]
    store.add_jobs(old, [(k, fields(i)) for i, k in enumerate(names)])
    store.add_jobs(other, [("elsewhere", fields(9))])
    with store.session() as s:
        ids = {k: s.scalars(select(Job.id).where(Job.key == k)).one() for k in names}
        s.execute(update(Job).where(Job.key == "started").values(started_at=datetime(2024, 1, 1, tzinfo=timezone.utc)))
        s.execute(update(Job).where(Job.key == "attempted").values(attempts=1))
        s.execute(update(Job).where(Job.key == "running").values(status=JobStatus.running))
        s.add(Result(job_id=ids["result"], metric="clean_acc", value=0.5))
        s.add(Outcome(job_id=ids["outcome"], metric="clean_acc", n=1, bits=b"\x01"))
    store.close()
    res = CliRunner().invoke(app, ["db", "forget-pending", "--run", str(old), "--db", str(db)])
    assert res.exit_code == 0 and f"forgot 1 never-started jobs of run {old}" in res.output, res.output
    with Store(db, readonly=True).session() as s:
        assert sorted(s.scalars(select(Job.key))) == sorted([*names[1:], "elsewhere"])


def test_db_version_says_current_or_how_to_upgrade(tmp_path: Path) -> None:
    """`db version` calls a database of this schema current, and tells an older one's owner the upgrade command."""
    import shutil

    from harness.store.schema import SCHEMA_VERSION

    new, old = tmp_path / "new.db", tmp_path / "old.db"
    Store(new).close()
    shutil.copy(Path(__file__).parent / "fixtures" / "schema_v1.db", old)
    res = CliRunner().invoke(app, ["db", "version", "--db", str(new)])
    assert res.exit_code == 0 and f"schema version {SCHEMA_VERSION}; this harness uses {SCHEMA_VERSION} (current)" in res.output, res.output
    res = CliRunner().invoke(app, ["db", "version", "--db", str(old)])
    assert res.exit_code == 0 and f"schema version 1; this harness uses {SCHEMA_VERSION} (run `harness db upgrade --db {old}`)" in res.output, res.output
