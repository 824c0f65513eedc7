"""Static leaderboard: Jinja2 templates rendered from the store's query functions, charts as inline SVG."""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from harness.api.config import PROTOCOL_VERSION
from harness.api.files import atomic_write_bytes, atomic_write_text
from harness.api.paths import TEMPLATES_DIR
from harness.api.plugins import architectures, pruners
from harness.api.toml_out import toml_value
from harness.site import findings, plots, report
from harness.site.board import (
    THREAT_LABELS,
    BoardView,
    Paired,
    ViewRow,
    families,
    threat_models,
    view,
)
from harness.site.public import scrub, source_label, source_link
from harness.store.models import Base
from harness.store.queries import (
    RATIOS,
    WORST,
    Board,
    BoardRow,
    JobRecord,
    SubmissionRecord,
    baseline_index,
    job_records,
    leaderboards,
    result_rows,
    status_counts,
    submission_records,
)
from harness.store.session import Store
from harness.store.statistics import MIN_SEEDS, Estimate, PairedTest

TEMPLATES = TEMPLATES_DIR
CSV_FIELDS = ["job_key", "dataset", "architecture", "pruner", "sparsity", "seed", "metric", "attack", "eps", "value"]

# What each stored metric means; the schema page and docs/schema.md list these.
METRICS = {
    "clean_acc": "accuracy on the whole test split",
    "clean_acc_eval": "accuracy on the attacked evaluation subset (the robust accuracies' denominator)",
    "robust_acc": "accuracy under one attack at one eps (attack, eps); an example counts only if also clean-correct",
    "worst_case_acc": "per-example minimum over a threat model's attacks (attack = threat model, eps)",
    "median_perturbation": "median norm of the smallest adversarial perturbation found by a minimal-perturbation attack (attack)",
    "flag_<check>": "a sanity check on the evaluation: 1 raised, 0 passed (e.g. signs of gradient masking)",
    "params, macs, nonzero_params, size_bytes": "cost of the evaluated model; *_dense for the dense model, *_ratio = pruned / dense",
    "latency_ms_b1, latency_ms_b128": "inference latency at batch 1 and 128 (same _dense and _ratio variants)",
    "sparsity_requested, sparsity_achieved": "the grid's sparsity and the one measured in the pruner's own unit",
    "train_seconds, prune_seconds, finetune_seconds, eval_seconds, job_seconds": "wall-clock time of each stage",
    "attack_seconds": "wall-clock time of one attack over every eps (attack)",
    "eval_resumed_seconds": "part of eval_seconds spent by an earlier, interrupted session (resumed evaluations only)",
    "train_img_per_s": "dense training throughput (images per second of training)",
    "eval_batch_size": "the evaluation batch size the job ended with (halved from the configured one after out-of-memory)",
}


def _pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}"


def _signed_pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:+.1f}"


def _eps(x: float | None) -> str:
    if x is None:
        return ""
    if abs(x - round(x, 3)) < 1e-9:
        return f"{x:g}"  # a short decimal such as 0.1 or 0.25 reads best as itself
    num = x * 255
    # Linf budgets are usually k/255 (8/255 = 0.0313...); other long decimals print with 3 significant digits.
    return f"{round(num)}/255" if abs(num - round(num)) < 1e-6 else f"{x:.3g}"


def _num(x: float | None, digits: int = 3) -> str:
    if x is None or x != x:
        return "–"
    return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:,.0f}"


def _sortv(x: float | None) -> str:
    """A data-v attribute value: empty for missing, so the script sorts it last."""
    return "" if x is None or x != x else repr(float(x))


def _est(e: Estimate | None) -> Markup:
    """Mean in % with its 95% interval, as table-cell HTML (numbers only, nothing to escape).

    With fewer than 3 seeds the per-seed values replace the interval; an interval that would leave 0-100 % is
    shown as its clipped range instead of mean ± half-width.
    """
    if e is None:
        return Markup("–")
    if e.half_width is None:
        return Markup(_pct(e.mean))
    if e.n < MIN_SEEDS:  # a t interval from 2 seeds is 12.7 standard errors wide: the seeds themselves say more
        return Markup(f'{_pct(e.mean)}<small class="ci" title="per seed">({", ".join(_pct(x) for x in e.values)})</small>')
    lo, hi = e.mean - e.half_width, e.mean + e.half_width
    if lo < 0 or hi > 1:
        return Markup(f'{_pct(e.mean)}<small class="ci">[{_pct(max(lo, 0.0))}–{_pct(min(hi, 1.0))}]</small>')
    return Markup(f'{_pct(e.mean)}<small class="ci">±{_pct(e.half_width)}</small>')


