"""Read-side queries: everything the CLI and the site show comes through these functions.

The paired statistics the boards carry are in harness.store.statistics.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from harness.api.config import PROTOCOL_VERSION
from harness.api.keys import key_of
from harness.api.metrics import unpack_outcomes
from harness.store.models import Job, JobStatus, Outcome, Result, Run, Submission
from harness.store.statistics import (
    ACC,
    DELTA,
    Estimate,
    PairedTest,
    paired_test,
)

# (metric, attack, eps) with '' and None for "no attack" and "no eps", as stored rows are read back.
MetricKey = tuple[str, str, float | None]
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
class ResultRow:
    """One (job, metric) value with the job's identifying fields."""

    job_key: str
    dataset: str
    architecture: str
    pruner: str
    sparsity: float
    seed: int
    metric: str
    attack: str
    eps: float | None
    value: float

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return self.__dict__.copy()


def status_counts(s: Session) -> dict[str, int]:
    """Number of jobs in each state (all states listed)."""
    counts = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    return {st.value: int(counts.get(st, 0)) for st in JobStatus}


def status_by_grid(s: Session) -> dict[str, dict[str, int]]:
    """Per grid (of the run that queued or last claimed a job), the number of jobs in each state (all states listed)."""
    q = select(Run.grid, Job.status, func.count()).outerjoin(Run, Run.id == Job.run_id).group_by(Run.grid, Job.status)
    out: dict[str, dict[str, int]] = {}
    for grid, status, n in s.execute(q):
        out.setdefault(grid or "", {st.value: 0 for st in JobStatus})[status.value] = int(n)
    return dict(sorted(out.items()))


def failed_jobs(s: Session) -> list[Job]:
    """Failed jobs, newest first."""
    return list(s.scalars(select(Job).where(Job.status == JobStatus.failed).order_by(Job.finished_at.desc())))


def result_rows(s: Session) -> list[ResultRow]:
    """Every stored number of every done job, one row per (job, metric)."""
    q = (
        select(Job.key, Job.dataset, Job.architecture, Job.pruner_label, Job.sparsity, Job.seed, Result.metric, Result.attack, Result.eps, Result.value)
        .join(Result, Result.job_id == Job.id)
        .where(Job.status == JobStatus.done)
        .order_by(Job.dataset, Job.architecture, Job.pruner_label, Job.sparsity, Job.seed, Job.key, Result.metric, Result.attack, Result.eps)
    )
    return [ResultRow(*row[:8], None if row[8] < 0 else row[8], row[9]) for row in s.execute(q)]


@dataclass
class JobRecord:
    """A done job with every metric it recorded, keyed by (metric, attack, eps)."""

    key: str
    dataset: str
    architecture: str
    pruner: str
    pruner_label: str
    sparsity: float
    seed: int
    dense_key: str
    params: dict[str, Any]
    provenance: dict[str, Any]
    duration_s: float | None
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    run_id: int | None
    grid: str = ""  # the grid of the run that recorded the job
    metrics: dict[MetricKey, float] = field(default_factory=dict)
    # Per-example correctness behind accuracy metrics (same key as `metrics`), for paired tests.
    outcomes: dict[MetricKey, np.ndarray] = field(default_factory=dict)

    @property
    def protocol(self) -> int:
        """Protocol version the job ran under (rows stored before versioning are version 1)."""
        return int(self.params.get("protocol", 1))

    @property
    def finetune_setup(self) -> str:
        """Key of the fine-tuning settings, to pair a pruned job with the control fine-tuned the same way."""
        return key_of(self.params.get("pruned", {}).get("finetune"))

    def get(self, metric: str, attack: str = "", eps: float | None = None) -> float | None:
        """One metric's value, or None when the job did not record it."""
        return self.metrics.get((metric, attack, eps))

    @property
    def setup(self) -> str:
        """Short key of what the job shares with its siblings across seeds and pruners: training, evaluation, attacks."""
        dense = self.params.get("pruned", {}).get("dense", {})
        return key_of({"train": dense.get("train"), "eval": self.params.get("eval"), "attacks": self.params.get("attacks")})[:8]

    @property
    def eval_setup(self) -> str:
        """Key of the evaluation settings alone, to pair a job with the dense baseline evaluated the same way."""
        return key_of({"eval": self.params.get("eval"), "attacks": self.params.get("attacks")})

    def flags(self) -> list[str]:
        """Names of the sanity checks this job raised (metrics `flag_<check>` with value 1)."""
        return sorted(
            m[len("flag_"):] + (f" ({a})" if a else "")
            for (m, a, _e), v in self.metrics.items()
            if m.startswith("flag_") and v >= 0.5
        )


