"""How long the site takes to build (and, with a browser, to open) for a large synthetic results store.

    python benchmarks/site.py            # ~10,000 results (stored numbers): 208 jobs of 48 metrics
    python benchmarks/site.py --datasets 2 --architectures 5 --pruners 20 --sparsities 10 --seeds 5   # 10,050 jobs

The store is filled with seeded random accuracies shaped like real ones (robust accuracy falling with eps);
the numbers mean nothing, only their count and shape matter. Prints one JSON object of timings, with the CPU
seconds of each build stage and the machine's load average (on a shared machine, wall-clock time mostly measures
the other processes: compare CPU seconds, and the two versions back to back).

What dominates at 10,050 jobs (472,350 numbers): the job pages, one file each. Creating a file costs about 1 ms of
CPU on this VM's ext4 (measured: 0.95 ms with Path.write_text, 0.67 ms with os.write), so ~10,000 pages cost 7-10 s
of their ~10 s stage; rendering one is 0.2 ms since its metrics table is built in Python (it was ~50 escaped Jinja
cells per page). Then the store's queries (~6.5 s: job records, leaderboards, result rows) and the downloads (~4 s).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from harness.api.keys import key_of
from harness.store.models import Job, JobStatus, Result
from harness.store.session import Store

ATTACKS = {"fgsm": "linf", "pgd_linf": "linf", "autoattack": "linf"}
EPS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
COSTS = ("params", "macs", "nonzero_params", "size_bytes", "latency_ms_b1", "latency_ms_b128")
STAGES = ("train_seconds", "prune_seconds", "finetune_seconds", "eval_seconds", "job_seconds")


def job_metrics(rng: random.Random, sparsity: float) -> list[tuple[str, str, float, float]]:
    """(metric, attack, eps, value) rows of one synthetic job, as the pipeline would write them."""
    clean = min(0.99, max(0.1, rng.gauss(0.93 - 0.2 * sparsity**3, 0.01)))
    out = [("clean_acc", "", -1.0, clean), ("clean_acc_eval", "", -1.0, clean + rng.gauss(0, 0.005))]
    for eps in EPS:
        accs = {a: clean * max(0.0, 1 - eps * 255 / 9 * (1 + 0.3 * i) + rng.gauss(0, 0.02)) for i, a in enumerate(ATTACKS)}
        out += [("robust_acc", a, eps, v) for a, v in accs.items()]
        out.append(("worst_case_acc", "linf", eps, min(accs.values())))
    for c in COSTS:
        ratio = (1 - sparsity) ** 2 * rng.uniform(0.9, 1.1)
        out += [(c, "", -1.0, 1000.0 * ratio), (f"{c}_dense", "", -1.0, 1000.0), (f"{c}_ratio", "", -1.0, ratio)]
    out += [("sparsity_requested", "", -1.0, sparsity), ("sparsity_achieved", "", -1.0, sparsity + rng.uniform(-0.01, 0.01))]
    out += [(s, "", -1.0, rng.uniform(1, 100)) for s in STAGES] + [("attack_seconds", a, -1.0, rng.uniform(1, 50)) for a in ATTACKS]
    out.append(("flag_gradient_masking", "", -1.0, float(rng.random() < 0.02)))
    return out


def fill(store: Store, args: argparse.Namespace) -> int:
    """Insert the synthetic jobs in bulk; returns the number of result rows."""
    rng = random.Random(0)
    jobs: list[dict[str, Any]] = []
    metrics: list[list[tuple[str, str, float, float]]] = []
    attacks = [{"name": a, "eps": list(EPS), "params": {}} for a in ATTACKS]
    for d in range(args.datasets):
        for a in range(args.architectures):
            for seed in range(args.seeds):
                dense = {"dataset": f"data{d}", "architecture": f"arch{a}", "seed": seed, "train": {"epochs": 10}}
                for p in range(args.pruners + 1):
                    pruner = "none" if p == 0 else f"pruner{p:02d}"
                    for sp in [0.0] if p == 0 else [round((i + 1) / (args.sparsities + 1), 3) for i in range(args.sparsities)]:
                        pruned = {"dense": dense, "pruner": pruner, "pruner_params": {}} | ({} if p == 0 else {"sparsity": sp, "finetune": {"epochs": 2}})
                        params = {"pruned": pruned, "eval": {"n_examples": 1000}, "attacks": attacks}
                        jobs.append({
                            "key": key_of(params), "dataset": f"data{d}", "architecture": f"arch{a}", "pruner": pruner, "pruner_label": pruner,
                            "sparsity": sp, "seed": seed, "dense_key": key_of(dense), "pruned_key": key_of(pruned), "status": JobStatus.done,
                            "params": params, "provenance": {"environment": {"device": "cpu", "torch": "x"}}, "duration_s": 1.0, "attempts": 1,
                        })
                        metrics.append(job_metrics(rng, sp))
    with store.session() as s:
        s.execute(insert(Job), jobs)
        ids = dict(s.execute(Job.__table__.select().with_only_columns(Job.key, Job.id)).all())
        rows = [
            {"job_id": ids[j["key"]], "metric": m, "attack": at, "eps": e, "value": v}
            for j, ms in zip(jobs, metrics) for m, at, e, v in ms
        ]
        s.execute(insert(Result), rows)
    return len(rows)


def browser_load_seconds(index: Path) -> float | None:
    """Seconds until the index's load event in headless Chromium, or None without a browser."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    exe = Path("/usr/lib/chromium/chromium")
    if not exe.is_file():
        return None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(exe), args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = b.new_page()
        t = time.perf_counter()
        page.goto(index.as_uri(), timeout=120_000)
        page.wait_for_load_state("load")
        seconds = time.perf_counter() - t
        b.close()
    return seconds


def main() -> None:
    """Fill a temporary store, build the site, print the timings."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=1)
    ap.add_argument("--architectures", type=int, default=4)
    ap.add_argument("--pruners", type=int, default=5)
    ap.add_argument("--sparsities", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="keep the site here (default: a temporary folder)")
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()

    from harness.api.plugins import pruners
    from harness.site.build import build_site

    pruners.names()  # load the registries before timing: importing plugins (torch) is not site work
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.db")
        t = time.perf_counter()
        n_results = fill(store, args)
        fill_s = time.perf_counter() - t
        out = args.out or Path(tmp) / "site"
        t, cpu = time.perf_counter(), time.process_time()
        stages: dict[str, float] = {}
        index = build_site(store, out, stages=stages)
        # CPU time too: on a shared machine wall-clock time also counts other processes' turns.
        build_s, build_cpu = time.perf_counter() - t, time.process_time() - cpu
        load_s = None if args.no_browser else browser_load_seconds(index)
        n_jobs = len(list((out / "jobs").iterdir()))
        print(json.dumps({
            "jobs": n_jobs, "results": n_results, "fill_seconds": round(fill_s, 2), "build_seconds": round(build_s, 2), "build_cpu_seconds": round(build_cpu, 2),
            "index_bytes": index.stat().st_size, "index_load_seconds": None if load_s is None else round(load_s, 2),
            "stage_cpu_seconds": {k: round(v, 2) for k, v in stages.items()}, "load_average": round(os.getloadavg()[0], 1),
        }))


if __name__ == "__main__":
    main()