def _delta(d: Paired | Estimate | None) -> Markup:
    """Signed change in % with its interval (from 3 seeds up, clipped to -100..+100 %) and the paired test's p-value.

    With fewer than 3 seeds a t interval is too wide to mean anything (t = 12.7 at 2 seeds): the per-seed values,
    shown beside the cell, say more.
    """
    e = d.estimate if isinstance(d, Paired) else d
    if e is None:
        return Markup("–")
    text = _signed_pct(e.mean)
    if e.half_width is not None and e.n >= MIN_SEEDS:
        lo, hi = e.mean - e.half_width, e.mean + e.half_width
        if lo < -1 or hi > 1:
            text += f'<small class="ci">[{_signed_pct(max(lo, -1.0))}, {_signed_pct(min(hi, 1.0))}]</small>'
        else:
            text += f'<small class="ci">±{_pct(e.half_width)}</small>'
    p = d.p_value if isinstance(d, Paired) else None
    if p is not None:  # floored, so that an exact tail of 1e-30 does not read as precision
        text += '<small class="p">' + ("p&lt;0.0001" if p < 1e-4 else f"p={p:.2g}") + "</small>"
    return Markup(text)


def _seeds(d: Paired | None) -> str:
    """Per-seed changes as text, e.g. 's0 +1.2, s1 -0.4'."""
    return "" if d is None else ", ".join(f"s{s} {_signed_pct(v)}" for s, v in d.per_seed)


def _dclass(d: Paired | None) -> str:
    """CSS classes of a change: its direction, and `sig` only when Paired.significant (McNemar p < 0.05, >= 3 seeds)."""
    if d is None or d.mean is None or d.mean != d.mean or abs(d.mean) < 5e-4:
        return ""
    return ("up" if d.mean > 0 else "down") + (" sig" if d.significant else "")


def _when(t: datetime | None) -> str:
    """A timestamp to the minute, in UTC."""
    if t is None:
        return "–"
    t = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: float | None) -> str:
    """Seconds as a readable duration: 0.42 s, 12.3 s, 4 min 05 s, 2 h 03 min."""
    if seconds is None or seconds != seconds:
        return "–"
    if seconds < 60:
        return f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _value(metric: str, v: float) -> str:
    """A stored number as a reader wants it: accuracies and sparsities in %, times as durations."""
    if metric.endswith("_acc") or metric.startswith(("clean_acc", "sparsity_")):
        return f"{100 * v:.1f} %"
    if metric.endswith("_seconds"):
        return _duration(v)
    if metric.endswith("_ratio"):
        return f"{v:.3f} ×"
    if metric.startswith("flag_"):
        return "raised" if v >= 0.5 else "passed"
    return _num(v, 4)


def _write(path: Path, text: str) -> None:
    """Write a page atomically (temp file, then rename) without an fsync each: 10,000 fsyncs would dominate a build,
    and a page lost to a power cut is rebuilt by the next `harness site`; a full disk leaves the old page intact."""
    atomic_write_text(path, text, durable=False)


