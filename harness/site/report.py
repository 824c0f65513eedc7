"""The study report: each pruned row against the fine-tuned dense control and the untouched dense model, paired, as Markdown."""

from __future__ import annotations

from collections.abc import Callable

from harness.api.errors import HarnessError
from harness.site.board import BoardView, families, setups_of, threat_models, view
from harness.site.findings import (
    limits,
    reduced_budget,
    setup_text,
    split,
    title,
    verdict,
    verdict_grid,
)
from harness.site.formatting import eps as _eps
from harness.site.formatting import pct, signed_pct
from harness.store.boards import WORST, WORST_LOWER, Board, BoardRow, Column, leaderboards
from harness.store.queries import status_by_grid
from harness.store.session import Store
from harness.store.statistics import MIN_SEEDS, SIGNIFICANCE, Estimate, PairedTest, family_significant

OUTDATED = "†"


def _pct(e: Estimate | None) -> str:
    if e is None:
        return "–"
    text = f"{100 * e.mean:.1f}"
    if e.half_width is None:
        return text
    if e.n < MIN_SEEDS:  # an interval from two seeds says little: show the seeds themselves
        return text + " [" + ", ".join(f"{100 * v:.1f}" for v in e.values) + "]"
    return text + f" [{100 * e.low:.1f}, {100 * e.high:.1f}]"  # type: ignore[operator]


def _col(c: Column | str) -> str:
    if isinstance(c, str):  # "clean", the only column that is not (attack, eps)
        return c
    name, eps = c
    return f"{name} {_eps(eps)}"


def paired(t: PairedTest | None, interval: bool = False, mark: bool = False) -> str:
    """A paired delta in points with its p-value; bold when `mark`, per-seed deltas when seeds are few.

    With `interval`, rows with enough seeds also give the 95 % paired score interval of the delta.
    """
    if t is None:
        return "–"
    text = f"{100 * t.delta:+.1f}"
    if t.n_seeds < MIN_SEEDS:
        text += " [" + ", ".join(f"{100 * d:+.1f}" for d in t.per_seed) + "]"
    ci = t.interval() if interval and t.n_seeds >= MIN_SEEDS else None
    if t.p_value is not None:
        text += f" ({100 * ci[0]:+.1f} to {100 * ci[1]:+.1f}; p={t.p_value:.2g})" if ci else f" (p={t.p_value:.2g})"
    return f"**{text}**" if mark else text


def paired_cells(rows: list[BoardRow], cols: list[Column | str], get: Callable[[BoardRow], dict[Column | str, PairedTest]], interval: bool = False) -> list[list[str]]:
    """Each row's paired changes at `cols`; bold where Holm over the column's rows keeps the test, as the verdict counts."""
    tests = [[get(r).get(c) for c in cols] for r in rows]
    marks = [family_significant([ts[j] for ts in tests]) for j in range(len(cols))]
    return [[paired(t, interval, marks[j][i]) for j, t in enumerate(ts)] for i, ts in enumerate(tests)]


def _ratio(r: BoardRow, name: str) -> str:
    e = r.ratios.get(name)
    return "–" if e is None else f"{e.mean:.2f}"


def _label(r: BoardRow) -> str:
    return r.pruner_label + (f" {OUTDATED}" if r.outdated else "")


def _by_attack(rows: list[BoardRow], attacks: list[Column]) -> list[str]:
    """Each row against the fine-tuned control, attack by attack: which attack a worst-case change comes from."""
    if not attacks:
        return []
    lines = ["", "The same rows against the fine-tuned dense control, attack by attack (Δ in points, paired p-value):", ""]
    head = ["architecture", "pruner", "sparsity"] + [f"Δ control {_col(c)}" for c in attacks]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [r for r in rows if not r.is_control]  # the control against itself says nothing
    for r, cells in zip(rows, paired_cells(rows, list(attacks), lambda r: r.vs_control)):
        lines.append("| " + " | ".join([r.architecture, _label(r), f"{r.sparsity:g}"] + cells) + " |")
    return lines


