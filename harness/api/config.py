"""The config dataclasses every stage reads: training, fine-tuning, evaluation, attacks, pruners, jobs.

Free of TOML and of the plugin registries: `harness.engine.grid` parses files into these and checks plugin names.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from typing import Any

from harness.api.errors import GridError
from harness.api.keys import key_of

# Bumped by every change that alters reported numbers. It is part of every job key, so `harness run` recomputes
# results made under an older protocol instead of reusing them; rows stored without it are version 1.
# 2: one training subset per (dataset, seed) for every stage; fine-tuning split so the total equals the one-shot
#    budget and the last cut is fine-tuned; the fine-tuned dense control; worst cases only where the reference
#    attack ran; the convergence check folded into the worst case.
# 3: the convergence check of a PGD entry reads the APGD-CE-100 stage of the AutoAttack run at the same eps (on the
#    whole evaluation set) instead of running PGD with 4x the steps and 5 restarts on the sanity subset.
PROTOCOL_VERSION: int = 3
# The last protocol version that changed how models are trained, pruned or fine-tuned. Dense and pruned (cache)
# keys carry this one, so a change to the evaluation alone re-evaluates the cached models instead of retraining them.
MODEL_PROTOCOL: int = 2

REGIMES = ("standard", "pgd_at", "trades")
# Training arithmetic: bf16 autocast or plain fp32; "auto" is bf16 on CUDA, fp32 elsewhere (resolved by the runner).
PRECISIONS = ("auto", "bf16", "fp32")
THREAT_MODELS = ("linf", "l2")
# The attack that must run at an eps for its worst case to count as reference strength, per threat model
# (any one of the names). Croce & Hein 2020: AutoAttack for Linf; APGD (CE) or AutoAttack under L2.
DEFAULT_REFERENCE: dict[str, tuple[str, ...]] = {"linf": ("autoattack",), "l2": ("apgd", "autoattack")}
# Pruner families that prune nothing and so have no sparsity axis: the untouched dense model and the
# fine-tuned dense control.
DENSE_FAMILIES = ("none", "control")
SCHEDULES = ("cosine", "onecycle")
# Keys added after results were stored: left out of a job's key while at their default, so old keys stay valid.
# fp32 was the only arithmetic before `precision` existed.
KEYED_WHEN_SET = {
    "precision": "fp32", "schedule": "cosine", "warmup_epochs": 0, "checkpoint": None, "model_dir": None, "channels_last": False,
}
ADV_KEYS = ("adv_eps", "adv_steps", "adv_step_size", "trades_beta")


def _check_int(where: str, key: str, value: Any, least: int) -> None:
    """GridError unless `value` is an integer (not a bool) >= `least`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise GridError(f"{where}: {key} must be an integer >= {least}, got {value!r}.")


def _finite(value: float) -> bool:
    """math.isfinite, False for an integer too large for a float (TOML reads 400-digit integers; isfinite raises)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _check_number(where: str, key: str, value: Any, least: float, above: bool = False) -> None:
    """GridError unless `value` is a number (not a bool) >= `least`, or > `least` with `above`."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not _finite(value) or value < least or (above and value == least):
        raise GridError(f"{where}: {key} must be a number {'>' if above else '>='} {least:g}, got {value!r}.")


@dataclass(frozen=True)
class SGDConfig:
    """What every training stage shares: SGD with momentum, a learning-rate schedule over `epochs`."""

    epochs: int = 2
    lr: float = 0.01
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    precision: str = "auto"
    schedule: str = "cosine"  # cosine (after a linear warm-up) | onecycle (Smith & Topin 2019)
    warmup_epochs: float = 0  # linear warm-up (cosine), or the rising phase (onecycle; 0 = 30 % of the epochs)

    def __post_init__(self) -> None:
        where = f"[{'train' if isinstance(self, TrainConfig) else 'finetune'}]"
        if self.precision not in PRECISIONS:
            raise GridError(f"{where}: unknown precision {self.precision!r}; accepted: {', '.join(PRECISIONS)}.")
        if self.schedule not in SCHEDULES:
            raise GridError(f"{where}: unknown schedule {self.schedule!r}; accepted: {', '.join(SCHEDULES)}.")
        _check_number(where, "warmup_epochs", self.warmup_epochs, 0.0)
        _check_int(where, "epochs", self.epochs, 0)
        _check_int(where, "batch_size", self.batch_size, 1)
        _check_number(where, "lr", self.lr, 0.0, above=True)
        _check_number(where, "momentum", self.momentum, 0.0)
        _check_number(where, "weight_decay", self.weight_decay, 0.0)