def slug(name: str) -> str:
    """A file-name-safe, collision-free name for a page (names come from the database and may hold anything)."""
    if re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", name) and ".." not in name:
        return name
    clean = re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-")[:40] or "x"
    return f"{clean}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def environment() -> Environment:
    """Jinja environment with autoescaping on and the number filters the templates use."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "xml"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        est=_est, delta=_delta, dclass=_dclass, pct=_pct, signed_pct=_signed_pct, eps=_eps, num=_num, sortv=_sortv, slug=slug,
        seeds=_seeds, when=_when, duration=_duration, tm=lambda t: THREAT_LABELS.get(t, t),
    )
    env.globals.update(WORST=WORST, RATIOS=RATIOS, PROTOCOL_VERSION=PROTOCOL_VERSION, OUTDATED=report.OUTDATED)
    env.globals.update(board_title=findings.title, verdict_grid=findings.verdict_grid, limits=findings.limits, reduced_budget=findings.reduced_budget)
    return env


# ---------------------------------------------------------------- figures


def pruner_colors(labels: Iterable[str], dense: Iterable[str]) -> dict[str, str]:
    """One colour per pruner label across the whole site, by index in name order; dense baselines in black."""
    dense = set(dense)
    others = [label for label in sorted(set(labels)) if label not in dense]
    return {label: plots.color(i) for i, label in enumerate(others)} | {label: plots.DENSE_COLOR for label in dense}


def pruner_markers(labels: Iterable[str], dense: Iterable[str]) -> dict[str, str]:
    """One marker per pruner label, by index in name order (never by hash: two labels must never share a look)."""
    dense = set(dense)
    others = [label for label in sorted(set(labels)) if label not in dense]
    return {label: plots.MARKERS[i % len(plots.MARKERS)] for i, label in enumerate(others)} | {label: plots.REFERENCE_MARKER for label in dense}


@dataclass
class Style:
    """Colour and marker of every pruner label, shared by every chart of the site."""

    colors: dict[str, str]
    markers: dict[str, str]

    def series(self, label: str, points: list[tuple[float, float, float | None]], name: str | None = None, **kw: Any) -> plots.Series:
        """A series in this label's look."""
        return plots.Series(name or label, points, self.colors.get(label, plots.color(0)), self.markers.get(label, "circle"), **kw)


def _est_point(x: float, e: Estimate | None) -> tuple[float, float, float | None] | None:
    return None if e is None else (x, e.mean, e.half_width)


def _suite(v: BoardView, eps: float) -> str:
    info = v.eps_info(eps)
    if info is None:
        return ""
    return ", ".join(info.attacks) + ("" if info.reference else " (lower strength: no reference attack)")


def _row_name(r: ViewRow | BoardRow, multi_arch: bool) -> str:
    row = r.row if isinstance(r, ViewRow) else r
    return row.pruner_label + (f" · {row.architecture}" if multi_arch else "")


def delta_charts(v: BoardView, style: Style, rows: list[ViewRow] | None = None) -> list[tuple[str, str]]:
    """One sparsity: the paired change against the reference row, one panel per eps, a zero line, per-seed ticks."""
    rows = [r for r in (v.rows if rows is None else rows) if not r.reference]
    multi_arch = len({r.row.architecture for r in rows}) > 1
    charts = []
    for col in v.board.worst_columns or v.board.columns[:1]:
        dots = []
        for r in rows:
            d = r.d_robust.get(col)
            if d is None or d.estimate is None:
                continue
            # A 95% interval only from 3 seeds up (from 2 it spans 12.7 standard errors): below that the seeds speak.
            hw = d.estimate.half_width if d.estimate.n >= MIN_SEEDS else None
            dots.append(plots.Dot(_row_name(r, multi_arch), d.estimate.mean, hw, [x for _s, x in d.per_seed],
                                  style.colors.get(r.label, plots.color(0)), style.markers.get(r.label, "circle")))
        if not dots:
            continue
        what = "worst case" if col[0] == WORST else col[0]
        charts.append(("", plots.render_dots(
            f"ε={_eps(col[1])}: Δ robust vs {v.control}" + ("" if col[0] == WORST else f" ({what})"), "change in robust accuracy (points)", dots,
            desc=f"Change in robust accuracy ({what}) against the {v.control} row of the same seed, in percentage points: the mean, "
                 f"each seed's value, and the 95% interval from {MIN_SEEDS} seeds up; attacks at this eps: {_suite(v, col[1])}.",
        )))
    return charts


