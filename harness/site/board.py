"""What a leaderboard shows: the reference row, paired deltas against it, the ranking, the setup summary.

Pure functions over the store's query results (Board, BoardRow, JobRecord): no SQL and no HTML here, so the
site and its tests read the same view of a board.
"""

from __future__ import annotations

import functools
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from harness.api.plugins import architectures, attacks, pruners
from harness.store.boards import WORST, WORST_LOWER, Board, BoardRow, Column, outcomes_of
from harness.store.queries import JobRecord
from harness.store.statistics import ACC, DELTA, Estimate, PairedTest, family_significant

CONTROL = "dense_finetuned"  # the fine-tuned dense model: the reference row of every board where it ran
UNTOUCHED = "none"  # the dense model as trained: the fallback reference
REFERENCE_FAMILIES = {"none", "control"}
# The attack that defines full strength at an eps, per threat model; an eps where it did not run is weaker.
REFERENCE_ATTACK = {"linf": "autoattack", "l2": "autoattack"}
# Robust accuracy the reference row must keep at an eps for that eps to rank rows (a column at 0 % ranks nothing).
INFORMATIVE = 0.10
# What a pruner's sparsity counts, by family.
UNITS = {"filter": "filters", "layer": "blocks", "unstructured": "weights"}
THREAT_LABELS = {"linf": "L∞", "l2": "L2", "": "no attack", "unknown": "unknown threat model"}
REGIMES = {"standard": "standard training", "pgd_at": "PGD adversarial training", "trades": "TRADES"}
ATTACK_NAMES = {"fgsm": "FGSM", "pgd_linf": "PGD", "pgd_l2": "PGD-L2", "autoattack": "AutoAttack", "apgd": "APGD",
                "square": "Square", "cw_l2": "C&W-L2", "deepfool": "DeepFool", "fab": "FAB"}
# Published clean test accuracy of the standard dense models (what a reader expects): (value, source).
ANCHORS: dict[tuple[str, str], tuple[float, str]] = {
    ("cifar10", "resnet20"): (0.9125, "He et al., CVPR 2016, Table 6"),
    ("cifar10", "resnet32"): (0.9249, "He et al., CVPR 2016, Table 6"),
    ("cifar10", "resnet56"): (0.9303, "He et al., CVPR 2016, Table 6"),
    ("cifar10", "resnet110"): (0.9357, "He et al., CVPR 2016, Table 6"),
}


def families() -> dict[str, str]:
    """Pruner name -> family, for registered pruners."""
    return {e.name: str(e.metadata.get("family") or getattr(e.obj, "family", "")) for e in pruners.entries()}


def threat_models() -> dict[str, str]:
    """Attack name -> threat model, for registered attacks."""
    return {e.name: str(getattr(e.obj, "threat_model", "")) for e in attacks.entries()}


def is_reference(row: BoardRow) -> bool:
    """Whether a row is a dense model (untouched or fine-tuned control): shown for reference, never ranked."""
    return row.family in REFERENCE_FAMILIES or row.pruner in (CONTROL, UNTOUCHED)


@dataclass(frozen=True)
class Paired:
    """A change against the reference row, paired per seed: the per-seed values, their estimate, the paired test."""

    per_seed: tuple[tuple[int, float], ...]
    estimate: Estimate | None
    # The exact McNemar test over the shared evaluation images x seeds (None where no per-example outcomes pair up).
    test: PairedTest | None = None
    # Whether the test stays significant under Holm's correction over the column's pruned rows (view sets it), the
    # verdict's rule; None where no family was formed, and the test alone decides.
    family: bool | None = None

    @property
    def mean(self) -> float | None:
        """Mean change, or None without pairs."""
        return None if self.estimate is None else self.estimate.mean

    @property
    def p_value(self) -> float | None:
        """Two-sided p-value of the paired test, or None without one."""
        return None if self.test is None else self.test.p_value

    @property
    def significant(self) -> bool:
        """Whether to mark it: the paired test's verdict (p < 0.05, 3 seeds, Holm over the column); never a t interval."""
        if self.family is not None:
            return self.family
        return self.test is not None and self.test.significant

    @classmethod
    def of(cls, pairs: Iterable[tuple[int, float]], test: PairedTest | None = None) -> Paired:
        """From (seed, change) pairs."""
        ps = tuple(sorted(pairs))
        return cls(ps, Estimate.of((v for _s, v in ps), DELTA), test)

    @classmethod
    def from_test(cls, test: PairedTest | None) -> Paired:
        """From a paired test that knows its seeds (queries.compare fills them)."""
        if test is None:
            return cls((), None)
        seeds = test.seeds or tuple(range(len(test.per_seed)))
        return cls.of(zip(seeds, test.per_seed), test)