def _conditional(v: BoardView) -> list[str]:
    """Each pruned row's robust accuracy among the images it classifies correctly, against the control's: pruning's
    cost in clean accuracy taken out of its robust accuracy. Descriptive: the rows' denominators differ, so no test."""
    cols = v.correct_columns
    if not cols:
        return []
    head = ["architecture", "pruner", "sparsity"] + [f"{_col(c)} among correct" for c in cols]
    lines = ["", "Robust accuracy among the evaluation images each model classifies correctly (worst case, in %, mean over "
             f"seeds), with its change against {'the untouched dense model' if v.fallback else 'the fine-tuned dense control'} "
             "of the same seed in points: the part of a robustness "
             "change that a change in clean accuracy does not explain. Descriptive only: each row counts over its own "
             "correct images, so there is no paired test.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for vr in v.rows:
        if not vr.correct:
            continue
        cells = []
        for c in cols:
            value, change = vr.correct.get(c, (None, None))
            if value is None or change is None or change.mean is None:
                cells.append("–")
                continue
            cells.append(f"{pct(value.mean)} ({signed_pct(change.mean)}; per seed " + ", ".join(signed_pct(d) for _, d in change.per_seed) + ")")
        lines.append("| " + " | ".join([vr.row.architecture, _label(vr.row), f"{vr.row.sparsity:g}"] + cells) + " |")
    return lines


def _seconds(values: list[float]) -> str:
    """A stage's wall time over a row's seeds: one value, or the range."""
    if not values:
        return "–"
    lo, hi = round(min(values)), round(max(values))
    return f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"


def _wall_times(rows: list[BoardRow], attacks: list[str]) -> list[str]:
    """Each row's wall time per stage, in seconds over its seeds, as the jobs recorded it."""
    stages = [("dense training", "train_seconds", ""), ("pruning", "prune_seconds", ""), ("fine-tuning", "finetune_seconds", "")]
    stages += [(a, "attack_seconds", a) for a in attacks] + [("evaluation", "eval_seconds", "")]
    lines = ["", "Wall time of each stage in seconds (the range over seeds; a restored dense model reports its training run):", ""]
    head = ["architecture", "pruner", "sparsity"] + [name for name, _, _ in stages]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_seconds([v for j in r.jobs if (v := j.get(metric, attack)) is not None]) for _, metric, attack in stages]
        lines.append("| " + " | ".join([r.architecture, _label(r), f"{r.sparsity:g}"] + cells) + " |")
    jobs = [j for r in rows for j in r.jobs]
    # Every job repeats its dense model's training time, so the total counts each dense model once.
    dense = {j.dense_key: j.get("train_seconds", "") for j in jobs}
    totals = [sum(v for v in dense.values() if v is not None)]
    totals += [sum(v for j in jobs if (v := j.get(metric, attack)) is not None) for _, metric, attack in stages[1:]]
    lines.append("| " + " | ".join(["all", f"total of {len(jobs)} jobs", ""] + [f"{round(t):,}" for t in totals]) + " |")
    hours = (totals[0] + totals[1] + totals[2] + totals[-1]) / 3600
    lines += ["", f"In all {hours:,.1f} worker-hours: dense training ({len(dense)} models), pruning, fine-tuning and evaluation."]
    return lines