def cost_charts(v: BoardView, style: Style, rows: list[ViewRow] | None = None) -> list[tuple[str, str]]:
    """Several sparsities: robust accuracy at the ranking column against MACs× and params×, reference rows as lines."""
    col = v.key_column
    if col is None:
        return []
    rows = v.rows if rows is None else rows
    charts = []
    for arch in sorted({r.row.architecture for r in rows}):
        mine = [r for r in rows if r.row.architecture == arch]
        hlines = [plots.HLine(e.mean, r.label) for r in mine if r.reference and (e := r.row.robust.get(col)) is not None]
        for ratio, name in (("macs_ratio", "MACs ×"), ("params_ratio", "params ×")):
            series: dict[str, plots.Series] = {}
            for r in mine:
                cost, e = r.row.ratios.get(ratio), r.row.robust.get(col)
                if r.reference or cost is None or e is None:
                    continue
                series.setdefault(r.label, style.series(r.label, [])).points.append((cost.mean, e.mean, e.half_width))
            if not series:
                continue
            charts.append((arch, plots.render(plots.Chart(
                f"{arch}: worst case ε={_eps(col[1])} vs {name}", f"{name} (pruned / dense)", "robust acc. (%)",
                list(series.values()), hlines, x_domain=(0.0, 1.05), x_format=lambda x: f"{x:.2g}", dodge=4.0,
                desc=f"Worst-case robust accuracy in % over the evaluation subset at ε={_eps(col[1])} ({_suite(v, col[1])}) "
                     f"against the pruned model's {name.split()[0]} as a fraction of the dense model's; lines: reference rows.",
            ))))
    return charts


def robustness_curve(v: BoardView, arch: str, style: Style, limit: int | None = 6) -> str | None:
    """Worst-case accuracy at each eps of the board, evenly spaced and labelled k/255, with clean accuracy at the left.

    Reference rows and the `limit` best-ranked rows of `arch` (all of them with limit None).
    """
    cols = v.board.worst_columns
    if not cols:
        return None
    mine = [r for r in v.rows if r.row.architecture == arch]
    ranked = [r for r in mine if not r.reference]
    shown = [r for r in mine if r.reference] + (ranked if limit is None else ranked[:limit])
    multi_sparsity = len({r.row.sparsity for r in ranked}) > 1
    series = []
    for r in shown:
        pts = [p for i, c in enumerate(cols, 1) if (p := _est_point(float(i), r.row.robust.get(c))) is not None]
        if r.clean_eval is not None:
            pts.insert(0, (0.0, r.clean_eval.mean, r.clean_eval.half_width))
        if pts:
            name = r.label + (f" @ {r.row.sparsity:g}" if multi_sparsity and not r.reference else "")
            series.append(style.series(r.label, pts, name, dash="" if not r.reference else "5 3"))
    if not series:
        return None
    ticks = [(0.0, "clean")] + [(float(i), _eps(c[1])) for i, c in enumerate(cols, 1)]
    more = "" if limit is None or len(ranked) <= limit else f" (reference rows and the {limit} best-ranked of {len(ranked)})"
    return plots.render(
        plots.Chart(f"{arch}: robustness curve{more}", "ε (evenly spaced, not to scale)", "worst-case acc. (%)", series,
                    x_ticks=ticks, x_domain=(-0.4, len(cols) + 0.4), dodge=5.0,
                    desc=f"Accuracy in % over the evaluation subset ({v.rows[0].n_eval or '?'} images): clean, then the worst case "
                         f"over the attacks at each ε; " + "; ".join(f"{_eps(c[1])}: {_suite(v, c[1])}" for c in cols)),
        width=460, height=300,
    )


def sparsity_charts(v: BoardView, style: Style, rows: list[ViewRow]) -> list[tuple[str, str]]:
    """Robust accuracy vs sparsity at the ranking column, one chart per architecture, reference rows as lines."""
    col = v.key_column
    if col is None:
        return []
    charts = []
    for arch in sorted({r.row.architecture for r in rows}):
        mine = [r for r in rows if r.row.architecture == arch]
        hlines = [plots.HLine(e.mean, r.label) for r in mine if r.reference and (e := r.row.robust.get(col)) is not None]
        series: dict[str, plots.Series] = {}
        for r in mine:
            if not r.reference and (p := _est_point(r.row.sparsity, r.row.robust.get(col))) is not None:
                series.setdefault(r.label, style.series(r.label, [])).points.append(p)
        if series:
            charts.append((arch, plots.render(plots.Chart(
                f"{arch}: worst case ε={_eps(col[1])} vs sparsity", "sparsity", "robust acc. (%)", list(series.values()), hlines,
                x_domain=(0.0, 1.0), dodge=4.0,
                desc=f"Worst-case robust accuracy in % at ε={_eps(col[1])} ({_suite(v, col[1])}) against the requested sparsity.",
            ))))
    return charts


