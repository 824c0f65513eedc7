"""`harness db compare`: two stored jobs, paired image by image, across databases, like with like only."""

from __future__ import annotations

from pathlib import Path

import torch
from typer.testing import CliRunner

from harness.api.metrics import Metric, pack_outcomes
from harness.cli.main import app
from harness.store.compare import compare_jobs, find_job
from harness.store.session import Store
from tests.test_boards import add_job, job_params

E1 = 1 / 255


def acc(name: str, correct: list[int], attack: str = "", eps: float = -1.0, n: int = 20) -> Metric:
    """An accuracy over n images of which the listed ones are correct, with its per-example outcomes."""
    mask = torch.zeros(n, dtype=torch.bool)
    mask[correct] = True
    data, count = pack_outcomes(mask)
    return Metric(name, float(mask.float().mean()), attack, eps, outcomes=data, n_examples=count)


def metrics(clean: list[int], fgsm: list[int], aa: list[int] | None = None) -> list[Metric]:
    """Clean and FGSM at 1/255, optionally AutoAttack too; the worst case is over the attacks given."""
    out = [acc("clean_acc_eval", clean), acc("robust_acc", fgsm, "fgsm", E1)]
    if aa is not None:
        out.append(acc("robust_acc", aa, "autoattack", E1))
    worst = sorted(set(fgsm) & set(aa)) if aa is not None else fgsm
    return [*out, acc("worst_case_acc", worst, "linf", E1)]


def two_stores(tmp_path: Path, n_b: int = 20) -> tuple[Path, Path]:
    """A: FGSM and AutoAttack; B, in another file, the same attacks (job kb) and FGSM only (job kf)."""
    a, b = Store(tmp_path / "a.db"), Store(tmp_path / "b.db")
    add_job(a, "aaaa1111", "none", 0.0, 0, metrics(list(range(18)), list(range(12)), list(range(10))), n_examples=20)
    add_job(b, "bbbb2222", "none", 0.0, 0, metrics(list(range(2, 20)), list(range(4)) + list(range(12, 20)), list(range(4))),
            params=job_params("d", "a", 0, "none", 0.0, n_b))
    add_job(b, "bbbb3333", "none", 0.0, 0, metrics(list(range(18)), list(range(12))), n_examples=20)
    a.close()
    b.close()
    return tmp_path / "a.db", tmp_path / "b.db"


def test_compare_pairs_the_outcomes_image_by_image(tmp_path: Path) -> None:
    db_a, db_b = two_stores(tmp_path)
    with Store(db_a, readonly=True).session() as s:
        a = find_job(s, "aaaa")
    with Store(db_b, readonly=True).session() as s:
        b = find_job(s, "bbbb2")
    rows, skipped = compare_jobs(a, b)
    got = {r.metric: (round(r.a, 3), round(r.b, 3), r.test.gained, r.test.lost) for r in rows}
    # A correct on 0-17, B on 2-19: 2 images only A gets right, 2 only B, the same accuracy.
    assert got[("clean_acc_eval", "", None)] == (0.9, 0.9, 2, 2)
    # FGSM: A 0-11, B 0-3 and 12-19: 8 only A, 8 only B.
    assert got[("robust_acc", "fgsm", E1)] == (0.6, 0.6, 8, 8)
    # AutoAttack: A 0-9, B 0-3: 6 only A, none only B; exact two-sided McNemar p = 2 / 2^6.
    aa = next(r for r in rows if r.metric == ("robust_acc", "autoattack", E1))
    assert (aa.test.gained, aa.test.lost, aa.test.p_value) == (6, 0, 2 / 64)
    assert abs(aa.test.delta - 0.3) < 1e-6 and aa.test.interval()[0] > 0  # type: ignore[index]
    assert ("worst_case_acc", "linf", E1) in got and not skipped
    # The command prints the same numbers, one line per row even through a pipe (CliRunner is one), for scripts.
    res = CliRunner().invoke(app, ["db", "compare", "aaaa", "bbbb2", "--db", str(db_a), "--db-b", str(db_b)], env={"COLUMNS": "60"})
    rows = [ln.split() for ln in res.output.splitlines() if ln.split()[:2] == ["robust_acc", "autoattack"]]
    assert res.exit_code == 0 and len(rows) == 1, res.output
    assert rows[0][3:6] == ["50.0", "20.0", "+30.0"] and "to" in rows[0] and rows[0][-4:] == ["0.031", "6", "/", "0"], res.output


def test_a_worst_case_over_other_attacks_is_not_compared(tmp_path: Path) -> None:
    db_a, db_b = two_stores(tmp_path)
    res = CliRunner().invoke(app, ["db", "compare", "aaaa", "bbbb3", "--db", str(db_a), "--db-b", str(db_b)])
    assert res.exit_code == 0, res.output
    assert "not compared: worst_case_acc at 1/255" in res.output and "A: autoattack, fgsm; B: fgsm" in res.output
    assert "clean_acc_eval" in res.output and "20 paired images" in res.output
    table = [ln.split() for ln in res.output.splitlines() if ln.split()[:1] in (["worst_case_acc"], ["robust_acc"])]
    assert [row[:2] for row in table] == [["robust_acc", "fgsm"]], res.output  # autoattack: only A ran it


def test_compare_refuses_jobs_that_attacked_other_images_and_unknown_keys(tmp_path: Path) -> None:
    db_a, db_b = two_stores(tmp_path, n_b=50)
    runner = CliRunner()
    res = runner.invoke(app, ["db", "compare", "aaaa", "bbbb2", "--db", str(db_a), "--db-b", str(db_b)])
    assert res.exit_code != 0 and "evaluation images (n_examples) (20 against 50)" in res.output, res.output
    for keys, words in ((["zzzz", "bbbb2"], "no job with a key starting 'zzzz'"), (["aaaa", "bbbb"], "2 jobs (bbbb2222, bbbb3333")):
        res = runner.invoke(app, ["db", "compare", *keys, "--db", str(db_a), "--db-b", str(db_b)])
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code != 0 and len(lines) == 1 and words in lines[0], res.output