def board_markdown(b: Board) -> list[str]:
    """One board: its setup, verdicts per attack and eps, limits, every row's accuracies, and the paired changes."""
    v = view(b, verdict)
    lines = [f"## {title(v)}", ""]
    for s in setups_of(b, v.control):
        lines += ["**Setup.** " + setup_text(s), ""]
        if why := reduced_budget(s):
            lines += [f"**Reduced budget:** {why}. These rows test the pipeline; they do not answer the question.", ""]
    lines += _verdicts(b)
    lines += ["**What these data can and cannot say:**", ""] + [f"- {x}" for x in limits(v)] + [""]
    cols = [c for c in b.columns if "/" not in c[0]]  # AutoAttack components stay on the site
    rows = [vr.row for vr in v.rows]  # the site's order, so a row sits at the same place in both
    if v.key_column is not None:
        lines += [f"Rows as on the site: the dense references first, then the pruned rows ranked by their paired change in "
                  f"{_col(v.key_column)} against {v.control} (the board's ranking column).", ""]
    head = ["architecture", "pruner", "sparsity", "unit", "seeds", "params×", "MACs×", "clean"] + [_col(c) for c in cols]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.architecture, _label(r), f"{r.sparsity:g}", r.unit or "–", str(len(r.jobs)),
                 _ratio(r, "params_ratio"), _ratio(r, "macs_ratio"), _pct(r.clean)] + [_pct(r.robust.get(c)) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    headline: list[Column | str] = ["clean"] + [c for c in b.columns if c[0] == WORST] + [c for c in b.columns if c[0] == WORST_LOWER]
    pruned = [r for r in rows if r.is_control] + [r for r in rows if not r.is_dense and not r.is_control]
    if pruned:
        lines += ["", "Each pruned row against the fine-tuned dense control (Δ control, the headline) and the untouched dense "
                  "model (Δ dense) of the same seed, in points, with the paired p-value; Δ control also gives, for rows "
                  f"with {MIN_SEEDS} seeds, the 95 % interval of the change (Tango's paired score interval, per row, not "
                  "adjusted for the number of rows; like p, it speaks for the choice of images, not for training "
                  "variation); the control's own Δ dense is the effect of the extra fine-tuning alone:", ""]
        head = ["architecture", "pruner", "sparsity", "unit", "params×", "MACs×"] + [f"Δ control {_col(c)}" for c in headline] + [f"Δ dense {_col(c)}" for c in headline]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        vs_control = paired_cells(pruned, headline, lambda r: r.vs_control, interval=True)
        vs_dense = paired_cells(pruned, headline, lambda r: r.vs_dense)
        for r, a, d in zip(pruned, vs_control, vs_dense):
            cells = [r.architecture, _label(r), f"{r.sparsity:g}", r.unit or "–", _ratio(r, "params_ratio"), _ratio(r, "macs_ratio")]
            lines.append("| " + " | ".join(cells + a + d) + " |")
        lines += _by_attack(pruned, [c for c in cols if c[0] not in (WORST, WORST_LOWER)])
        lines += _conditional(v)
    lines += _wall_times(rows, sorted({c[0] for c in cols if c[0] not in (WORST, WORST_LOWER)}))
    lines.append("")
    return lines


def _verdicts(b: Board) -> list[str]:
    """The verdict on the claim per attack and eps: pruned rows against the fine-tuned control, counted by paired test."""
    eps, grid = verdict_grid(b)
    if not grid:
        return ["**Verdict:** no pruned row has a fine-tuned control yet.", ""]
    lines = ["**Verdict per attack and eps** on the claim that pruning raises robustness: pruned rows against the fine-tuned "
             f"dense control of the same seed, counted by whether they lose or gain robust accuracy at paired p < {SIGNIFICANCE:g} "
             "(exact McNemar, pooled over seeds, Holm-corrected over the column's rows) or show no significant change (n.s.), and their mean change Δ in points:", ""]
    lines += ["| attack | " + " | ".join(f"ε={_eps(e)}" for e in eps) + " |", "|" + "---|" * (len(eps) + 1)]
    for name, cells in grid:
        lines.append(f"| {name} | " + " | ".join("–" if c is None or not c.n else c.text() for c in cells) + " |")
    lines.append("")
    for c in b.worst_columns:
        lines.append(f"- **worst case over attacks (reference strength), ε={_eps(c[1])}**: {verdict(b.rows, c)}.")
    return lines + [""]


def report(store: Store, title: str = "Study results") -> str:
    """Markdown for every board in the store."""
    with store.session() as s:
        boards = leaderboards(s, families(), threat_models())
        progress = status_by_grid(s)
    lines = [
        f"# {title}", "",
        "Accuracies in % over the evaluation subset (clean on the whole test set): mean over seeds with the 95% "
        f"Student-t interval clipped to [0, 100], or the per-seed values in brackets when there are fewer than {MIN_SEEDS} "
        "seeds. \"worst case\" columns are reference strength (the grid's reference attack ran at that eps); "
        f"\"{WORST_LOWER}\" columns are not. Sparsity counts the row's unit; compare rows by params× and MACs×. "
        "Δ: paired change in points against the fine-tuned dense control (same seed, same fine-tuning budget: the "
        "effect of pruning alone) and against the untouched dense model; p: two-sided exact McNemar test pooled over "
        f"seeds on the shared evaluation images; bold only when p < {SIGNIFICANCE:g} with at least {MIN_SEEDS} seeds after Holm's "
        "correction over the column's rows (the rule the verdicts count by). "
        f"{OUTDATED}: some jobs ran under an older protocol version. Generated by `harness report` from the results "
        "database; do not edit by hand.", "",
    ]
    if progress:
        lines += ["Progress, by the grid of the run that queued each job:", ""]
        for grid, counts in progress.items():
            total = sum(counts.values())
            rest = ", ".join(f"{n} {state}" for state, n in counts.items() if n and state != "done")
            lines.append(f"- {f'grid {grid}' if grid else 'no recorded grid'}: {counts.get('done', 0)} of {total} jobs done" + (f" ({rest})" if rest else ""))
        lines.append("")
    for b in boards:
        for part in split(b):
            lines += board_markdown(part)
    return "\n".join(lines)


def splice(document: str, section: str, generated: str) -> str:
    """`document` with everything from its `## section` heading on replaced by `generated` (a report), one level down.

    The prose above the heading is kept, so a page like docs/study.md mixes hand-written reading with tables that
    are only ever regenerated.
    """
    heading = f"## {section}"
    lines = document.splitlines()
    if heading not in lines:
        raise HarnessError(f"no line {heading!r} in the file; add it where the generated tables go (everything after it is replaced).")
    body = generated.splitlines()[1:]  # the report's own "# title"
    body = ["#" + line if line.startswith("## ") else line for line in body]
    return "\n".join(lines[: lines.index(heading) + 1] + body).rstrip() + "\n"