def board_figures(v: BoardView, style: Style, rows: list[ViewRow] | None = None) -> list[tuple[str, str]]:
    """The charts that carry information for these rows: Δ per pruner at one sparsity, robust vs cost at several."""
    rows = v.rows if rows is None else rows
    several = len({r.row.sparsity for r in rows if not r.reference}) > 1
    return cost_charts(v, style, rows) if several else delta_charts(v, style, rows)


# ---------------------------------------------------------------- job details


def _table(name: str, values: dict[str, Any] | None) -> list[str]:
    # TOML has no null: an unset option is left out and takes its default.
    return [f"[{name}]"] + [f"{k} = {toml_value(v)}" for k, v in (values or {}).items() if v is not None] + [""]


def reproduce_grid(job: JobRecord) -> str:
    """A grid file that runs exactly this job again (`harness run --grid FILE`); it yields the same job key."""
    pruned = job.params.get("pruned", {})
    dense = pruned.get("dense", {})
    pparams = pruned.get("pruner_params") or {}
    pruner = toml_value({"name": job.pruner, **pparams}) if pparams else toml_value(job.pruner)
    lines = [
        f"name = {toml_value('job-' + job.key)}",
        f"datasets = [{toml_value(job.dataset)}]",
        f"architectures = [{toml_value(job.architecture)}]",
        f"pruners = [{pruner}]",
        f"sparsities = [{toml_value(job.sparsity)}]",
        f"seeds = [{job.seed}]",
        "",
        *_table("train", dense.get("train")),
        *(_table("finetune", pruned.get("finetune")) if "finetune" in pruned else []),
        *_table("eval", job.params.get("eval")),
    ]
    for a in job.params.get("attacks", []):
        lines += ["[[attacks]]", f"name = {toml_value(a['name'])}", f"eps = {toml_value(a['eps'])}"]
        lines += [f"{k} = {toml_value(v)}" for k, v in a.get("params", {}).items() if v is not None] + [""]
    return "\n".join(lines)


def _timings(job: JobRecord) -> list[tuple[str, str]]:
    return sorted(((m if not a else f"{m} ({a})"), _duration(v)) for (m, a, _e), v in job.metrics.items() if m.endswith("_seconds"))


def _pretty(data: dict[str, Any]) -> str:
    """JSON with one line per key, two levels deep: readable, and written by the C encoder (indent= is pure Python)."""
    def block(d: dict[str, Any], pad: str) -> str:
        items = [f'{pad}  {json.dumps(k)}: {block(v, pad + "  ") if isinstance(v, dict) and v and not pad else json.dumps(v, sort_keys=True, default=str)}'
                 for k, v in sorted(d.items())]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}" if items else "{}"

    return block(data, "")


def _metric_rows(job: JobRecord) -> Markup:
    """The job page's metrics table body, built in Python: 10,000 pages of ~50 rows are too many template calls."""
    rows = sorted(((m, a, e, v) for (m, a, e), v in job.metrics.items()), key=lambda t: (t[0], t[1], -1 if t[2] is None else t[2]))
    return Markup("\n".join(
        f'<tr><td class="name">{html.escape(m)}</td><td class="name">{html.escape(a)}</td><td data-v="{_sortv(e)}">{_eps(e)}</td>'
        f'<td data-v="{_sortv(v)}">{html.escape(_value(m, v))}</td></tr>'
        for m, a, e, v in rows
    ))


# ---------------------------------------------------------------- build


@dataclass
class PluginInfo:
    """What the site says about one plugin: registry entry (if loaded) and the source hashes jobs recorded."""

    name: str
    description: str
    paper: str
    family: str
    source: str  # repo-relative path, or the file named by its sha256: never a path of the building machine
    source_url: str | None
    sha256: str
    distribution: str | None
    recorded: list[tuple[str, int]]  # (sha256 recorded by jobs, number of jobs)