@dataclass(frozen=True)
class EpsInfo:
    """One eps of a board: the attacks that ran at it and whether the reference attack is among them."""

    eps: float
    attacks: tuple[str, ...]
    reference: bool


@dataclass
class Method:
    """What the site says about a pruner: its paper (and link when registered), family, unit of sparsity."""

    paper: str
    url: str
    family: str
    unit: str


@dataclass
class ViewRow:
    """A board row as shown: reference or ranked, with its changes against the reference row."""

    row: BoardRow
    reference: bool
    rank: int | None
    d_clean: Paired
    d_robust: dict[Column, Paired]
    d_key: Paired  # the change the ranking uses (worst case at the reference eps)
    clean_eval: Estimate | None
    n_eval: int | None
    regime: str
    method: Method
    # Worst-case robust accuracy among the images the row classifies correctly: (its estimate, its per-seed change
    # against the reference row), per worst-case column; pruned rows only. Descriptive: no paired test exists.
    correct: dict[Column, tuple[Estimate | None, Paired]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The row's pruner label."""
        return self.row.pruner_label


@dataclass
class Setup:
    """What one configuration of a board ran: data, budget, evaluation and attacks."""

    key: str
    dataset: str
    n_train: int | None
    train_total: int | None
    epochs: int | None
    finetune_epochs: int | None
    regime: str
    n_eval: int | None
    seeds: list[int]
    eps: list[EpsInfo]
    protocol: int = 0  # the oldest protocol version among the setup's jobs
    # The untouched dense model's clean accuracy per architecture (the control's when no untouched row exists).
    dense_clean: list[tuple[str, Estimate | None, tuple[float, str] | None]] = field(default_factory=list)
    control_clean: list[tuple[str, Estimate | None]] = field(default_factory=list)  # the fine-tuned control's, when it ran
    grids: list[str] = field(default_factory=list)  # the grids whose runs produced the setup's jobs


@dataclass
class BoardView:
    """Everything a board's section shows, computed once."""

    board: Board
    control: str  # the pruner name of the reference rows (CONTROL, or UNTOUCHED as the fallback)
    key_column: Column | None
    key_strength: bool  # whether the ranking column's eps ran the reference attack
    eps: list[EpsInfo]
    setups: list[Setup]
    rows: list[ViewRow]
    verdict: str = ""
    single_sparsity: bool = True
    has_latency: bool = False
    has_flags: bool = False
    has_costs: bool = False

    @property
    def fallback(self) -> bool:
        """Whether the board compares against the untouched dense model (no fine-tuned control ran)."""
        return self.control != CONTROL

    @property
    def correct_columns(self) -> list[Column]:
        """The worst-case columns where some row has its robust accuracy among the images it classifies correctly."""
        return [c for c in self.board.worst_columns if any(c in vr.correct for vr in self.rows)]

    def eps_info(self, eps: float) -> EpsInfo | None:
        """The EpsInfo of one eps."""
        return next((e for e in self.eps if abs(e.eps - eps) < 1e-12), None)


def attack_label(spec: dict[str, Any]) -> str:
    """A short name of an attack as configured, e.g. PGD-10."""
    name = str(spec.get("name", ""))
    steps = (spec.get("params") or {}).get("steps")
    return ATTACK_NAMES.get(name, name) + (f"-{steps}" if steps else "")


def eps_infos(board: Board, rows: list[BoardRow] | None = None) -> list[EpsInfo]:
    """Per eps, the attack suite that ran at it (from the jobs' parameters) and whether it includes the reference.

    Over `rows` (default: the whole board), so that each setup of a board states its own attacks.
    """
    ref = REFERENCE_ATTACK.get(board.threat_model)
    rows = board.rows if rows is None else rows
    present = {c for r in rows for c in r.robust}
    # AutoAttack's parts belong to it
    columns = {(a, e) for a, e in board.columns if a not in (WORST, WORST_LOWER) and "/" not in a and (a, e) in present}
    # eps -> attack name -> label as configured (e.g. pgd_linf -> PGD-10)
    by_eps: dict[float, dict[str, str]] = defaultdict(dict)
    seen: set[str] = set()
    for r in rows:
        for j in r.jobs:
            if j.setup in seen:  # the attack list is part of the setup: one job per setup says it all
                continue
            seen.add(j.setup)
            for spec in j.params.get("attacks", []):
                name = str(spec.get("name", ""))
                for e in spec.get("eps", []):
                    if isinstance(e, (int, float)) and (name, float(e)) in columns:
                        by_eps[float(e)][name] = attack_label(spec)
    for a, e in columns:  # an attack in the results but not in the parameters still gets named
        by_eps[e].setdefault(a, ATTACK_NAMES.get(a, a))
    return [EpsInfo(e, tuple(sorted(names.values(), key=str.lower)), ref in names) for e, names in sorted(by_eps.items())]


def key_column(board: Board, eps: list[EpsInfo], reference: str = "") -> tuple[Column | None, bool]:
    """The ranking column: worst case at a reference-strength eps where the reference row still has robustness to lose.

    That is the largest reference-strength eps at which the `reference` rows keep at least INFORMATIVE robust
    accuracy, else the smallest reference-strength eps: at 8/255 a naturally trained model sits at 0 %, and a column
    where every row is 0 ranks nothing. The choice reads only the reference rows, never the pruned ones, so it cannot
    favour a pruner. Without a reference attack anywhere: the largest eps, flagged as lower strength.
    """
    worst = {c[1]: c for c in board.worst_columns}
    strong = sorted(e.eps for e in eps if e.reference and e.eps in worst)
    if strong:
        refs = [r for r in board.rows if r.pruner == reference]

        def informative(e: float) -> bool:
            vals = [est.mean for r in refs if (est := r.robust.get(worst[e])) is not None]
            return bool(vals) and min(vals) >= INFORMATIVE

        kept = [e for e in strong if informative(e)]
        return worst[max(kept) if kept else strong[0]], True
    if worst:
        return worst[max(worst)], False
    cols = board.attack_columns
    return (max(cols, key=lambda c: c[1]), False) if cols else (None, False)


def _train(job: JobRecord) -> dict[str, Any]:
    return job.params.get("pruned", {}).get("dense", {}).get("train") or {}


def regime_of(job: JobRecord) -> str:
    """The training regime of a job's dense model."""
    return str(_train(job).get("regime") or "standard")


def method_of(row: BoardRow) -> Method:
    """Paper, link and unit of a row's pruner, from its registration (or the provenance the jobs recorded)."""
    meta: dict[str, Any] = {}
    if row.pruner in pruners:
        entry = pruners.get(row.pruner)
        meta = {**entry.as_dict(), **{k: v for k, v in entry.metadata.items() if isinstance(v, str)}}
    else:
        meta = next((j.provenance.get("plugins", {}).get("pruner", {}) for j in row.jobs if j.provenance.get("plugins")), {})
    url = str(meta.get("url") or meta.get("doi") or "")
    if url and not url.startswith("https://"):
        url = "https://doi.org/" + url if re.fullmatch(r"10\.\d{4,}/\S+", url) else ""
    return Method(str(meta.get("paper") or ""), url, row.family, UNITS.get(row.family, ""))


def reference_pruner(board: Board) -> str:
    """The reference pruner of a board: the fine-tuned dense control where the board has one, else the dense model."""
    return CONTROL if any(r.pruner == CONTROL for r in board.rows) else UNTOUCHED


def among_correct(job: JobRecord, col: Column, tm: str) -> float | None:
    """Robust accuracy at `col` among the evaluation images `job` classifies correctly, or None without outcomes."""
    clean, robust = outcomes_of(job, "clean", tm), outcomes_of(job, col, tm)
    if clean is None or robust is None or len(clean) != len(robust) or not clean.any():
        return None
    return float(robust[clean].mean())


def paired(row: BoardRow, control: str, get: Any) -> Paired:
    """Per-seed change of `get(job)` against the job the store's paired tests compared it with."""
    references = row.control_jobs if control == CONTROL else row.dense_jobs
    pairs = []
    for j in row.jobs:
        c = references.get(j.key)
        if c is None or c is j:
            continue
        a, b = get(j), get(c)
        if a is not None and b is not None and not (math.isnan(a) or math.isnan(b)):
            pairs.append((j.seed, a - b))
    return Paired.of(pairs)


def setups_of(board: Board, control: str) -> list[Setup]:
    """One summary per configuration of the board (usually one)."""
    by: dict[str, list[BoardRow]] = defaultdict(list)
    for r in board.rows:
        by[r.setup].append(r)
    out = []
    for key, rows in sorted(by.items()):
        rows = sorted(rows, key=lambda r: r.architecture)
        jobs = [j for r in rows for j in r.jobs]
        j0 = jobs[0]
        train, data = _train(j0), j0.provenance.get("data", {})
        ft = next((j.params["pruned"].get("finetune") for j in jobs if j.params.get("pruned", {}).get("finetune")), None)
        s = Setup(
            key, board.dataset, train.get("n_train"), data.get("train"), train.get("epochs"), (ft or {}).get("epochs"),
            regime_of(j0), j0.params.get("eval", {}).get("n_examples"), sorted({j.seed for j in jobs}), eps_infos(board, rows),
            min(j.protocol for j in jobs), grids=sorted({j.grid for j in jobs if j.grid}),
        )
        for arch in sorted({r.architecture for r in rows}):
            # The anchor is for the model as trained, so the untouched row states it; the control, fine-tuned
            # further, is reported beside it and stands in only when the grid has no untouched row.
            dense = next((r for r in rows if r.architecture == arch and r.pruner == UNTOUCHED), None)
            ctl = next((r for r in rows if r.architecture == arch and r.pruner == control and control != UNTOUCHED), None)
            if dense is None and ctl is None:
                continue
            anchor = ANCHORS.get((board.dataset, arch)) or _registered_anchor(arch)
            s.dense_clean.append((arch, (dense or ctl).clean, anchor))  # type: ignore[union-attr]
            if ctl is not None and dense is not None:
                s.control_clean.append((arch, ctl.clean))
        out.append(s)
    return out


def _registered_anchor(arch: str) -> tuple[float, str] | None:
    if arch not in architectures:
        return None
    meta = architectures.get(arch).metadata
    a = meta.get("anchor")
    return (float(a), str(meta.get("anchor_source", meta.get("paper", "")))) if isinstance(a, (int, float)) else None


def _mark_families(rows: list[ViewRow], columns: Iterable[Column], key: Column | None) -> None:
    """Mark each column's changes as the verdict counts them: significant only where Holm over the rows keeps it."""
    for c in columns:
        keep = family_significant([v.d_robust[c].test for v in rows])
        for v, k in zip(rows, keep):
            v.d_robust[c] = replace(v.d_robust[c], family=k)
            if c == key:
                v.d_key = v.d_robust[c]


def view(board: Board, verdict: Any = None) -> BoardView:
    """The board as shown: reference rows first (unranked), then pruned rows ranked by their change at the key column.

    `verdict(rows, column)` writes the verdict sentence (harness.site.report.verdict); a row without a change
    at the key column ranks after every row with one.
    """
    eps = eps_infos(board)
    control = reference_pruner(board)
    col, strong = key_column(board, eps, control)
    out: list[ViewRow] = []
    for r in board.rows:
        j0 = r.jobs[0]
        ref = is_reference(r)
        # The store's paired tests pick the reference job as the report does (same trained model, same fine-tuning).
        tests = r.vs_dense if control == UNTOUCHED else r.vs_control
        d_robust = {c: Paired.from_test(tests.get(c)) for c in board.columns} if not ref else {}
        d_key = d_robust.get(col) if col else None
        out.append(ViewRow(
            r, ref, None,
            Paired.of(()) if ref else paired(r, control, lambda j: j.get("clean_acc")),
            d_robust, d_key or Paired.of(()),
            Estimate.of(j.get("clean_acc_eval") for j in r.jobs),  # type: ignore[misc]
            j0.params.get("eval", {}).get("n_examples"), regime_of(j0), method_of(r),
        ))
        if not ref:
            for c in board.worst_columns:
                get = functools.partial(among_correct, col=c, tm=board.threat_model)
                change = paired(r, control, get)
                if change.per_seed:
                    out[-1].correct[c] = (Estimate.of((get(j) for j in r.jobs), ACC), change)  # type: ignore[misc]

    def rank_key(v: ViewRow) -> tuple[Any, ...]:
        robust = v.row.robust.get(col) if col else None
        return (v.d_key.mean is None, -(v.d_key.mean or 0.0), -(robust.mean if robust else -1.0), v.row.architecture, v.label, v.row.sparsity)

    _mark_families([v for v in out if not v.reference], board.columns, col)
    refs = sorted((v for v in out if v.reference), key=lambda v: (v.row.architecture, v.row.pruner != control, v.label))
    ranked = sorted((v for v in out if not v.reference), key=rank_key)
    for i, v in enumerate(ranked, 1):
        v.rank = i
    bv = BoardView(board, control, col, strong, eps, setups_of(board, control), refs + ranked)
    bv.single_sparsity = len({v.row.sparsity for v in ranked}) <= 1
    bv.has_latency = any("latency_ms_b1_ratio" in r.ratios for r in board.rows)
    bv.has_costs = any(m in r.ratios for r in board.rows for m in ("params_ratio", "macs_ratio"))
    bv.has_flags = any(r.flags for r in board.rows)
    if verdict is not None and col is not None:
        bv.verdict = str(verdict(board.rows, col))
    return bv
