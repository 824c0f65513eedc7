"""Sanity checks that catch weak or gradient-masked evaluations (Athalye et al. 2018; Carlini et al. 2019; Croce & Hein 2020).

Each check becomes a metric row `flag_<check>`: 1.0 raised, 0.0 checked and fine, absent when it does not apply.
Checks that need extra attack runs use the first `EvalConfig.sanity_examples` clean-correct evaluation examples.
The convergence check's stronger attacks also return which of those examples they broke, to be folded into the
worst case (an adversarial example found by any attack counts); where AutoAttack ran at the eps, its APGD-CE stage
is that stronger attack, already computed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from pyautoattack import checks as aa_checks
from torch import Tensor, nn

from harness.api.attack import Attack
from harness.api.config import AttackSpec, EvalConfig
from harness.api.data import to_float
from harness.api.metrics import Metric
from harness.api.nets import frozen
from harness.api.plugins import attacks
from harness.attacks.common import margin
from harness.attacks.pgd import pgd
from harness.evaluation.runs import Evaluation, attack_correct

# Robust-accuracy slack for "should not be higher": 1 point on the full set, at least two examples on a small one.
TOL = 0.01
# Unbounded-eps PGD must leave at most this fraction correct (Carlini et al. 2019: it should reach ~100% success).
UNBOUNDED_MAX_ACC = 0.05
UNBOUNDED_STEPS = 20
# Black-box probe when the grid has no black-box attack: Square with a modest query budget.
SQUARE_QUERIES = 1000
# Convergence: PGD with this many times the steps and CONVERGENCE_RESTARTS restarts must not find lower accuracy.
STEPS_FACTOR = 4
CONVERGENCE_RESTARTS = 5
PGD_ATTACKS = ("pgd_linf", "pgd_l2")
Folds = dict[tuple[str, float], Tensor]


def slack(n: int) -> float:
    """Tolerance on n examples: TOL, but never less than two examples' worth."""
    return max(TOL, 2.0 / max(n, 1))


def flag(check: str, raised: bool, attack: str = "") -> Metric:
    """A flag row."""
    return Metric(f"flag_{check}", 1.0 if raised else 0.0, attack=attack)


def acc(mask: Tensor) -> float:
    """Fraction of True."""
    return float(mask.float().mean()) if len(mask) else float("nan")


def eps_monotonic(ev: Evaluation) -> list[Metric]:
    """Robust accuracy must not grow with eps (beyond TOL), per attack with two or more eps."""
    by_attack: dict[str, list[tuple[float, float]]] = {}
    for (name, eps), mask in ev.robust.items():
        by_attack.setdefault(name, []).append((eps, acc(mask)))
    out = []
    for name, curve in by_attack.items():
        if len(curve) > 1:
            a = [v for _, v in sorted(curve)]
            out.append(flag("eps_monotonic", any(b > prev + TOL for prev, b in zip(a, a[1:])), name))
    return out


def fgsm_vs_pgd(ev: Evaluation) -> list[Metric]:
    """One FGSM step must not beat PGD (beyond TOL) at any eps both ran at."""
    shared = [e for (n, e) in ev.robust if n == "fgsm" and ("pgd_linf", e) in ev.robust]
    if not shared:
        return []
    raised = any(acc(ev.robust[("fgsm", e)]) < acc(ev.robust[("pgd_linf", e)]) - TOL for e in shared)
    return [flag("fgsm_stronger_than_pgd", raised, "fgsm")]


def white_box_correct(ev: Evaluation, threat: str, eps: float) -> Tensor | None:
    """Per-example AND over the white-box attacks of one threat model at one eps (None if none ran)."""
    masks = [m for (n, e), m in ev.robust.items() if e == eps and ev.threat[n] == threat and ev.white_box[n]]
    if not masks:
        return None
    out = masks[0].clone()
    for m in masks[1:]:
        out &= m
    return out


def _ran(mask: Tensor | None) -> Tensor:
    """A white-box mask at an eps chosen among those where white-box attacks ran (so never None)."""
    if mask is None:
        raise AssertionError("no white-box attack ran at an eps chosen among those where one did")
    return mask


def masking_from_grid(ev: Evaluation) -> bool | None:
    """Did a black-box attack in the grid beat every white-box attack (beyond TOL)? None if not comparable."""
    verdicts = []
    for (name, eps), mask in ev.robust.items():
        if ev.white_box[name]:
            continue
        wb = white_box_correct(ev, ev.threat[name], eps)
        if wb is not None:
            verdicts.append(acc(mask) < acc(wb) - TOL)
    return any(verdicts) if verdicts else None


