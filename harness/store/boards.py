"""Leaderboards from stored jobs: rows per (architecture, pruner, sparsity, setup), their columns, and paired references.

A row's changes are paired tests against the dense model and the fine-tuned control trained the same way
(harness.store.statistics); the jobs come from harness.store.queries.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from harness.api.config import PROTOCOL_VERSION
from harness.api.keys import key_of
from harness.store.queries import JobRecord, job_records
from harness.store.statistics import ACC, DELTA, Estimate, PairedTest, paired_test

# A robust-accuracy column of a leaderboard: (attack, eps); the worst case over a threat model's attacks
# is the column whose attack is WORST.
Column = tuple[str, float]
WORST = "worst case"
WORST_METRIC = "worst_case_acc"
WORST_LOWER_METRIC = "worst_case_acc_lower_strength"
# The worst case at an eps where no reference attack ran: only as strong as the weaker attacks behind it.
WORST_LOWER = "worst case (lower strength)"
DENSE_FAMILY = "none"
# The fine-tuned dense control: the reference row of every board, and the headline delta's baseline.
CONTROL_FAMILY = "control"
# What a sparsity counts, by pruner family: requested sparsities of different units are not comparable.
UNITS = {"filter": "filters", "layer": "blocks", "unstructured": "weights", "none": "", "control": ""}
# Cost ratios shown on the leaderboard, in display order: metric name -> column label.
RATIOS = {"params_ratio": "params", "macs_ratio": "MACs", "latency_ms_b1_ratio": "latency"}

@dataclass
class BoardRow:
    """A leaderboard row: one (architecture, pruner, sparsity, setup) over its seeds, and its change against dense."""

    architecture: str
    pruner: str
    pruner_label: str
    family: str
    sparsity: float
    setup: str
    jobs: list[JobRecord]
    clean: Estimate | None = None
    robust: dict[Column, Estimate] = field(default_factory=dict)
    score: Estimate | None = None
    coverage: int = 0
    # Paired per seed against the dense model of the same training run (dataset, architecture, seed, training).
    delta_clean: Estimate | None = None
    delta_robust: dict[Column, Estimate] = field(default_factory=dict)
    delta_score: Estimate | None = None
    n_baselines: int = 0
    ratios: dict[str, Estimate] = field(default_factory=dict)
    sparsity_achieved: Estimate | None = None
    flags: dict[str, int] = field(default_factory=dict)
    rank: int = 0
    # What `sparsity` counts (filters, blocks, weights; '' for dense rows): compare rows by the ratios, not by it.
    unit: str = ""
    # Paired tests per column ("clean" for clean accuracy on the evaluation images): against the fine-tuned dense
    # control of the same seed (the headline: it isolates pruning) and against the untouched dense model.
    vs_control: dict[Column | str, PairedTest] = field(default_factory=dict)
    vs_dense: dict[Column | str, PairedTest] = field(default_factory=dict)
    protocol: int = PROTOCOL_VERSION  # the oldest protocol version among the row's jobs
    # Job key -> the job those tests paired it with, so that every other per-seed change uses the same pairs.
    control_jobs: dict[str, JobRecord] = field(default_factory=dict)
    dense_jobs: dict[str, JobRecord] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        """Seeds of the row's jobs, ascending."""
        return sorted(j.seed for j in self.jobs)

    @property
    def is_dense(self) -> bool:
        """Whether this row is an unpruned baseline."""
        return self.family == DENSE_FAMILY

    @property
    def is_control(self) -> bool:
        """Whether this row is the fine-tuned dense control (the reference row)."""
        return self.family == CONTROL_FAMILY

    @property
    def outdated(self) -> bool:
        """Whether some of the row's jobs ran under an older protocol (shown only with a mark)."""
        return self.protocol < PROTOCOL_VERSION


