"""What a board lets one conclude: the setups apart, the verdict per attack and eps, and the limits of the data.

Pure functions over boards and board views, shared by the Markdown report and the site, so both state the same
setup, verdicts and limits, generated from the results database rather than written by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness.site.board import (
    ATTACK_NAMES,
    INFORMATIVE,
    REGIMES,
    THREAT_LABELS,
    BoardView,
    Setup,
    reference_pruner,
    setups_of,
)
from harness.site.formatting import eps as eps_label
from harness.store.boards import WORST, WORST_LOWER, Board, BoardRow, Column
from harness.store.statistics import MIN_SEEDS, SIGNIFICANCE, PairedTest, holm

# A dense model this far under its published accuracy is a reduced-budget model: its rows are marked as such.
REDUCED_GAP = 0.10


def reduced_budget(s: Setup) -> str:
    """Why a setup's dense models are below a converged model's budget, or '' when they are not."""
    if s.n_train and s.train_total and s.n_train < s.train_total:
        return f"dense models trained on {s.n_train:,} of the {s.train_total:,} training images"
    for arch, e, anchor in s.dense_clean:
        if e is not None and anchor is not None and e.mean < anchor[0] - REDUCED_GAP:
            return f"dense {arch} at {100 * e.mean:.1f} % clean, more than {100 * REDUCED_GAP:.0f} points under the published {100 * anchor[0]:.1f} %"
    return ""


def split(board: Board) -> list[Board]:
    """One board per setup, the converged setups first, then the newer protocol, then the larger; [board] with one setup.

    Rows of differently configured grids (another training budget, evaluation or attack list) answer different
    questions, so each gets its own table, setup summary and verdict instead of one ranking across them.
    """
    if len(board.setups) <= 1:
        return [board]
    parts = []
    for key in board.setups:
        rows = [r for r in board.rows if r.setup == key]
        present = {c for r in rows for c in r.robust}
        parts.append(Board(board.dataset, board.threat_model, [c for c in board.columns if c in present], rows, setup=key))

    def order(b: Board) -> tuple[bool, int, int, str]:
        s = setups_of(b, reference_pruner(b))[0]
        return (bool(reduced_budget(s)), -s.protocol, -sum(len(r.jobs) for r in b.rows), b.setup)

    return sorted(parts, key=order)


def title(v: BoardView) -> str:
    """A board's heading: dataset and threat model, and which grid's setup when the board was split."""
    tm = THREAT_LABELS.get(v.board.threat_model, v.board.threat_model)
    text = f"{v.board.dataset} · {tm}"
    if v.board.setup:
        grids = sorted({g for s in v.setups for g in s.grids})
        text += " · " + (f"grid {', '.join(grids)}" if grids else "setup") + f" (setup {v.board.setup})"
    return text


@dataclass(frozen=True)
class Tally:
    """The pruned rows' paired changes against the control at one column, counted by the paired test's answer."""

    column: Column
    up: int = 0  # rows whose change is positive and significant (Holm over the column's rows, SIGNIFICANCE)
    down: int = 0
    same: int = 0  # rows without a significant change
    untested: int = 0  # rows without per-example outcomes: no p-value
    few_seeds: bool = False  # no row has MIN_SEEDS seeds yet: nothing is marked, no verdict
    pending: int = 0  # rows still short of MIN_SEEDS seeds beside complete ones: left out of the counts
    mean_delta: float | None = None  # mean over the counted rows of the mean paired change, in accuracy units
    p_significant: float | None = None  # the largest raw p among the significant changes
    p_other: float | None = None  # the smallest p among the rest

    @property
    def n(self) -> int:
        """Pruned rows with a change at this column."""
        return self.up + self.down + self.same + self.untested + self.pending

    @property
    def word(self) -> str:
        """What the column says about the claim that pruning raises robustness."""
        if not self.up + self.down + self.same:
            return "no pruned row" if not self.n else "no paired test"
        if self.few_seeds:
            return f"no verdict (< {MIN_SEEDS} seeds)"
        if self.up > self.down and self.up >= self.same:
            return "supports"
        if self.down > self.up and self.down >= self.same:
            return "contradicts"
        return "does not support"

    @property
    def tone(self) -> str:
        """A CSS class for the word: up where it supports the claim, down where it contradicts it."""
        return {"supports": "up", "contradicts": "down"}.get(self.word, "neutral")

    def text(self) -> str:
        """One short line: the word, the counts with their p-values, and the mean change."""
        counts = []
        moved = ", ".join(f"{n} {w}" for n, w in ((self.down, "lose"), (self.up, "gain")) if n)
        if moved:
            counts.append(moved + (f" (p ≤ {self.p_significant:.2g})" if self.p_significant is not None else ""))
        if self.same:
            # p = 1 is the most a p-value can be: "p ≥ 1" would read as a bound when it is every row's value.
            bound = "" if self.p_other is None else " (p = 1)" if self.p_other >= 1 else f" (p ≥ {self.p_other:.2g})"
            counts.append(f"{self.same} n.s.{bound}")
        if self.untested:
            counts.append(f"{self.untested} untested")
        if self.pending:
            counts.append(f"{self.pending} pending (< {MIN_SEEDS} seeds)")
        text = self.word + (": " + ", ".join(counts) if counts else "")
        return text + (f"; Δ {100 * self.mean_delta:+.1f} pts" if self.mean_delta is not None else "")


def tally(rows: Iterable[BoardRow], col: Column) -> Tally:
    """Count the pruned rows that gain, lose or keep robust accuracy at `col` against their fine-tuned control.

    The rows of one column are a family of tests (a grid has a dozen or more pruned rows): a row counts as a gain or
    a loss only where Holm's correction over the column's rows keeps it significant. While a grid is still running,
    the rows with MIN_SEEDS seeds are counted and the others left pending, so that a study spread over many sessions
    gives a verdict on its finished rows; before any row has them, every row is counted and there is no verdict.
    """
    changes = _changes(rows, col)
    counted = [t for _, t in _counted(changes)]
    few = bool(changes) and all(t.n_seeds < MIN_SEEDS for _, t in changes)
    pending = len(changes) - len(counted)
    deltas = [t.delta for t in counted]
    tested = [(t.delta, t.p_value) for t in counted if t.p_value is not None]  # (delta, p)
    untested = len(counted) - len(tested)
    keep = holm([p for _, p in tested])
    sig = [(d, p) for (d, p), k in zip(tested, keep) if k and d != 0]
    rest = [p for (d, p), k in zip(tested, keep) if not k or d == 0]
    return Tally(col, sum(d > 0 for d, _ in sig), sum(d < 0 for d, _ in sig), len(rest), untested, few, pending,
                 sum(deltas) / len(deltas) if deltas else None, max((p for _, p in sig), default=None), min(rest, default=None))


def _changes(rows: Iterable[BoardRow], col: Column) -> list[tuple[BoardRow, PairedTest]]:
    """Each pruned row at `col` with its paired test against the fine-tuned control."""
    return [(r, t) for r in rows if not (r.is_dense or r.is_control) and (t := r.vs_control.get(col)) is not None]


def _counted(changes: list[tuple[BoardRow, PairedTest]]) -> list[tuple[BoardRow, PairedTest]]:
    """The changes a verdict speaks for: the rows with MIN_SEEDS seeds, or every row before any has them."""
    complete = [(r, t) for r, t in changes if t.n_seeds >= MIN_SEEDS]
    return complete or changes


def verdict(rows: Iterable[BoardRow], col: Column) -> str:
    """How many pruned rows gain or lose robust accuracy at `col` against their fine-tuned control, significantly."""
    rows = list(rows)  # read twice (the counts, then the bound): a generator would leave the bound empty
    t = tally(rows, col)
    if not t.n:
        return "no pruned row has a fine-tuned control"
    parts = []
    tested = t.up + t.down + t.same
    rows_with = f" with {MIN_SEEDS} seeds" if t.pending else ""
    if tested and not t.few_seeds:
        parts.append(f"{t.word} the claim: {t.up} of {tested} pruned rows{rows_with} gain robustness over the fine-tuned control "
                     f"(paired p < {SIGNIFICANCE:g}, Holm-corrected over the rows), {t.down} lose, {t.same} show no significant change")
    if t.pending:
        parts.append(f"{t.pending} row{'s' if t.pending > 1 else ''} still short of {MIN_SEEDS} seeds "
                     f"{'are' if t.pending > 1 else 'is'} left out")
    elif tested and t.few_seeds:
        parts.append(f"no verdict with fewer than {MIN_SEEDS} seeds: {t.up} of {tested} pruned rows gain robustness over the "
                     f"fine-tuned control at paired p < {SIGNIFICANCE:g} (Holm-corrected over the rows), {t.down} lose, {t.same} show no significant change "
                     "(not marked significant)")
    if t.untested:
        parts.append(f"{t.untested} rows without per-example outcomes: no paired test")
    if (bound := largest_gain(rows, col)) is not None:
        gain, row, k = bound
        claim = f"no row's gain exceeds {100 * gain:+.1f} points" if gain >= 0 else f"every row loses at least {-100 * gain:.1f} points"
        parts.append(f"{claim} at one-sided {100 * (1 - SIGNIFICANCE):g} % confidence, jointly over the {k} rows{rows_with} "
                     f"(Tango's paired score bound, Bonferroni; largest: {row.pruner_label} {row.sparsity:g})")
    return "; ".join(parts)


def largest_gain(rows: Iterable[BoardRow], col: Column) -> tuple[float, BoardRow, int] | None:
    """The largest gain over the fine-tuned control that the paired data leave open at `col`: (bound, its row, rows).

    A non-significant change is not "no change": this bounds how large a gain could be. Each row's one-sided upper
    bound is taken at SIGNIFICANCE / k (Bonferroni over the k rows with paired outcomes), so that the claim "no row
    gains more than this" holds at 1 - SIGNIFICANCE jointly; like the p-values it speaks for image sampling only.
    Rows still short of MIN_SEEDS seeds are left out once some row has them, as in `tally`.
    """
    # The same rows as the verdict's counts: a row still short of MIN_SEEDS seeds would widen the bound with a
    # fraction of the images and name itself "largest", although the verdict leaves it out.
    tests = [(r, t) for r, t in _counted(_changes(rows, col)) if t.n_pairs and t.p_value is not None]
    if not tests:
        return None
    k = len(tests)
    # A two-sided interval at 1 - 2a/k has a one-sided upper bound at level a/k.
    # Never None here: `tests` holds only rows with paired outcomes and a p-value.
    bounds = [(iv, r) for r, t in tests if (iv := t.interval(1 - 2 * SIGNIFICANCE / k)) is not None]
    (_, upper), row = max(bounds, key=lambda b: b[0][1])
    return upper, row, k


def verdict_grid(board: Board) -> tuple[list[float], list[tuple[str, list[Tally | None]]]]:
    """The verdict per attack and eps: eps list, and per attack (the worst case first) one tally per eps."""
    eps = sorted({e for a, e in board.columns if "/" not in a})
    attacks = [WORST] if any(a == WORST for a, _ in board.columns) else []
    attacks += [WORST_LOWER] if any(a == WORST_LOWER for a, _ in board.columns) else []
    attacks += sorted({a for a, _ in board.columns if a not in (WORST, WORST_LOWER) and "/" not in a})
    lines = []
    for a in attacks:
        cells = [tally(board.rows, (a, e)) if (a, e) in board.columns else None for e in eps]
        if any(c is not None and c.n for c in cells):
            lines.append((ATTACK_NAMES.get(a, a), cells))
    return eps, lines


def limits(v: BoardView) -> list[str]:
    """What a board's data can and cannot say, each as one sentence, from its rows and setup."""
    b, out = v.board, []
    seeds = max((len(r.jobs) for r in b.rows), default=0)
    if seeds < MIN_SEEDS:
        out.append(f"{seeds} seed{'s' if seeds != 1 else ''}: no change is marked significant (at least {MIN_SEEDS} are required), "
                   "since the paired p-values condition on the trained models and say nothing about training variation.")
    else:
        out.append(f"{seeds} seeds: the paired p-values pool the shared evaluation images of every seed and condition on the trained "
                   "models; the per-seed changes show the training variation.")
    behind = [r for r in b.rows if len(r.jobs) < seeds]
    if behind:
        out.append(f"{len(behind)} of {len(b.rows)} rows have fewer than {seeds} seeds so far ("
                   + ", ".join(f"{r.pruner_label} {r.sparsity:g}: {len(r.jobs)}" for r in behind[:6])
                   + (", …" if len(behind) > 6 else "") + ").")
    for s in v.setups:
        for arch, e, anchor in s.dense_clean:
            if e is not None and anchor is not None:
                gap = 100 * (anchor[0] - e.mean)
                where = f"{gap:.1f} points under" if gap > 0.05 else "at or above"
                out.append(f"The dense {arch} reaches {100 * e.mean:.1f} % clean, {where} the published {100 * anchor[0]:.1f} % "
                           f"({anchor[1]}): the results speak for models at this accuracy.")
        if s.n_eval:
            out.append(f"{s.n_eval:,} evaluation images per seed, the same for every row: one image is {100 / s.n_eval:.2g} points "
                       "of one seed's accuracy.")
    refs = [r for r in b.rows if r.pruner == v.control]
    for col in b.worst_columns:
        vals = [e.mean for r in refs if (e := r.robust.get(col)) is not None]
        if vals and min(vals) < INFORMATIVE:
            out.append(f"At ε={eps_label(col[1])} the reference row keeps {100 * min(vals):.1f} % worst-case robust accuracy: with nearly "
                       "nothing left to lose, no change can show there.")
    weak = [eps_label(e.eps) for e in v.eps if not e.reference]
    if weak:
        out.append(f"At ε={', '.join(weak)} the reference attack did not run: robust accuracies there are upper bounds.")
    archs = sorted({r.architecture for r in b.rows})
    regimes = sorted({REGIMES.get(s.regime, s.regime) for s in v.setups})
    ft = sorted({s.finetune_epochs for s in v.setups if s.finetune_epochs})
    sparsities = sorted({r.sparsity for r in b.rows if not r.is_dense and not r.is_control})
    scope = f"Only {', '.join(archs)} on {b.dataset} under {', '.join(regimes)}"
    if sparsities:
        scope += f", at sparsit{'ies' if len(sparsities) > 1 else 'y'} {', '.join(f'{x:g}' for x in sparsities)}"
    if ft:
        scope += f", fine-tuned {', '.join(map(str, ft))} epoch{'s' if ft != [1] else ''} after pruning"
    out.append(scope + ": nothing here speaks for other architectures, datasets, training regimes or budgets.")
    return out



