"""Device plumbing of the scheduler, checked on the CPU: pinned GPU workers, split threads, OOM as transient,
a driver that never initialises CUDA, and precision/throughput recorded per job."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.scheduling.executors import cpu_threads
from harness.scheduling.runner import (
    RunOptions,
    driver_environment,
    run,
    worker_configs,
)
from harness.scheduling.worker import Outcome, TaskRunner, WorkerConfig


def _fake_gpus(monkeypatch: pytest.MonkeyPatch, n: int) -> list[object]:
    """Pretend `n` CUDA devices are visible; returns the list that records set_device calls."""
    pinned: list[object] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.setattr(torch.cuda, "set_device", pinned.append)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake GPU")
    return pinned


def test_one_worker_per_gpu_with_its_share_of_the_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_gpus(monkeypatch, 2)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    configs = worker_configs(RunOptions(db=tmp_path / "r.db"), torch.device("cuda"))
    assert [c.device for c in configs] == ["cuda:0", "cuda:1"]
    assert [c.threads for c in configs] == [8, 8] == [cpu_threads(2)] * 2  # never 0 (= all cores each)


def test_several_workers_share_each_gpu_and_split_the_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_gpus(monkeypatch, 2)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    configs = worker_configs(RunOptions(db=tmp_path / "r.db", workers=3), torch.device("cuda"))
    assert [c.device for c in configs] == ["cuda:0"] * 3 + ["cuda:1"] * 3
    assert [c.threads for c in configs] == [2] * 6 == [cpu_threads(6)] * 6


def test_ray_gives_each_gpu_task_its_share_of_a_card(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys
    import types

    asked: dict[str, object] = {}

    def remote(**kwargs: object) -> object:
        asked.update(kwargs)
        return lambda fn: fn

    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(is_initialized=lambda: True, remote=remote))
    from harness.scheduling.ray import RayExecutor

    configs = [WorkerConfig(f"cuda:{d}", 2, tmp_path, None) for d in (0, 0, 0, 1, 1, 1)]
    RayExecutor(configs).start()
    assert asked["num_gpus"] == pytest.approx(1 / 3)  # three tasks side by side on each card


def test_gpu_worker_pins_its_device(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pinned = _fake_gpus(monkeypatch, 2)
    TaskRunner(WorkerConfig("cuda:1", 1, tmp_path, None))
    assert pinned == [torch.device("cuda:1")]


def test_driver_names_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> None:
        raise AssertionError("the driver initialised CUDA")

    monkeypatch.setattr(torch.cuda, "get_device_name", boom)
    monkeypatch.setattr(torch.cuda, "get_device_properties", boom)
    monkeypatch.setattr(torch.cuda, "init", boom)
    env = driver_environment(torch.device("cuda"))
    assert env["device"] == "cuda" and env["device_name"] is None and env["torch"]


@pytest.mark.parametrize(
    "exc, transient",
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)"), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
    ],
)
def test_device_memory_exhaustion_is_transient(exc: Exception, transient: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An OOM while training is retried by the scheduler (test_scheduler covers retries) instead of failing the job."""
    from harness.engine import pipeline
    from harness.engine.grid import parse_grid
    from harness.scheduling.dag import Task

    def raising(*_: object, **__: object) -> None:
        raise exc

    monkeypatch.setattr(pipeline, "dense_model", raising)
    job = parse_grid({"datasets": ["digits"], "architectures": ["small_cnn"], "pruners": ["none"], "attacks": [{"name": "autoattack", "eps": 0.1}]}).jobs[0]
    out: Outcome = TaskRunner(WorkerConfig("cpu", 1, tmp_path, None)).run(Task("dense:x", "dense", job))
    assert not out.ok and out.transient is transient


def test_run_records_precision_and_training_throughput(tmp_path: Path) -> None:
    from sqlalchemy import select

    from harness.store import Job, Store
    from harness.store.queries import result_rows
    from tests.conftest import TINY_GRID

    grid = tmp_path / "tiny.toml"
    grid.write_text(TINY_GRID.replace('pruners = ["none", "l1_filter"]', 'pruners = ["none"]'))
    summary = run(RunOptions(grid=str(grid), db=tmp_path / "r.db", site_dir=None, device="cpu", workers=0))
    assert summary.done == 1 and not summary.failed
    with Store(tmp_path / "r.db", create=False).session() as s:
        job = s.scalars(select(Job)).one()
        rows = {r.metric: r.value for r in result_rows(s)}
    assert job.provenance["precision"] == {"train": "fp32", "finetune": "fp32"}  # "auto" on the CPU
    assert rows["train_img_per_s"] > 0


def test_gpu_check_grid_covers_every_builtin_pruner_and_attack() -> None:
    """benchmarks/gpu_check.sh's grid: parsed and expanded here, since no GPU runs the default suite."""
    from harness.api.plugins import attacks, pruners
    from harness.engine.grid import load_grid

    grid = load_grid("gpu-check")
    builtin = {e.name for e in pruners.entries() if "registry/pruners" in e.source.replace("\\", "/")}
    assert {j.pruner.name for j in grid.jobs} == builtin
    assert {a.name for a in grid.jobs[0].attacks} == {e.name for e in attacks.entries() if "registry/attacks" in e.source.replace("\\", "/") or "harness/attacks" in e.source.replace("\\", "/")}
    job = grid.jobs[0]
    assert (job.dataset, job.architecture, job.train.epochs, job.train.n_train, job.eval.n_examples) == ("cifar10", "resnet20", 2, 10000, 200)
