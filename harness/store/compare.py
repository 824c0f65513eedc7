"""Paired comparison of two stored jobs on the evaluation images both attacked: any two models, any two databases."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.api.errors import HarnessError
from harness.store.models import Job
from harness.store.queries import JobRecord, MetricKey, job_records
from harness.store.statistics import PairedTest, paired_test

# The accuracies whose per-example outcomes a job stores, in the order a comparison lists them.
ACCURACIES = ("clean_acc_eval", "worst_case_acc", "robust_acc")


@dataclass(frozen=True)
class Comparison:
    """One accuracy both jobs recorded: each job's value and the exact McNemar test of A against B."""

    metric: MetricKey
    a: float
    b: float
    test: PairedTest


def find_job(s: Session, key: str) -> JobRecord:
    """The done job whose key is `key` or starts with it; one clear error when none or several match."""
    keys = list(s.scalars(select(Job.key).where(Job.key.startswith(key, autoescape=True))))
    if len(keys) != 1:
        what = "no job" if not keys else f"{len(keys)} jobs ({', '.join(sorted(keys)[:3])}, ...)"
        raise HarnessError(f"{what} with a key starting {key!r}; `harness results` and the site's job pages list the keys.")
    records = job_records(s, keys)
    if not records:
        raise HarnessError(f"job {keys[0]} is not done; only finished jobs have outcomes to compare.")
    return records[0]


def comparable(a: JobRecord, b: JobRecord) -> None:
    """Raise unless both jobs evaluated the same images: same dataset, evaluation-set size and protocol version."""
    # The evaluation subset is drawn with a fixed seed from the dataset's test split, so these three fix the images.
    for what, va, vb in (
        ("dataset", a.dataset, b.dataset),
        ("evaluation images (n_examples)", a.params.get("eval", {}).get("n_examples"), b.params.get("eval", {}).get("n_examples")),
        ("protocol version", a.protocol, b.protocol),
    ):
        if va != vb:
            raise HarnessError(f"jobs {a.key} and {b.key} differ in {what} ({va} against {vb}), so they did not attack the same images.")


def attacks_at(job: JobRecord, eps: float | None) -> list[str]:
    """The attacks whose robust accuracy the job recorded at `eps` (an ensemble's parts count as the ensemble)."""
    return sorted({attack for (metric, attack, e) in job.metrics if metric == "robust_acc" and e == eps and "/" not in attack})


def compare_jobs(a: JobRecord, b: JobRecord) -> tuple[list[Comparison], list[tuple[MetricKey, list[str], list[str]]]]:
    """Every accuracy both jobs stored per-example outcomes for, with A's change against B; and what was left out, why."""
    comparable(a, b)
    out: list[Comparison] = []
    skipped: list[tuple[MetricKey, list[str], list[str]]] = []  # worst cases over other attacks: (key, A's, B's)
    for mk in sorted(set(a.outcomes) & set(b.outcomes), key=lambda k: (ACCURACIES.index(k[0]) if k[0] in ACCURACIES else 9, k[1], k[2] or 0.0)):
        at_a, at_b = (attacks_at(a, mk[2]), attacks_at(b, mk[2])) if mk[0].startswith("worst_case") else ([], [])
        if at_a != at_b:
            # A worst case over other attacks is another measurement: comparing it would credit the weaker attack set.
            skipped.append((mk, at_a, at_b))
            continue
        oa, ob = a.outcomes[mk], b.outcomes[mk]
        va, vb = a.metrics.get(mk), b.metrics.get(mk)
        if len(oa) != len(ob) or va is None or vb is None:
            continue
        test = paired_test([(va, vb, oa, ob)])
        if test is not None:
            out.append(Comparison(mk, va, vb, test))
    if not out:
        raise HarnessError(f"jobs {a.key} and {b.key} share no accuracy with per-example outcomes; nothing to compare.")
    return out, skipped