def job_records(s: Session, keys: Iterable[str] | None = None) -> list[JobRecord]:
    """Done jobs (all, or those with the given keys) with their metrics, in a stable order."""
    q = select(
        Job.id, Job.key, Job.dataset, Job.architecture, Job.pruner, Job.pruner_label, Job.sparsity, Job.seed,
        Job.dense_key, Job.params, Job.provenance, Job.duration_s, Job.started_at, Job.finished_at, Job.attempts, Job.run_id, Run.grid,
    ).outerjoin(Run, Run.id == Job.run_id).where(Job.status == JobStatus.done)
    if keys is not None:
        q = q.where(Job.key.in_(list(keys)))
    by_id: dict[int, JobRecord] = {}
    for row in s.execute(q.order_by(Job.dataset, Job.architecture, Job.pruner_label, Job.sparsity, Job.seed, Job.key)):
        by_id[row[0]] = JobRecord(*row[1:16], row[16] or "")
    # Plain column tuples, not ORM objects: a large store has hundreds of thousands of result rows.
    rq = select(Result.job_id, Result.metric, Result.attack, Result.eps, Result.value)
    if keys is not None:
        rq = rq.where(Result.job_id.in_(list(by_id)))
    for job_id, metric, attack, eps, value in s.execute(rq):
        rec = by_id.get(job_id)
        if rec is not None:
            rec.metrics[(metric, attack, None if eps < 0 else eps)] = value
    oq = select(Outcome.job_id, Outcome.metric, Outcome.attack, Outcome.eps, Outcome.n, Outcome.bits)
    if keys is not None:
        oq = oq.where(Outcome.job_id.in_(list(by_id)))
    for job_id, metric, attack, eps, n, bits in s.execute(oq):
        rec = by_id.get(job_id)
        if rec is not None:
            rec.outcomes[(metric, attack, None if eps < 0 else eps)] = unpack_outcomes(bits, n)
    return list(by_id.values())


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
    if col == "clean":
        return job.outcomes.get(("clean_acc_eval", "", None))
    name, eps = col  # type: ignore[misc]
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
    return (same_eval or candidates or [None])[0]


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
    return (same_eval or candidates or [None])[0]


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


@dataclass
class RunProgress:
    """An unfinished run: in flight with its estimated time to finish, or stale when its driver stopped beating."""

    run_id: int
    grid: str
    done: int
    failed: int
    todo: int
    elapsed_s: float
    eta_s: float | None
    stale_s: float | None = None  # seconds since the last heartbeat, when the driver is taken to be gone
    resumed_by: int | None = None  # the latest run of the same grid, when it came after this stale one


def driver_gone(driver: str | None) -> bool:
    """Whether a process named host:pid ran on this host and no longer exists (a driver, or a job's owner)."""
    host, _, pid = (driver or "").partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def runs_in_flight(s: Session, stale_after_s: float = 60.0) -> list[RunProgress]:
    """Unfinished runs, with an ETA from their pace so far; stale when no heartbeat came for `stale_after_s`
    or when their driver process on this host is gone (SIGKILL, power loss), and then resumed by any later run of
    the same grid."""
    from datetime import datetime, timezone

    from harness.store.models import Run

    def utc(t: datetime) -> datetime:
        return t if t.tzinfo else t.replace(tzinfo=timezone.utc)

    now = datetime.now(timezone.utc)
    runs_of_grid: dict[str, list[int]] = {}
    # (run id, wall seconds, jobs finished) of every run that finished a job: the pace a new run of its grid can expect.
    paces: dict[str, list[tuple[int, float, int]]] = {}
    for run_id, grid, start, beat, end, done, failed in s.execute(
            select(Run.id, Run.grid, Run.started_at, Run.heartbeat_at, Run.finished_at, Run.n_done, Run.n_failed).order_by(Run.id)):
        runs_of_grid.setdefault(grid, []).append(run_id)
        last = end or beat
        if start is not None and last is not None and done + failed:
            paces.setdefault(grid, []).append((run_id, (utc(last) - utc(start)).total_seconds(), done + failed))
    out = []
    for run in s.scalars(select(Run).where(Run.finished_at.is_(None)).order_by(Run.id)):
        beat, start = run.heartbeat_at, run.started_at
        if beat is None or start is None:
            continue
        beat, start = utc(beat), utc(start)
        silent = (now - beat).total_seconds()
        elapsed = (now - start).total_seconds()
        finished = run.n_done + run.n_failed
        eta = elapsed / finished * max(run.n_todo - finished, 0) if finished else None
        earlier = [(wall, n) for i, wall, n in paces.get(run.grid, []) if i < run.id]
        if eta is None and earlier:
            # A resumed study's jobs take an hour each: rather than no estimate for that hour, the pace of the grid's
            # earlier runs (wall seconds per finished job, with the workers they had), less what this run has spent.
            eta = max(sum(w for w, _ in earlier) / sum(n for _, n in earlier) * run.n_todo - elapsed, 0.0)
        stale = silent if silent > stale_after_s or driver_gone(run.driver) else None
        # A rerun of the same grid re-queues and reruns a cut-short run's unfinished jobs, so that run needs nothing more.
        resumed_by = runs_of_grid[run.grid][-1] if stale is not None and runs_of_grid[run.grid][-1] > run.id else None
        out.append(RunProgress(run.id, run.grid, run.n_done, run.n_failed, run.n_todo, elapsed, eta, stale, resumed_by))
    return out


@dataclass
class SubmissionRecord:
    """A pruner submitted against this database: who, what, and the sha256 of the exact file checked."""

    name: str
    sha256: str
    author: str
    description: str
    paper: str
    url: str
    family: str
    class_name: str
    original_filename: str
    harness_version: str
    git_commit: str | None
    submitted_at: datetime
    report: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return self.__dict__ | {"submitted_at": self.submitted_at.isoformat(timespec="seconds")}


def submission_records(s: Session) -> list[SubmissionRecord]:
    """Every submission recorded in this database, oldest first (without the file's bytes)."""
    fields = [f for f in SubmissionRecord.__dataclass_fields__]
    cols = [getattr(Submission, f) for f in fields]
    return [SubmissionRecord(*row) for row in s.execute(select(*cols).order_by(Submission.submitted_at, Submission.name))]


def submission_source(s: Session, name: str) -> bytes | None:
    """The recorded bytes of submission `name`, or None."""
    return s.scalars(select(Submission.source).where(Submission.name == name)).one_or_none()