def _plugin_info(
    kind: str, name: str, jobs: list[JobRecord], family: str = "", repo_url: str | None = None, submitted: SubmissionRecord | None = None
) -> PluginInfo:
    reg = {"pruner": pruners, "architecture": architectures}[kind]
    recorded: dict[str, int] = defaultdict(int)
    prov: dict[str, Any] = {}
    commit = None
    for j in jobs:
        p = j.provenance.get("plugins", {}).get(kind, {})
        commit = commit or j.provenance.get("environment", {}).get("git_commit")
        if p:
            prov = p
            recorded[str(p.get("sha256", ""))] += 1
    info = reg.get(name).as_dict() if name in reg else prov
    if submitted is not None:  # a submission: what its database recorded, whoever renders the site
        info = {"description": submitted.description, "paper": submitted.paper, "sha256": submitted.sha256,
                "source": f"submitted by {submitted.author} as {submitted.original_filename}, {submitted.submitted_at:%Y-%m-%d}"}
    raw, sha = str(info.get("source", "")), str(info.get("sha256", ""))
    return PluginInfo(
        name,
        str(info.get("description", "")),
        str(info.get("paper", "")),
        family,
        source_label(raw, sha),
        source_link(raw, commit, repo_url),
        sha,
        info.get("distribution"),
        sorted(recorded.items(), key=lambda kv: -kv[1]),
    )


def _schema() -> list[dict[str, Any]]:
    tables = []
    for t in Base.metadata.sorted_tables:
        cols = []
        for c in t.columns:
            fk = ", ".join(f"{f.column.table.name}.{f.column.name}" for f in c.foreign_keys)
            cols.append({"name": c.name, "type": str(c.type), "nullable": c.nullable, "pk": c.primary_key, "fk": fk, "doc": c.comment or ""})
        # Sorted: a table's constraints are a set, so their order would change from one process to the next.
        uniques = sorted(", ".join(col.name for col in con.columns) for con in t.constraints if con.__class__.__name__ == "UniqueConstraint")
        tables.append({"name": t.name, "columns": cols, "unique": uniques})
    return tables


def build_site(store: Store, out: Path, repo_url: str | None = None, stages: dict[str, float] | None = None) -> Path:
    """Render the leaderboard, per-pruner/architecture/job pages and CSV/JSON downloads into `out`; returns index.html.

    `repo_url` (else $HARNESS_REPO_URL), an https URL of the repository, links plugin sources at the jobs' commit.
    `stages`, when given, receives the CPU seconds of each stage (benchmarks/site.py prints them).
    """
    stages = {} if stages is None else stages
    clock = [time.process_time()]

    def stage(name: str) -> None:
        now = time.process_time()
        stages[name] = stages.get(name, 0.0) + now - clock[0]
        clock[0] = now

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fams = families()
    with store.session() as s:
        jobs = job_records(s)
        boards = leaderboards(s, fams, threat_models(), jobs)
        rows = [r.as_dict() for r in result_rows(s)]
        counts = status_counts(s)
        # The submissions of this database (not of whichever harness renders it).
        submitted = {r.name: r for r in submission_records(s)}
    stage("queries")
    env = environment()
    views = [view(part, findings.verdict) for b in boards for part in findings.split(b)]
    all_rows = [r for v in views for r in v.rows]
    refs = [r.label for r in all_rows if r.reference]
    style = Style(pruner_colors((r.label for r in all_rows), refs), pruner_markers((r.label for r in all_rows), refs))
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    common = {"generated": generated, "colors": style.colors, "markers": style.markers}

    stage("board views")
    _write_downloads(out, rows, jobs, boards)
    _write(out / "submissions.json", json.dumps([r.as_dict() for r in submitted.values()], indent=1, default=str))
    stage("downloads")
    assets = out / "assets"
    assets.mkdir(exist_ok=True)
    for name in ("site.css", "site.js"):
        atomic_write_bytes(assets / name, (TEMPLATES / name).read_bytes())

    row_families = {r.row.pruner: r.row.family for r in all_rows}
    filters = {
        "architectures": sorted({r.row.architecture for r in all_rows}),
        "families": sorted({r.row.family for r in all_rows}),
        "sparsities": sorted({r.row.sparsity for r in all_rows}),
    }
    figures = {}
    for v in views:
        archs = sorted({r.row.architecture for r in v.rows})
        curves = [(a, c) for a in archs[:4] if (c := robustness_curve(v, a, style)) is not None]
        figures[v.board.slug] = {"main": board_figures(v, style), "curves": curves}
    index = out / "index.html"
    _write(
        index,
        env.get_template("index.html").render(
            root="", views=views, counts=counts, n_results=len(rows), n_jobs=len(jobs),
            unfinished=sum(counts.values()) - counts.get("done", 0) - counts.get("failed", 0), filters=filters, figures=figures,
            pruner_names=sorted({j.pruner for j in jobs}), arch_names=sorted({j.architecture for j in jobs}), **common,
        )
    )

    stage("index")
    jobs_by: dict[str, dict[str, list[JobRecord]]] = {"pruner": defaultdict(list), "architecture": defaultdict(list)}
    for j in jobs:
        jobs_by["pruner"][j.pruner].append(j)
        jobs_by["architecture"][j.architecture].append(j)
    page = env.get_template("plugin.html")
    for kind, folder in (("pruner", "pruners"), ("architecture", "architectures")):
        (out / folder).mkdir(exist_ok=True)
        for name, its_jobs in jobs_by[kind].items():
            info = _plugin_info(kind, name, its_jobs, row_families.get(name, "") if kind == "pruner" else "", repo_url,
                                submitted.get(name) if kind == "pruner" else None)
            subs, figs = [], {}
            for v in views:
                keep = [r for r in v.rows if (r.row.pruner if kind == "pruner" else r.row.architecture) == name]
                if not keep:
                    continue
                if kind == "pruner":
                    archs = {r.row.architecture for r in keep}
                    shown = [r for r in v.rows if r.reference and r.row.architecture in archs] + keep
                    fig = board_figures(v, style, shown)
                    if len({r.row.sparsity for r in keep}) > 1:
                        fig = sparsity_charts(v, style, shown) + fig
                else:
                    curve = robustness_curve(v, name, style, limit=12)
                    fig = ([(name, curve)] if curve else []) + board_figures(v, style, keep)
                    shown = keep
                subs.append((v, [r for r in shown if r in keep or r.reference]))
                figs[v.board.slug] = fig
            _write(out / folder / f"{slug(name)}.html", page.render(root="../", kind=kind, info=info, subs=subs, jobs=its_jobs, figures=figs, **common))

    stage("pruner and architecture pages")
    job_page = env.get_template("job.html")
    (out / "jobs").mkdir(exist_ok=True)
    baselines = baseline_index(jobs, fams)
    for j in jobs:
        base = _baseline(j, baselines)
        _write(
            out / "jobs" / f"{slug(j.key)}.html",
            job_page.render(
                root="../", job=j, baseline=None if base is None or base.key == j.key else base, timings=_timings(j),
                metrics=_metric_rows(j), params=_pretty(scrub(j.params)), provenance=_pretty(scrub(j.provenance)),
                grid=reproduce_grid(j), flags=j.flags(), **common,
            )
        )
    stage("job pages")
    _write(out / "schema.html", env.get_template("schema.html").render(root="", tables=_schema(), metrics=METRICS, fields=CSV_FIELDS, **common))
    return index


