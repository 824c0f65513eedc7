"""The site's downloads: every stored number (results.csv/json), every job (jobs.json), every board (leaderboard.csv)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from harness.api.files import atomic_write_text
from harness.site.public import scrub
from harness.store.boards import RATIOS, WORST, Board
from harness.store.queries import JobRecord
from harness.store.statistics import Estimate, PairedTest

CSV_FIELDS = ["job_key", "dataset", "architecture", "pruner", "sparsity", "seed", "metric", "attack", "eps", "value"]


def write_file(path: Path, text: str) -> None:
    """Write one of the site's files atomically (temp file, then rename) without an fsync each: 10,000 fsyncs would dominate a build,
    and a page lost to a power cut is rebuilt by the next `harness site`; a full disk leaves the old page intact."""
    atomic_write_text(path, text, durable=False)


def _estimate_fields(prefix: str, e: Estimate | None) -> dict[str, Any]:
    return {prefix: None if e is None else e.mean, f"{prefix}_ci95": None if e is None else e.half_width}


def _test_fields(prefix: str, t: PairedTest | None) -> dict[str, Any]:
    """A paired test as CSV fields: the mean change and its exact McNemar p-value (empty where it has none)."""
    return {f"delta_{prefix}": None if t is None else t.delta, f"p_{prefix}": None if t is None else t.p_value}


def leaderboard_records(boards: list[Board]) -> list[dict[str, Any]]:
    """The leaderboards flattened, one record per row (leaderboard.csv).

    Per column: mean and 95% CI half-width over seeds; `delta_*` against the untouched dense model (per-seed t
    interval); `delta_vs_control_*` / `delta_vs_dense_*` with `p_vs_control_*` / `p_vs_dense_*`, the paired changes
    and their exact McNemar p-values (the numbers the board and `harness report` mark significance by).
    """
    out = []
    for b in boards:
        for r in b.rows:
            rec: dict[str, Any] = {
                "dataset": b.dataset, "threat_model": b.threat_model, "rank": r.rank, "architecture": r.architecture,
                "pruner": r.pruner_label, "family": r.family, "sparsity": r.sparsity, "setup": r.setup,
                "seeds": " ".join(map(str, r.seeds)), "job_keys": " ".join(j.key for j in r.jobs), "protocol": r.protocol,
                "unit": r.unit,
            }
            rec |= _estimate_fields("clean_acc", r.clean) | _estimate_fields("delta_clean_acc", r.delta_clean)
            rec |= _estimate_fields("mean_worst_case_acc", r.score) | _estimate_fields("delta_mean_worst_case_acc", r.delta_score)
            for c in b.columns:
                name = f"{'worst_case' if c[0] == WORST else c[0]}@{c[1]:g}"
                rec |= _estimate_fields(name, r.robust.get(c)) | _estimate_fields(f"delta_{name}", r.delta_robust.get(c))
                rec |= _test_fields(f"vs_control_{name}", r.vs_control.get(c)) | _test_fields(f"vs_dense_{name}", r.vs_dense.get(c))
            for m in RATIOS:
                rec |= _estimate_fields(m, r.ratios.get(m))
            rec["flags"] = " ".join(f"{k}:{v}" for k, v in r.flags.items())
            out.append(rec)
    return out


def write_downloads(out: Path, rows: list[dict[str, Any]], jobs: list[JobRecord], boards: list[Board]) -> None:
    """Write the machine-readable downloads beside the pages: results (JSON, CSV), jobs (JSON), leaderboard (CSV)."""
    write_file(out / "results.json", json.dumps(rows, separators=(",", ":")))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")  # a plain writer: DictWriter costs seconds at 500,000 rows
    writer.writerow(CSV_FIELDS)
    writer.writerows([r[f] for f in CSV_FIELDS] for r in rows)
    write_file(out / "results.csv", buf.getvalue())
    meta = [
        {"job_key": j.key, "dataset": j.dataset, "architecture": j.architecture, "pruner": j.pruner_label, "sparsity": j.sparsity, "seed": j.seed,
         "duration_s": j.duration_s, "finished_at": j.finished_at.isoformat() if j.finished_at else None,
         "params": scrub(j.params), "provenance": scrub(j.provenance)}
        for j in jobs
    ]
    write_file(out / "jobs.json", json.dumps(meta, separators=(",", ":"), default=str))
    records = leaderboard_records(boards)
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for rec in records for k in rec))
    dict_writer = csv.DictWriter(buf, fieldnames=fields)
    dict_writer.writeheader()
    dict_writer.writerows({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in rec.items()} for rec in records)
    write_file(out / "leaderboard.csv", buf.getvalue())