@dataclass(frozen=True)
class TrainConfig(SGDConfig):
    """SGD training settings, on clean images (standard) or with an adversarial-training regime."""

    epochs: int = 10
    lr: float = 0.1
    n_train: int | None = None  # a random subset of the training set (None = all)
    regime: str = "standard"  # standard | pgd_at (Madry et al. 2018) | trades (Zhang et al. 2019)
    adv_eps: float | str | None = None  # Linf budget of the training attack; None = the dataset's eps_linf
    adv_steps: int = 7
    adv_step_size: float | str | None = None  # None = adv_eps / 4 (2/255 at 8/255, as Madry et al. on CIFAR)
    trades_beta: float = 6.0  # weight of the TRADES robustness (KL) term
    checkpoint: str | None = None  # start from this dense model instead of training (harness.engine.checkpoints)
    model_dir: str | None = None  # robustbench's model folder for "robustbench:..." checkpoints (default ./models)

    def __post_init__(self) -> None:
        super().__post_init__()
        where = "[train]"
        if self.regime not in REGIMES:
            raise GridError(f"{where}: unknown regime {self.regime!r}; accepted: {', '.join(REGIMES)}.")
        for key in ("adv_eps", "adv_step_size"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, parse_eps(value, f"{where} {key}"))  # '8/255' -> 0.0313...
        if not isinstance(self.adv_steps, int) or isinstance(self.adv_steps, bool) or self.adv_steps < 1:
            raise GridError(f"{where}: adv_steps must be an integer >= 1, got {self.adv_steps!r}.")
        if self.n_train is not None:
            _check_int(where, "n_train", self.n_train, 1)
        _check_number(where, "trades_beta", self.trades_beta, 0.0)
        if self.checkpoint is not None and (not isinstance(self.checkpoint, str) or not self.checkpoint):
            raise GridError(f"{where}: checkpoint must be a path or 'robustbench:DATASET/THREAT/NAME', got {self.checkpoint!r}.")
        if self.model_dir is not None and not str(self.checkpoint or "").startswith("robustbench:"):
            raise GridError(f"{where}: model_dir applies only to checkpoint = 'robustbench:...'; remove it.")
        defaults = {k: TrainConfig.__dataclass_fields__[k].default for k in ADV_KEYS}
        if self.regime == "standard" and any(getattr(self, k) != v for k, v in defaults.items()):
            set_keys = [k for k, v in defaults.items() if getattr(self, k) != v]
            raise GridError(
                f"{where}: {', '.join(set_keys)} only apply to adversarial regimes; set regime = 'pgd_at' or "
                "'trades', or remove them."
            )


@dataclass(frozen=True)
class FinetuneConfig(SGDConfig):
    """Fine-tuning after pruning (SGDConfig's defaults)."""


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings: how many test examples are attacked and in what batches."""

    n_examples: int | None = 1000
    batch_size: int = 256
    measure_latency: bool = True
    sanity_examples: int = 64  # examples the extra sanity-check attacks run on (0 = only checks needing no extra runs)
    # Threat model -> attack names that count as reference strength there (DEFAULT_REFERENCE when empty).
    reference: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Evaluate in NHWC: the same fp32 model, convolutions summed in another order (so numbers differ by rounding,
    # and the setting is keyed); on this CPU AutoAttack ran faster in it (docs/grids.md, "The study").
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.n_examples is not None:
            _check_int("[eval]", "n_examples", self.n_examples, 1)
        _check_int("[eval]", "batch_size", self.batch_size, 1)
        _check_int("[eval]", "sanity_examples", self.sanity_examples, 0)
        for key in ("measure_latency", "channels_last"):
            if not isinstance(getattr(self, key), bool):
                raise GridError(f"[eval]: {key} must be true or false, got {getattr(self, key)!r}.")
        ref = self.reference
        pairs = isinstance(ref, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str) for p in ref)
        if not isinstance(ref, dict) and not pairs:
            raise GridError(f"[eval] reference must be a table of threat model = attack names, e.g. reference = {{linf = [\"autoattack\"]}}; got {ref!r}.")
        if isinstance(ref, dict):  # as a grid writes it: {linf = ["autoattack"], l2 = ["apgd"]}
            for tm, names in ref.items():
                if tm not in THREAT_MODELS:
                    raise GridError(f"[eval] reference: unknown threat model {tm!r}; accepted: {', '.join(THREAT_MODELS)}.")
                names = [names] if isinstance(names, str) else names
                if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
                    raise GridError(f"[eval] reference.{tm} must be an attack name or a non-empty list of names.")
            ref = tuple(sorted((tm, tuple([n] if isinstance(n, str) else n)) for tm, n in ref.items()))
        object.__setattr__(self, "reference", tuple((tm, tuple(names)) for tm, names in ref))

    def references(self) -> dict[str, tuple[str, ...]]:
        """Threat model -> the attacks of reference strength there."""
        return DEFAULT_REFERENCE | {tm: tuple(names) for tm, names in self.reference}


@dataclass(frozen=True)
class AttackSpec:
    """One attack with its eps list and parameters."""

    name: str
    eps: tuple[float, ...]
    params: tuple[tuple[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain data for hashing and storage."""
        return {"name": self.name, "eps": list(self.eps), "params": dict(self.params)}