@dataclass
class Board:
    """One leaderboard: a (dataset, threat model) with its robust-accuracy columns and ranked rows."""

    dataset: str
    threat_model: str
    columns: list[Column]
    rows: list[BoardRow]
    setup: str = ""  # set when the board holds one setup of a larger one (harness.site.findings.split)

    @property
    def worst_columns(self) -> list[Column]:
        """The reference-strength worst-case columns, one per eps (the ranking reads these only)."""
        return [c for c in self.columns if c[0] == WORST]

    @property
    def lower_strength_columns(self) -> list[Column]:
        """Worst cases at eps where no reference attack ran, named as such."""
        return [c for c in self.columns if c[0] == WORST_LOWER]

    @property
    def attack_columns(self) -> list[Column]:
        """Per-attack columns."""
        return [c for c in self.columns if c[0] not in (WORST, WORST_LOWER)]

    @property
    def control(self) -> list[BoardRow]:
        """The reference rows: the fine-tuned dense controls."""
        return [r for r in self.rows if r.is_control]

    @property
    def eps_list(self) -> list[float]:
        """Every eps of the board, ascending."""
        return sorted({e for _a, e in self.columns})

    @property
    def setups(self) -> list[str]:
        """Distinct setups among the rows (more than one means rows come from differently configured grids)."""
        return sorted({r.setup for r in self.rows})

    @property
    def slug(self) -> str:
        """Identifier for anchors."""
        return f"{self.dataset}-{self.threat_model}" + (f"-{self.setup}" if self.setup else "")


def threat_of(attack: str, threat_models: dict[str, str], job_threats: set[str]) -> str:
    """Threat model of an attack column: from the registry, else the job's only worst-case threat model."""
    base = attack.split("/", 1)[0]  # components such as 'autoattack/apgd-ce' belong to their parent attack
    if base in threat_models:
        return threat_models[base]
    return next(iter(job_threats)) if len(job_threats) == 1 else "unknown"


def _job_columns(job: JobRecord, threat_models: dict[str, str]) -> dict[str, dict[Column, float]]:
    """A job's robust accuracies grouped by threat model."""
    worst = {a for (m, a, _e) in job.metrics if m in (WORST_METRIC, WORST_LOWER_METRIC)}
    out: dict[str, dict[Column, float]] = defaultdict(dict)
    for (m, a, e), v in job.metrics.items():
        if e is None:
            continue
        if m == WORST_METRIC:
            out[a][(WORST, e)] = v
        elif m == WORST_LOWER_METRIC:
            out[a][(WORST_LOWER, e)] = v
        elif m == "robust_acc":
            out[threat_of(a, threat_models, worst)][(a, e)] = v
    return out


def outcomes_of(job: JobRecord, col: Column | str, tm: str) -> np.ndarray | None:
    """The per-example outcomes behind a board column of a job ("clean" = clean accuracy on the evaluation images)."""
    if isinstance(col, str):  # "clean", the only column that is not (attack, eps)
        return job.outcomes.get(("clean_acc_eval", "", None))
    name, eps = col
    if name == WORST:
        return job.outcomes.get((WORST_METRIC, tm, eps))
    if name == WORST_LOWER:
        return job.outcomes.get((WORST_LOWER_METRIC, tm, eps))
    return job.outcomes.get(("robust_acc", name, eps))


def control_index(jobs: list[JobRecord], families: dict[str, str]) -> dict[tuple[str, str], list[JobRecord]]:
    """Fine-tuned dense controls by (dense key, fine-tuning settings)."""
    index: dict[tuple[str, str], list[JobRecord]] = defaultdict(list)
    for j in jobs:
        if _family(j, families) == CONTROL_FAMILY:
            index[(j.dense_key, j.finetune_setup)].append(j)
    return index


def control_of(job: JobRecord, index: dict[tuple[str, str], list[JobRecord]]) -> JobRecord | None:
    """The control `job` is compared against: same trained model, same fine-tuning, preferably evaluated identically."""
    candidates = index.get((job.dense_key, job.finetune_setup), [])
    same_eval = [c for c in candidates if c.eval_setup == job.eval_setup]
    return next(iter(same_eval or candidates), None)


