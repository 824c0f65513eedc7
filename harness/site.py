"""Static leaderboard: Jinja2 templates rendered from the store's query functions."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from harness.plugins import pruners
from harness.store.queries import leaderboards, result_rows, status_counts
from harness.store.session import Store

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}"


def _signed_pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:+.1f}"


def _eps(x: float) -> str:
    for den in (255, 16, 10, 100):
        num = x * den
        if abs(num - round(num)) < 1e-9 and round(num) != 0:
            return f"{round(num)}/{den}" if den == 255 else f"{x:g}"
    return f"{x:g}"


def environment() -> Environment:
    """Jinja environment with autoescaping on and the number filters the templates use."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "xml"]))
    env.filters.update(pct=_pct, signed_pct=_signed_pct, eps=_eps)
    return env


def families() -> dict[str, str]:
    """Pruner name -> family, for registered pruners."""
    return {e.name: getattr(e.obj, "family", "") for e in pruners.entries()}


def build_site(store: Store, out: Path) -> Path:
    """Render index.html plus CSV/JSON downloads into `out`; returns the index path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with store.session() as s:
        boards = leaderboards(s, families())
        rows = [r.as_dict() for r in result_rows(s)]
        counts = status_counts(s)
    _write_downloads(out, rows)
    context: dict[str, Any] = {
        "boards": boards,
        "counts": counts,
        "n_results": len(rows),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    index = out / "index.html"
    index.write_text(environment().get_template("index.html").render(**context))
    return index


def _write_downloads(out: Path, rows: list[dict[str, Any]]) -> None:
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    buf = io.StringIO()
    fields = ["job_key", "dataset", "architecture", "pruner", "sparsity", "seed", "metric", "attack", "eps", "value"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    (out / "results.csv").write_text(buf.getvalue())