@dataclass(frozen=True)
class PrunerSpec:
    """A pruner with its parameters."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    # sha256 of a submitted pruner's file: a replaced submission must never reuse the old results.
    code: str | None = None

    @property
    def label(self) -> str:
        """Name plus non-default parameters, for tables."""
        return self.name + (f"({', '.join(f'{k}={v}' for k, v in self.params)})" if self.params else "")


@dataclass(frozen=True)
class JobSpec:
    """Everything that defines one job: train a dense model, prune it, fine-tune, evaluate under attack."""

    dataset: str
    architecture: str
    seed: int
    pruner: PrunerSpec
    sparsity: float
    train: TrainConfig
    finetune: FinetuneConfig
    eval: EvalConfig
    attacks: tuple[AttackSpec, ...]
    # "macs": `sparsity` is the fraction of MACs to remove; the pipeline finds the pruner's own sparsity reaching it.
    match: str = ""
    checkpoint_sha256: str | None = None  # of the file train.checkpoint names for this seed (set by the grid)

    def dense_params(self) -> dict[str, Any]:
        """What defines the dense (unpruned) model: a given checkpoint counts by its content, not its path."""
        train = config_params(self.train)
        if self.train.checkpoint is not None:
            train.pop("model_dir", None)
            train["checkpoint"] = f"sha256:{self.checkpoint_sha256}"
        return {"protocol": MODEL_PROTOCOL, "dataset": self.dataset, "architecture": self.architecture, "seed": self.seed, "train": train}

    def pruned_params(self) -> dict[str, Any]:
        """What defines the pruned, fine-tuned model."""
        base = {"protocol": MODEL_PROTOCOL, "dense": self.dense_params(), "pruner": self.pruner.name, "pruner_params": dict(self.pruner.params)}
        if self.pruner.code:
            base["pruner_code"] = self.pruner.code
        if self.pruner.name == "none":
            return base
        out = base | {"sparsity": self.sparsity, "finetune": config_params(self.finetune)}
        return out | {"match": self.match} if self.match else out

    def params(self) -> dict[str, Any]:
        """Canonical parameters of the whole job."""
        return {
            "protocol": PROTOCOL_VERSION,
            "pruned": self.pruned_params(),
            "eval": config_params(self.eval),
            "attacks": [a.as_dict() for a in self.attacks],
        }

    @property
    def dense_key(self) -> str:
        """Cache key of the dense model."""
        return key_of(self.dense_params())

    @property
    def pruned_key(self) -> str:
        """Cache key of the pruned model."""
        return key_of(self.pruned_params())

    @property
    def key(self) -> str:
        """Key of the job (unique in the store)."""
        return key_of(self.params())


def config_params(cfg: SGDConfig | EvalConfig) -> dict[str, Any]:
    """A config as key material, without the later-added keys that still hold their default."""
    return {k: v for k, v in asdict(cfg).items() if k not in KEYED_WHEN_SET or v != KEYED_WHEN_SET[k]}


def resolve_precision(precision: str, device_type: str) -> str:
    """"auto" -> "bf16" on CUDA, "fp32" elsewhere; a concrete precision is kept."""
    if precision != "auto":
        return precision
    return "bf16" if device_type == "cuda" else "fp32"


def for_device(job: JobSpec, device_type: str) -> JobSpec:
    """The job with "auto" precisions made concrete for the device it will run on (before any key is taken)."""
    train = replace(job.train, precision=resolve_precision(job.train.precision, device_type))
    finetune = replace(job.finetune, precision=resolve_precision(job.finetune.precision, device_type))
    return replace(job, train=train, finetune=finetune)


def parse_eps(value: Any, where: str) -> float:
    """A number, or a fraction string like '8/255'."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out = float(value) if _finite(value) else math.inf
    elif isinstance(value, str):
        try:
            out = float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            raise GridError(f"{where}: eps {value!r} is not a number or a fraction like '8/255'.") from None
        except OverflowError:  # '1e400': a number, but past any float; refused below as not finite
            out = math.inf
    else:
        raise GridError(f"{where}: eps {value!r} must be a number or a fraction string like '8/255'.")
    if not math.isfinite(out) or out < 0:
        raise GridError(f"{where}: eps must be >= 0 and finite, got {value!r}.")
    return out