def compare(members: list[tuple[JobRecord, dict[Column, float]]], reference: Callable[[JobRecord], JobRecord | None], threat_models: dict[str, str], tm: str) -> dict[Column | str, PairedTest]:
    """Paired tests of a row's jobs against their per-seed references, for clean accuracy and every shared column."""
    pairs: dict[Column | str, list[tuple[float, float, np.ndarray | None, np.ndarray | None]]] = defaultdict(list)
    seeds: dict[Column | str, list[int]] = defaultdict(list)
    for job, cols in members:
        ref = reference(job)
        if ref is None or ref.key == job.key:
            continue
        rcols = _job_columns(ref, threat_models).get(tm, {})
        clean, rclean = job.get("clean_acc_eval"), ref.get("clean_acc_eval")
        if clean is not None and rclean is not None:
            pairs["clean"].append((clean, rclean, outcomes_of(job, "clean", tm), outcomes_of(ref, "clean", tm)))
            seeds["clean"].append(job.seed)
        for col, v in cols.items():
            if col in rcols:
                pairs[col].append((v, rcols[col], outcomes_of(job, col, tm), outcomes_of(ref, col, tm)))
                seeds[col].append(job.seed)
    return {c: dataclasses.replace(t, seeds=tuple(seeds[c])) for c, ps in pairs.items() if (t := paired_test(ps)) is not None}


def baseline_index(jobs: list[JobRecord], families: dict[str, str]) -> dict[str, list[JobRecord]]:
    """Dense jobs by dense key (dataset, architecture, seed, training)."""
    index: dict[str, list[JobRecord]] = defaultdict(list)
    for j in jobs:
        if families.get(j.pruner, "") == DENSE_FAMILY or j.pruner == DENSE_FAMILY:
            index[j.dense_key].append(j)
    return index


def baseline_of(job: JobRecord, index: dict[str, list[JobRecord]]) -> JobRecord | None:
    """The dense job `job` is compared against: same trained model, preferably evaluated identically."""
    candidates = index.get(job.dense_key, [])
    same_eval = [c for c in candidates if c.eval_setup == job.eval_setup]
    return next(iter(same_eval or candidates), None)


def _family(job: JobRecord, families: dict[str, str]) -> str:
    if job.pruner == DENSE_FAMILY:
        return DENSE_FAMILY
    return families.get(job.pruner) or str(job.provenance.get("plugins", {}).get("pruner", {}).get("family", "")) or "unknown"


def newest_protocol(jobs: list[JobRecord]) -> list[JobRecord]:
    """Jobs minus those superseded: a job whose (dataset, architecture, pruner, sparsity, training) also ran under a newer protocol.

    A rerun under a new protocol replaces the old rows on the boards instead of sitting beside them (or merging
    into their seeds); an old row with no newer run stays, marked as outdated. The dense training settings are part
    of the match, so a newer grid with another training budget (another experiment) does not hide an older one's rows.
    The store keeps every job.
    """

    def what(j: JobRecord) -> tuple[str, str, str, float, str]:
        return (j.dataset, j.architecture, j.pruner_label, j.sparsity, key_of(j.params.get("pruned", {}).get("dense", {}).get("train")))

    newest: dict[tuple[str, str, str, float, str], int] = {}
    for j in jobs:
        newest[what(j)] = max(newest.get(what(j), 0), j.protocol)
    return [j for j in jobs if j.protocol >= newest[what(j)]]


def leaderboards(s: Session, families: dict[str, str] | None = None, threat_models: dict[str, str] | None = None, jobs: list[JobRecord] | None = None) -> list[Board]:
    """One board per (dataset, threat model); rows are (architecture, pruner, sparsity, setup) over seeds, ranked."""
    families = families or {}
    threat_models = threat_models or {}
    jobs = newest_protocol(job_records(s) if jobs is None else jobs)
    baselines = baseline_index(jobs, families)
    controls = control_index(jobs, families)
    # (dataset, threat model) -> row key -> [(job, its columns in that threat model)]
    groups: dict[tuple[str, str], dict[tuple[str, str, float, str], list[tuple[JobRecord, dict[Column, float]]]]] = defaultdict(lambda: defaultdict(list))
    for job in jobs:
        per_threat = _job_columns(job, threat_models) or {"": {}}  # clean-only jobs still get a board
        for tm, cols in per_threat.items():
            groups[(job.dataset, tm)][(job.architecture, job.pruner_label, job.sparsity, job.setup)].append((job, cols))
    boards = []
    for (dataset, tm), rows_by_key in sorted(groups.items()):
        rows = [_board_row(key, members, families, threat_models, baselines, tm) for key, members in rows_by_key.items()]
        for row, members in zip(rows, rows_by_key.values()):
            if not row.is_dense:
                row.dense_jobs = {j.key: ref for j, _ in members if (ref := baseline_of(j, baselines)) is not None}
                row.vs_dense = compare(members, lambda j: row.dense_jobs.get(j.key), threat_models, tm)
            if not row.is_dense and not row.is_control:
                row.control_jobs = {j.key: ref for j, _ in members if (ref := control_of(j, controls)) is not None}
                row.vs_control = compare(members, lambda j: row.control_jobs.get(j.key), threat_models, tm)
        columns = sorted({c for r in rows for c in r.robust}, key=lambda c: (c[0] not in (WORST, WORST_LOWER), c[0] != WORST, c[0], c[1]))
        rank_rows(rows, len({c[1] for c in columns if c[0] == WORST}))
        boards.append(Board(dataset, tm, columns, rows))
    return boards


