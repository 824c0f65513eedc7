"""Static leaderboard: Jinja2 templates rendered from the store's query functions, charts as inline SVG."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from harness.api.files import atomic_write_bytes, atomic_write_text
from harness.api.paths import TEMPLATES_DIR
from harness.api.plugins import architectures, attacks, pruners
from harness.api.toml_out import toml_value
from harness.site import plots
from harness.store.models import Base
from harness.store.queries import (
    RATIOS,
    WORST,
    Board,
    BoardRow,
    Estimate,
    JobRecord,
    SubmissionRecord,
    baseline_index,
    baseline_of,
    job_records,
    leaderboards,
    result_rows,
    status_counts,
    submission_records,
)
from harness.store.session import Store

TEMPLATES = TEMPLATES_DIR
THREAT_LABELS = {"linf": "L∞", "l2": "L2", "": "no attack", "unknown": "unknown threat model"}
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
    """Mean in % with its confidence interval, as table-cell HTML (numbers only, nothing to escape)."""
    if e is None:
        return Markup("–")
    ci = f'<small class="ci">±{_pct(e.half_width)}</small>' if e.half_width is not None else ""
    return Markup(_pct(e.mean) + ci)


def _delta(e: Estimate | None) -> Markup:
    """Signed change in % with its confidence interval."""
    if e is None:
        return Markup("–")
    ci = f'<small class="ci">±{_pct(e.half_width)}</small>' if e.half_width is not None else ""
    return Markup(_signed_pct(e.mean) + ci)


def _dclass(e: Estimate | None) -> str:
    """CSS classes of a change: its direction, and `sig` when the 95% interval excludes zero."""
    if e is None or e.mean != e.mean or abs(e.mean) < 5e-4:
        return ""
    cls = "up" if e.mean > 0 else "down"
    return cls + (" sig" if e.half_width is not None and abs(e.mean) > e.half_width else "")


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
    env.filters.update(est=_est, delta=_delta, dclass=_dclass, pct=_pct, signed_pct=_signed_pct, eps=_eps, num=_num, sortv=_sortv, slug=slug, tm=lambda t: THREAT_LABELS.get(t, t))
    env.globals.update(WORST=WORST, RATIOS=RATIOS)
    return env


def families() -> dict[str, str]:
    """Pruner name -> family, for registered pruners."""
    return {e.name: str(e.metadata.get("family") or getattr(e.obj, "family", "")) for e in pruners.entries()}


def threat_models() -> dict[str, str]:
    """Attack name -> threat model, for registered attacks."""
    return {e.name: str(getattr(e.obj, "threat_model", "")) for e in attacks.entries()}


# ---------------------------------------------------------------- figures


def pruner_colors(labels: Iterable[str], dense: Iterable[str]) -> dict[str, str]:
    """One colour per pruner label across the whole site; dense baselines in black."""
    dense = set(dense)
    out, i = {}, 0
    for label in sorted(set(labels)):
        if label in dense:
            out[label] = plots.DENSE_COLOR
        else:
            out[label] = plots.color(i)
            i += 1
    return out


def _est_point(x: float, e: Estimate | None) -> tuple[float, float, float | None] | None:
    return None if e is None else (x, e.mean, e.half_width)


def sparsity_charts(board: Board, colors: dict[str, str], rows: list[BoardRow] | None = None) -> list[tuple[str, str]]:
    """Robust accuracy vs sparsity, one chart per (architecture, eps), one line per pruner, dense as a reference line."""
    rows = board.rows if rows is None else rows
    charts = []
    by_arch: dict[str, list[BoardRow]] = defaultdict(list)
    for r in rows:
        by_arch[r.architecture].append(r)
    multi_setup = len(board.setups) > 1
    for arch in sorted(by_arch):
        for col in board.worst_columns or board.columns[:1]:
            series: dict[str, plots.Series] = {}
            hlines = []
            for r in by_arch[arch]:
                label = r.pruner_label + (f" [{r.setup}]" if multi_setup else "")
                e = r.robust.get(col)
                if r.is_dense:
                    if e is not None:
                        hlines.append(plots.HLine(e.mean, f"dense {label}".strip() if multi_setup else "dense"))
                    continue
                p = _est_point(r.sparsity, e)
                if p is not None:
                    s = series.setdefault(label, plots.Series(label, [], colors.get(r.pruner_label, plots.color(0)), _marker_for(label)))
                    s.points.append(p)
            if not series and not hlines:
                continue
            what = "worst case" if col[0] == WORST else col[0]
            charts.append((arch,
                plots.render(
                    plots.Chart(
                        f"{arch}: {what} ε={_eps(col[1])}",
                        "sparsity",
                        "robust acc. (%)",
                        list(series.values()),
                        hlines,
                        x_domain=(0.0, max([r.sparsity for r in by_arch[arch]] + [0.1]) * 1.05),
                    )
                ),
            ))
    return charts


def _marker_for(label: str) -> str:
    return plots.MARKERS[int(hashlib.sha256(label.encode()).hexdigest(), 16) % len(plots.MARKERS)]


def pareto_chart(board: Board, colors: dict[str, str]) -> str | None:
    """Clean vs robust (mean worst case over eps) for every row, with the Pareto front of the board."""
    series: dict[str, plots.Series] = {}
    pts = []
    for r in board.rows:
        if r.clean is None or r.score is None:
            continue
        key = r.pruner_label
        s = series.setdefault(key, plots.Series(key, [], colors.get(key, plots.color(0)), "square" if r.is_dense else "circle", line=False))
        s.points.append((r.clean.mean, r.score.mean, None))
        pts.append((r.clean.mean, r.score.mean))
    if not pts:
        return None
    return plots.render(
        plots.Chart(
            f"{board.dataset} {THREAT_LABELS.get(board.threat_model, board.threat_model)}: clean vs robust",
            "clean acc. (%)",
            "mean worst-case acc. (%)",
            list(series.values()),
            front=plots.pareto_front(pts),
            x_format=lambda v: f"{100 * v:.0f}",
        ),
        width=420,
        height=300,
    )


def robustness_curves(board: Board, arch: str, colors: dict[str, str]) -> str | None:
    """Worst-case accuracy vs eps (eps 0 = clean accuracy on the attacked subset), one line per row of `arch`."""
    rows = [r for r in board.rows if r.architecture == arch]
    sparsities = sorted({r.sparsity for r in rows if not r.is_dense})
    series = []
    for r in sorted(rows, key=lambda r: (r.pruner_label, r.sparsity)):
        pts = [p for c in board.worst_columns if (p := _est_point(c[1], r.robust.get(c))) is not None]
        start = Estimate.of(j.get("clean_acc_eval") for j in r.jobs)  # type: ignore[misc]
        if start is not None and pts:
            pts.insert(0, (0.0, start.mean, start.half_width))
        if not pts:
            continue
        dash = "" if r.is_dense else plots.DASHES[sparsities.index(r.sparsity) % len(plots.DASHES)]
        label = "dense" if r.is_dense else f"{r.pruner_label} @ {r.sparsity:g}"
        series.append(plots.Series(label, pts, colors.get(r.pruner_label, plots.color(0)), _marker_for(r.pruner_label), dash))
    if not series:
        return None
    return plots.render(
        plots.Chart(f"{arch}: robustness curves ({board.dataset}, {THREAT_LABELS.get(board.threat_model, board.threat_model)})", "ε", "worst-case acc. (%)", series, x_format=_eps),
        width=420,
        height=300,
    )


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


def _timings(job: JobRecord) -> list[tuple[str, float]]:
    return sorted(((m if not a else f"{m} ({a})"), v) for (m, a, _e), v in job.metrics.items() if m.endswith("_seconds"))


def _metric_rows(job: JobRecord) -> list[tuple[str, str, float | None, float]]:
    return sorted(((m, a, e, v) for (m, a, e), v in job.metrics.items()), key=lambda t: (t[0], t[1], -1 if t[2] is None else t[2]))


# ---------------------------------------------------------------- build


@dataclass
class PluginInfo:
    """What the site says about one plugin: registry entry (if loaded) and the source hashes jobs recorded."""

    name: str
    description: str
    paper: str
    family: str
    source: str
    sha256: str
    distribution: str | None
    recorded: list[tuple[str, int]]  # (sha256 recorded by jobs, number of jobs)


def _plugin_info(kind: str, name: str, jobs: list[JobRecord], family: str = "", submitted: SubmissionRecord | None = None) -> PluginInfo:
    reg = {"pruner": pruners, "architecture": architectures}[kind]
    recorded: dict[str, int] = defaultdict(int)
    prov: dict[str, Any] = {}
    for j in jobs:
        p = j.provenance.get("plugins", {}).get(kind, {})
        if p:
            prov = p
            recorded[str(p.get("sha256", ""))] += 1
    info = reg.get(name).as_dict() if name in reg else prov
    if submitted is not None:  # a submission: what its database recorded, whoever renders the site
        info = {"description": submitted.description, "paper": submitted.paper, "sha256": submitted.sha256,
                "source": f"submitted by {submitted.author} as {submitted.original_filename}, {submitted.submitted_at:%Y-%m-%d}"}
    return PluginInfo(
        name,
        str(info.get("description", "")),
        str(info.get("paper", "")),
        family,
        str(info.get("source", "")),
        str(info.get("sha256", "")),
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
        uniques = [", ".join(col.name for col in con.columns) for con in t.constraints if con.__class__.__name__ == "UniqueConstraint"]
        tables.append({"name": t.name, "columns": cols, "unique": uniques})
    return tables


def build_site(store: Store, out: Path) -> Path:
    """Render the leaderboard, per-pruner/architecture/job pages and CSV/JSON downloads into `out`; returns index.html."""
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
    env = environment()
    all_rows = [r for b in boards for r in b.rows]
    colors = pruner_colors((r.pruner_label for r in all_rows), (r.pruner_label for r in all_rows if r.is_dense))
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    common = {"generated": generated, "colors": colors}

    _write_downloads(out, rows, jobs, boards)
    atomic_write_text(out / "submissions.json", json.dumps([r.as_dict() for r in submitted.values()], indent=1, default=str))
    assets = out / "assets"
    assets.mkdir(exist_ok=True)
    for name in ("site.css", "site.js"):
        atomic_write_bytes(assets / name, (TEMPLATES / name).read_bytes())

    row_families = {r.pruner: r.family for r in all_rows}
    filters = {
        "architectures": sorted({r.architecture for r in all_rows}),
        "families": sorted({r.family for r in all_rows}),
        "sparsities": sorted({r.sparsity for r in all_rows}),
    }
    figures = {b.slug: {"sparsity": sparsity_charts(b, colors), "pareto": pareto_chart(b, colors)} for b in boards}
    index = out / "index.html"
    atomic_write_text(
        index,
        env.get_template("index.html").render(
            root="", boards=boards, counts=counts, n_results=len(rows), n_jobs=len(jobs),
            unfinished=sum(counts.values()) - counts.get("done", 0) - counts.get("failed", 0), filters=filters, figures=figures,
            pruner_names=sorted({j.pruner for j in jobs}), arch_names=sorted({j.architecture for j in jobs}), **common,
        )
    )

    jobs_by: dict[str, dict[str, list[JobRecord]]] = {"pruner": defaultdict(list), "architecture": defaultdict(list)}
    for j in jobs:
        jobs_by["pruner"][j.pruner].append(j)
        jobs_by["architecture"][j.architecture].append(j)
    page = env.get_template("plugin.html")
    for kind, folder in (("pruner", "pruners"), ("architecture", "architectures")):
        (out / folder).mkdir(exist_ok=True)
        for name, its_jobs in jobs_by[kind].items():
            info = _plugin_info(kind, name, its_jobs, row_families.get(name, "") if kind == "pruner" else "", submitted.get(name) if kind == "pruner" else None)
            sub = [_restrict(b, kind, name) for b in boards]
            sub = [b for b in sub if b.rows]
            figs = {}
            for b in sub:
                if kind == "architecture":
                    curves = robustness_curves(b, name, colors)
                    figs[b.slug] = ([(name, curves)] if curves else []) + [c for c in sparsity_charts(b, colors) if c[0] == name]
                else:
                    full = next(x for x in boards if x.slug == b.slug)
                    dense = [r for r in full.rows if r.is_dense and r.architecture in {x.architecture for x in b.rows}]
                    figs[b.slug] = sparsity_charts(full, colors, b.rows + dense)
            atomic_write_text(
                out / folder / f"{slug(name)}.html",
                page.render(root="../", kind=kind, info=info, boards=sub, jobs=its_jobs, figures=figs, **common)
            )

    job_page = env.get_template("job.html")
    (out / "jobs").mkdir(exist_ok=True)
    baselines = baseline_index(jobs, fams)
    for j in jobs:
        base = baseline_of(j, baselines)
        atomic_write_text(
            out / "jobs" / f"{slug(j.key)}.html",
            job_page.render(
                root="../", job=j, baseline=None if base is None or base.key == j.key else base, timings=_timings(j),
                metrics=_metric_rows(j), params=json.dumps(j.params, indent=2, sort_keys=True),
                provenance=json.dumps(j.provenance, indent=2, sort_keys=True), grid=reproduce_grid(j), flags=j.flags(), **common,
            )
        )
    atomic_write_text(out / "schema.html", env.get_template("schema.html").render(root="", tables=_schema(), metrics=METRICS, fields=CSV_FIELDS, **common))
    return index


def _restrict(board: Board, kind: str, name: str) -> Board:
    keep = [r for r in board.rows if (r.pruner if kind == "pruner" else r.architecture) == name]
    cols = [c for c in board.columns if any(c in r.robust for r in keep)]
    return Board(board.dataset, board.threat_model, cols, keep)


def _estimate_fields(prefix: str, e: Estimate | None) -> dict[str, Any]:
    return {prefix: None if e is None else e.mean, f"{prefix}_ci95": None if e is None else e.half_width}


def leaderboard_records(boards: list[Board]) -> list[dict[str, Any]]:
    """The leaderboards flattened, one record per row with means and 95% CI half-widths (leaderboard.csv)."""
    out = []
    for b in boards:
        for r in b.rows:
            rec: dict[str, Any] = {
                "dataset": b.dataset, "threat_model": b.threat_model, "rank": r.rank, "architecture": r.architecture,
                "pruner": r.pruner_label, "family": r.family, "sparsity": r.sparsity, "setup": r.setup,
                "seeds": " ".join(map(str, r.seeds)), "job_keys": " ".join(j.key for j in r.jobs),
            }
            rec |= _estimate_fields("clean_acc", r.clean) | _estimate_fields("delta_clean_acc", r.delta_clean)
            rec |= _estimate_fields("mean_worst_case_acc", r.score) | _estimate_fields("delta_mean_worst_case_acc", r.delta_score)
            for c in b.columns:
                name = f"{'worst_case' if c[0] == WORST else c[0]}@{c[1]:g}"
                rec |= _estimate_fields(name, r.robust.get(c)) | _estimate_fields(f"delta_{name}", r.delta_robust.get(c))
            for m in RATIOS:
                rec |= _estimate_fields(m, r.ratios.get(m))
            rec["flags"] = " ".join(f"{k}:{v}" for k, v in r.flags.items())
            out.append(rec)
    return out


def _write_downloads(out: Path, rows: list[dict[str, Any]], jobs: list[JobRecord], boards: list[Board]) -> None:
    atomic_write_text(out / "results.json", json.dumps(rows, separators=(",", ":")))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())
    meta = [
        {"job_key": j.key, "dataset": j.dataset, "architecture": j.architecture, "pruner": j.pruner_label, "sparsity": j.sparsity, "seed": j.seed,
         "duration_s": j.duration_s, "finished_at": j.finished_at.isoformat() if j.finished_at else None, "params": j.params, "provenance": j.provenance}
        for j in jobs
    ]
    atomic_write_text(out / "jobs.json", json.dumps(meta, separators=(",", ":"), default=str))
    records = leaderboard_records(boards)
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for rec in records for k in rec))
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in rec.items()} for rec in records)
    atomic_write_text(out / "leaderboard.csv", buf.getvalue())

