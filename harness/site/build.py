"""Static leaderboard: Jinja2 templates rendered from the store's query functions, charts as inline SVG."""

from __future__ import annotations

import html
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy import UniqueConstraint

from harness.api.config import PROTOCOL_VERSION
from harness.api.files import WriteError, atomic_write_bytes, check_writable
from harness.api.paths import TEMPLATES_DIR
from harness.api.plugins import architectures, pruners
from harness.api.registry import Registry
from harness.api.toml_out import toml_value
from harness.site import findings, report
from harness.site import formatting as fmt
from harness.site.board import THREAT_LABELS, families, threat_models, view
from harness.site.downloads import CSV_FIELDS, write_downloads, write_file
from harness.site.figures import (
    Style,
    board_figures,
    pruner_colors,
    pruner_markers,
    robustness_curve,
    sparsity_charts,
)
from harness.site.formatting import slug
from harness.site.public import scrub, source_label, source_link
from harness.store.boards import RATIOS, WORST, baseline_index, leaderboards
from harness.store.models import Base
from harness.store.queries import JobRecord, SubmissionRecord, job_records, result_rows, status_counts, submission_records
from harness.store.session import Store

TEMPLATES = TEMPLATES_DIR

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


def environment() -> Environment:
    """Jinja environment with autoescaping on and the number filters the templates use."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "xml"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        est=fmt.est, delta=fmt.delta, dclass=fmt.dclass, pct=fmt.pct, signed_pct=fmt.signed_pct, eps=fmt.eps, num=fmt.num,
        sortv=fmt.sortv, slug=slug, seeds=fmt.seeds, when=fmt.when, duration=fmt.duration, tm=lambda t: THREAT_LABELS.get(t, t),
    )
    env.globals.update(WORST=WORST, RATIOS=RATIOS, PROTOCOL_VERSION=PROTOCOL_VERSION, OUTDATED=report.OUTDATED)
    env.globals.update(board_title=findings.title, verdict_grid=findings.verdict_grid, limits=findings.limits, reduced_budget=findings.reduced_budget)
    return env


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
    return sorted(((m if not a else f"{m} ({a})"), fmt.duration(v)) for (m, a, _e), v in job.metrics.items() if m.endswith("_seconds"))


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
        f'<tr><td class="name">{html.escape(m)}</td><td class="name">{html.escape(a)}</td><td data-v="{fmt.sortv(e)}">{fmt.eps(e)}</td>'
        f'<td data-v="{fmt.sortv(v)}">{html.escape(fmt.value(m, v))}</td></tr>'
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
    registries: dict[str, Registry[Any]] = {"pruner": pruners, "architecture": architectures}
    reg = registries[kind]
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
        uniques = sorted(", ".join(col.name for col in con.columns) for con in t.constraints if isinstance(con, UniqueConstraint))
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
    check_writable(out, "--site-dir")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(exc.errno or 0, f"cannot create the site folder {out}: {exc.strerror or exc}; pass another --site-dir.") from None
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
    write_downloads(out, rows, jobs, boards)
    write_file(out / "submissions.json", json.dumps([r.as_dict() for r in submitted.values()], indent=1, default=str))
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
    write_file(
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
                    kept_archs = {r.row.architecture for r in keep}
                    shown = [r for r in v.rows if r.reference and r.row.architecture in kept_archs] + keep
                    fig = board_figures(v, style, shown)
                    if len({r.row.sparsity for r in keep}) > 1:
                        fig = sparsity_charts(v, style, shown) + fig
                else:
                    curve = robustness_curve(v, name, style, limit=12)
                    fig = ([(name, curve)] if curve else []) + board_figures(v, style, keep)
                    shown = keep
                subs.append((v, [r for r in shown if r in keep or r.reference]))
                figs[v.board.slug] = fig
            write_file(out / folder / f"{slug(name)}.html", page.render(root="../", kind=kind, info=info, subs=subs, jobs=its_jobs, figures=figs, **common))

    stage("pruner and architecture pages")
    job_page = env.get_template("job.html")
    (out / "jobs").mkdir(exist_ok=True)
    baselines = baseline_index(jobs, fams)
    for j in jobs:
        base = _baseline(j, baselines)
        write_file(
            out / "jobs" / f"{slug(j.key)}.html",
            job_page.render(
                root="../", job=j, baseline=None if base is None or base.key == j.key else base, timings=_timings(j),
                metrics=_metric_rows(j), params=_pretty(scrub(j.params)), provenance=_pretty(scrub(j.provenance)),
                grid=reproduce_grid(j), flags=j.flags(), **common,
            )
        )
    stage("job pages")
    write_file(out / "schema.html", env.get_template("schema.html").render(root="", tables=_schema(), metrics=METRICS, fields=CSV_FIELDS, **common))
    return index


def _baseline(job: JobRecord, index: dict[str, list[JobRecord]]) -> JobRecord | None:
    """queries.baseline_of without hashing: the same choice (same trained model, same evaluation if any), by dict equality."""
    candidates = index.get(job.dense_key, [])
    ev, at = job.params.get("eval"), job.params.get("attacks")
    same = [c for c in candidates if c.params.get("eval") == ev and c.params.get("attacks") == at]
    return next(iter(same or candidates), None)