def _baseline(job: JobRecord, index: dict[str, list[JobRecord]]) -> JobRecord | None:
    """queries.baseline_of without hashing: the same choice (same trained model, same evaluation if any), by dict equality."""
    candidates = index.get(job.dense_key, [])
    ev, at = job.params.get("eval"), job.params.get("attacks")
    same = [c for c in candidates if c.params.get("eval") == ev and c.params.get("attacks") == at]
    return (same or candidates or [None])[0]


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


def _write_downloads(out: Path, rows: list[dict[str, Any]], jobs: list[JobRecord], boards: list[Board]) -> None:
    _write(out / "results.json", json.dumps(rows, separators=(",", ":")))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")  # a plain writer: DictWriter costs seconds at 500,000 rows
    writer.writerow(CSV_FIELDS)
    writer.writerows([r[f] for f in CSV_FIELDS] for r in rows)
    _write(out / "results.csv", buf.getvalue())
    meta = [
        {"job_key": j.key, "dataset": j.dataset, "architecture": j.architecture, "pruner": j.pruner_label, "sparsity": j.sparsity, "seed": j.seed,
         "duration_s": j.duration_s, "finished_at": j.finished_at.isoformat() if j.finished_at else None,
         "params": scrub(j.params), "provenance": scrub(j.provenance)}
        for j in jobs
    ]
    _write(out / "jobs.json", json.dumps(meta, separators=(",", ":"), default=str))
    records = leaderboard_records(boards)
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for rec in records for k in rec))
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in rec.items()} for rec in records)
    _write(out / "leaderboard.csv", buf.getvalue())