def setup_text(s: Setup) -> str:
    """A setup in one paragraph: data, training, dense clean accuracy against the anchor, seeds, images, attacks."""
    if s.n_train and s.train_total:
        data = f"{s.n_train:,} of the {s.train_total:,} training images of {s.dataset}"
    elif s.train_total:
        data = f"all {s.train_total:,} training images of {s.dataset}"
    else:
        data = s.dataset
    train = f"{s.epochs} epochs of {REGIMES.get(s.regime, s.regime)}" if s.epochs else REGIMES.get(s.regime, s.regime)
    ft = f", fine-tuned {s.finetune_epochs} epoch{'s' if s.finetune_epochs != 1 else ''} after pruning (the control too)" if s.finetune_epochs else ""
    dense = "; ".join(
        f"{arch} {'–' if e is None else f'{100 * e.mean:.1f} %'}"
        + (f" (published {100 * anchor[0]:.1f} %, {anchor[1]})" if anchor else "")
        # Each seed's own value: a target such as "90 % for every seed" is read from these, not from the mean.
        + (f", per seed in seed order {', '.join(f'{100 * v:.2f}' for v in e.values)} %" if e is not None and len(e.values) > 1 else "")
        for arch, e, anchor in s.dense_clean
    ) or "no dense row yet"
    if s.control_clean:
        dense += "; after the control's fine-tuning: " + "; ".join(
            f"{arch} {'–' if e is None else f'{100 * e.mean:.1f} %'}" for arch, e in s.control_clean)
    attacks = "; ".join(f"ε={eps_label(e.eps)}: {' + '.join(e.attacks)}" + ("" if e.reference else " (lower strength)") for e in s.eps)
    grids = f"Grid {', '.join(s.grids)}: " if s.grids else ""
    images = f"the same {s.n_eval:,} test images attacked for every row" if s.n_eval else "evaluation images unrecorded"
    return (f"{grids}dense models trained on {data} for {train}{ft}. Dense clean accuracy on the full test set: {dense}. "
            f"Seeds: {len(s.seeds)} ({', '.join(map(str, s.seeds))}); {images}; attacks {attacks or 'none'}.")