def _board_row(
    key: tuple[str, str, float, str],
    members: list[tuple[JobRecord, dict[Column, float]]],
    families: dict[str, str],
    threat_models: dict[str, str],
    baselines: dict[str, list[JobRecord]],
    tm: str,
) -> BoardRow:
    arch, label, sparsity, setup = key
    members.sort(key=lambda m: (m[0].seed, m[0].key))
    jobs = [j for j, _ in members]
    row = BoardRow(arch, jobs[0].pruner, label, _family(jobs[0], families), sparsity, setup, jobs)
    row.unit = UNITS.get(row.family, "")
    row.protocol = min(j.protocol for j in jobs)
    row.clean = Estimate.of((j.get("clean_acc") for j in jobs), ACC)  # type: ignore[misc]
    all_cols = {c for _, cols in members for c in cols}
    row.robust = {c: e for c in all_cols if (e := Estimate.of((cols.get(c) for _, cols in members), ACC)) is not None}  # type: ignore[misc]
    worst = [c for c in all_cols if c[0] == WORST]
    row.coverage = len(worst)
    row.score = Estimate.of((_mean([cols[c] for c in worst if c in cols]) for _, cols in members), ACC)
    # Paired differences: each seed against its own dense model, then mean and interval of the differences.
    d_clean, d_score, d_cols, n_base = [], [], defaultdict(list), 0
    for job, cols in members:
        base = baseline_of(job, baselines)
        if base is None:
            continue
        n_base += 1
        bcols = _job_columns(base, threat_models).get(tm, {})
        clean, base_clean = job.get("clean_acc"), base.get("clean_acc")
        if clean is not None and base_clean is not None:
            d_clean.append(clean - base_clean)
        for col, v in cols.items():
            if col in bcols:
                d_cols[col].append(v - bcols[col])
        common = [c for c in cols if c[0] == WORST and c in bcols]
        if common:
            d_score.append(_mean([cols[c] for c in common]) - _mean([bcols[c] for c in common]))
    row.n_baselines = n_base
    row.delta_clean = Estimate.of(d_clean, DELTA)
    row.delta_score = Estimate.of(d_score, DELTA)
    row.delta_robust = {c: e for c, vs in d_cols.items() if (e := Estimate.of(vs, DELTA)) is not None}
    row.ratios = {m: e for m in RATIOS if (e := Estimate.of(j.get(m) for j in jobs)) is not None}  # type: ignore[misc]
    row.sparsity_achieved = Estimate.of(j.get("sparsity_achieved") for j in jobs)  # type: ignore[misc]
    flags: dict[str, int] = defaultdict(int)
    for j in jobs:
        for f in j.flags():
            flags[f] += 1
    row.flags = dict(sorted(flags.items()))
    return row


def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else float("nan")


def rank_rows(rows: list[BoardRow], n_eps: int) -> None:
    """Default ranking, in place: mean worst-case accuracy over the eps list, then clean accuracy.

    A single strong eps would tie most naturally trained models at 0, so the mean over the eps list (the
    area under the robustness curve) separates them; rows attacked at fewer eps than the board come after
    those attacked at all of them, so a row cannot rank high by skipping the hard budgets.
    """

    def key(r: BoardRow) -> tuple[Any, ...]:
        score = r.score.mean if r.score else float("-inf")
        clean = r.clean.mean if r.clean else float("-inf")
        return (-min(r.coverage, n_eps), -score, -clean, r.architecture, r.pruner_label, r.sparsity, r.setup)

    rows.sort(key=key)
    for i, r in enumerate(rows, 1):
        r.rank = i