def probe_eps(ev: Evaluation, threat: str, sub: Tensor) -> float | None:
    """The white-box eps whose subset accuracy is closest to 50% (most sensitive; ties go to the larger eps)."""
    eps_list = sorted({e for (n, e) in ev.robust if ev.threat[n] == threat and ev.white_box[n] and e > 0})
    if not eps_list:
        return None
    scored = [(abs(acc(_ran(white_box_correct(ev, threat, e))[sub]) - 0.5), -e) for e in eps_list]
    return -min(scored)[1]


def zero_gradients(model: nn.Module, x: Tensor, y: Tensor) -> bool:
    """Any example whose margin-loss input gradient is exactly zero (the margin does not saturate like softmax)."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    (g,) = torch.autograd.grad(-margin(logits, y).sum(), x)
    return bool((g.flatten(1).abs().sum(1) == 0).any())


class _Collect(logging.Handler):
    """Keeps the warnings a pyautoattack check logs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def reference_check(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Run one of pyautoattack's checks; True when it warned."""
    logger = logging.getLogger("harness.evaluation.sanity.autoattack_checks")
    logger.propagate = False
    handler = _Collect()
    logger.addHandler(handler)
    try:
        fn(*args, logger=logger, **kwargs)
    finally:
        logger.removeHandler(handler)
    return bool(handler.messages)


def autoattack_checks(model: nn.Module, x: Tensor, y: Tensor) -> list[Metric]:
    """pyautoattack's model checks: randomised outputs, probabilities instead of logits, gradients inside forward."""
    # check_dynamic counts calls in a module-level dict that is never reset: reset it so earlier models don't leak in.
    for k in aa_checks.funcs:
        aa_checks.funcs[k] = 0
    return [
        flag("randomized_model", reference_check(aa_checks.check_randomized, model, x, y, bs=len(x))),
        flag("probability_output", reference_check(aa_checks.check_range_output, model, x)),
        flag("dynamic_model", reference_check(aa_checks.check_dynamic, model, x, False)),
    ]


def autoattack_stage_checks(ev: Evaluation, n_classes: int) -> list[Metric]:
    """pyautoattack's protocol checks on our AutoAttack runs: enough classes for targets, Square not finding more."""
    out = []
    for name, params in ev.params.items():
        if name != "autoattack":
            continue
        version = params.get("version", "standard")
        to_run = ["apgd-ce", "apgd-t", "fab-t", "square"] if version == "standard" else ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"] if version == "plus" else ["apgd-ce", "apgd-dlr"]
        out.append(flag("autoattack_n_classes", reference_check(aa_checks.check_n_classes, n_classes, to_run, 9, 9), name))
        square_raised = []
        for (stage, eps), mask in ev.stages.items():
            if stage == f"{name}/square":
                accs = {"clean": acc(ev.clean_correct)} | {s.split("/", 1)[1]: acc(m) for (s, e), m in ev.stages.items() if e == eps and s.startswith(f"{name}/")}
                square_raised.append(reference_check(aa_checks.check_square_sr, accs))
        if square_raised:
            out.append(flag("autoattack_square", any(square_raised), name))
    return out


def _probe(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, eps: float, device: torch.device, bs: int) -> Tensor:
    return attack_correct(attack, attack.__class__.__name__, model, x, y, eps, device, bs)[0]


def stronger_attack(spec: AttackSpec, seed: int) -> Attack | None:
    """The attack that checks whether a PGD entry converged: the same PGD with 4x the steps and 5 restarts (None for others).

    Single-step attacks are not checked: FGSM is weaker than PGD by design, and the strength rule already puts the
    reference attack (AutoAttack, itself APGD-100 first) at every eps the worst case is reported at.
    """
    params = dict(spec.params)
    if spec.name in PGD_ATTACKS:
        steps = STEPS_FACTOR * int(params.get("steps", 10))
        # An explicit step size is kept, so the longer run can travel further; the default scales with the steps.
        return attacks.get(spec.name).obj(**params | {"steps": steps, "restarts": CONVERGENCE_RESTARTS, "seed": seed + 1})
    return None


def apgd_stage(ev: Evaluation, threat: str, eps: float) -> Tensor | None:
    """Which examples survived the APGD-CE-100 stage of an AutoAttack run of `threat` at `eps` (None if none ran)."""
    for name, tm in ev.threat.items():
        stage = ev.stages.get((f"{name}/apgd-ce", eps))
        if tm == threat and stage is not None:
            return stage
    return None


def convergence(
    model: nn.Module, xs: Tensor, ys: Tensor, sub: Tensor, ev: Evaluation, specs: tuple[AttackSpec, ...], device: torch.device, bs: int, seed: int
) -> tuple[list[Metric], Folds]:
    """Flag attacks a stronger run beats (`flag_not_converged`); return what it broke, per (threat model, eps).

    Where AutoAttack ran at the same eps, its APGD-CE-100 stage is the stronger run (Croce & Hein 2020: same loss,
    10x the steps, adaptive step size), read on the whole evaluation set at no extra cost. Elsewhere, the same PGD
    with 4x the steps and 5 restarts runs on the sanity subset.
    """
    out: list[Metric] = []
    folds: Folds = {}
    n_all = len(ev.clean_correct)
    for spec in specs:
        strong = stronger_attack(spec, seed)
        if strong is None:
            continue
        raised = False
        for eps in spec.eps:
            if eps <= 0 or (spec.name, eps) not in ev.robust:
                continue
            key = (ev.threat[spec.name], eps)
            reused = apgd_stage(ev, key[0], eps)
            if reused is not None:
                full = reused
                raised = raised or acc(reused) < acc(ev.robust[(spec.name, eps)]) - slack(n_all)
            else:
                weak = ev.robust[(spec.name, eps)][sub]
                found = _probe(strong, model, xs, ys, eps, device, bs)
                raised = raised or acc(found) < acc(weak) - slack(len(sub))
                full = torch.ones(n_all, dtype=torch.bool)
                full[sub] = found
            folds[key] = full if key not in folds else folds[key] & full
        out.append(flag("not_converged", raised, spec.name))
    return out, folds


def sanity_metrics(
    model: nn.Module, x: Tensor, y: Tensor, ev: Evaluation, specs: tuple[AttackSpec, ...], cfg: EvalConfig, device: torch.device, seed: int
) -> tuple[list[Metric], Folds]:
    """Every applicable sanity flag for one evaluation, and the convergence check's examples to fold into the worst case."""
    out = eps_monotonic(ev) + fgsm_vs_pgd(ev)
    masked = masking_from_grid(ev)
    sub = ev.clean_correct.nonzero().squeeze(1)[: cfg.sanity_examples]
    folds: Folds = {}
    if len(sub) == 0:
        if masked is not None:
            out.append(flag("gradient_masking", masked))
        return out, folds
    xs, ys = to_float(x[sub]).to(device), y[sub].to(device)
    n, bs = len(sub), cfg.batch_size
    with frozen(model):
        with torch.no_grad():
            n_classes = model(xs[:1]).shape[1]
        out += autoattack_checks(model, xs, ys) + autoattack_stage_checks(ev, n_classes)
        out.append(flag("zero_gradients", zero_gradients(model, xs, ys)))
        threats = sorted({ev.threat[s.name] for s in specs if ev.white_box[s.name]})
        has_black_box = any(not ev.white_box[s.name] for s in specs)
        for tm in threats:
            # Unbounded budget, gradient steps only (no random start: a random image in a huge ball fools by chance).
            big = 1.0 if tm == "linf" else float(xs[0].numel()) ** 0.5
            with torch.enable_grad():
                adv = torch.cat([pgd(model, xs[i : i + bs], ys[i : i + bs], big, tm, UNBOUNDED_STEPS, rand_init=False, seed=seed, early_stop=True) for i in range(0, n, bs)])
            with torch.inference_mode():
                unbounded_acc = acc((model(adv).argmax(1) == ys).cpu())
            out.append(flag("unbounded_eps", unbounded_acc > UNBOUNDED_MAX_ACC, "pgd_linf" if tm == "linf" else "pgd_l2"))
            eps = probe_eps(ev, tm, sub)
            if not has_black_box and eps is not None:
                make_square: Callable[..., Attack] = attacks.get("square").obj  # the plugin's own keywords, not the base class's
                square = make_square(norm=tm, n_queries=SQUARE_QUERIES, seed=seed)
                sq = _probe(square, model, xs, ys, eps, device, bs)
                wb = _ran(white_box_correct(ev, tm, eps))[sub]
                probe_masked = acc(sq) < acc(wb) - slack(n)
                masked = probe_masked if masked is None else masked or probe_masked
        conv, folds = convergence(model, xs, ys, sub, ev, specs, device, bs, seed)
        out += conv
    if masked is not None:
        out.append(flag("gradient_masking", masked))
    return out, folds
