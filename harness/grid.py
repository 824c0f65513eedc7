"""Grid files (TOML): validation with one-line errors, and expansion into job specifications."""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from harness.errors import GridError, HarnessError
from harness.keys import key_of
from harness.plugins import architectures, attacks, datasets, pruners

GRIDS_DIR = Path(__file__).resolve().parent.parent / "grids"

TOP_KEYS = {
    "name": str,
    "description": str,
    "datasets": list,
    "architectures": list,
    "pruners": list,
    "sparsities": list,
    "attacks": list,
    "seeds": list,
    "train": dict,
    "finetune": dict,
    "eval": dict,
}
REQUIRED = ("datasets", "architectures", "pruners", "attacks")
REGIMES = ("standard", "pgd_at", "trades")
ADV_KEYS = ("adv_eps", "adv_steps", "adv_step_size", "trades_beta")


@dataclass(frozen=True)
class TrainConfig:
    """SGD training settings, on clean images (standard) or with an adversarial-training regime."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    n_train: int | None = None  # a random subset of the training set (None = all)
    regime: str = "standard"  # standard | pgd_at (Madry et al. 2018) | trades (Zhang et al. 2019)
    adv_eps: float | str | None = None  # Linf budget of the training attack; None = the dataset's eps_linf
    adv_steps: int = 7
    adv_step_size: float | str | None = None  # None = adv_eps / 4 (2/255 at 8/255, as Madry et al. on CIFAR)
    trades_beta: float = 6.0  # weight of the TRADES robustness (KL) term

    def __post_init__(self) -> None:
        where = "[train]"
        if self.regime not in REGIMES:
            raise GridError(f"{where}: unknown regime {self.regime!r}; accepted: {', '.join(REGIMES)}.")
        for key in ("adv_eps", "adv_step_size"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, _eps(value, f"{where} {key}"))  # '8/255' -> 0.0313...
        if not isinstance(self.adv_steps, int) or isinstance(self.adv_steps, bool) or self.adv_steps < 1:
            raise GridError(f"{where}: adv_steps must be an integer >= 1, got {self.adv_steps!r}.")
        defaults = {k: TrainConfig.__dataclass_fields__[k].default for k in ADV_KEYS}
        if self.regime == "standard" and any(getattr(self, k) != v for k, v in defaults.items()):
            set_keys = [k for k, v in defaults.items() if getattr(self, k) != v]
            raise GridError(
                f"{where}: {', '.join(set_keys)} only apply to adversarial regimes; set regime = 'pgd_at' or "
                "'trades', or remove them."
            )


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning after pruning."""

    epochs: int = 2
    lr: float = 0.01
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings: how many test examples are attacked and in what batches."""

    n_examples: int | None = 1000
    batch_size: int = 256
    measure_latency: bool = True
    sanity_examples: int = 64  # examples the extra sanity-check attacks run on (0 = only checks needing no extra runs)


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

    def dense_params(self) -> dict[str, Any]:
        """What defines the dense (unpruned) model."""
        return {"dataset": self.dataset, "architecture": self.architecture, "seed": self.seed, "train": asdict(self.train)}

    def pruned_params(self) -> dict[str, Any]:
        """What defines the pruned, fine-tuned model."""
        base = {"dense": self.dense_params(), "pruner": self.pruner.name, "pruner_params": dict(self.pruner.params)}
        if self.pruner.code:
            base["pruner_code"] = self.pruner.code
        if self.pruner.name == "none":
            return base
        return base | {"sparsity": self.sparsity, "finetune": asdict(self.finetune)}

    def params(self) -> dict[str, Any]:
        """Canonical parameters of the whole job."""
        return {
            "pruned": self.pruned_params(),
            "eval": asdict(self.eval),
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


@dataclass
class Grid:
    """A validated grid."""

    name: str
    description: str
    path: str
    jobs: list[JobSpec] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def datasets(self) -> list[str]:
        """Dataset names used by the jobs, in order of first use."""
        return list(dict.fromkeys(j.dataset for j in self.jobs))


def builtin_grids() -> dict[str, Path]:
    """Built-in grid names -> files."""
    return {p.stem: p for p in sorted(GRIDS_DIR.glob("*.toml"))}


def resolve(grid: str) -> Path:
    """A built-in grid name or a path to a TOML file."""
    known = builtin_grids()
    if grid in known:
        return known[grid]
    path = Path(grid)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise GridError(f"Grid file {grid} does not exist; pass a built-in name ({', '.join(known)}) or a TOML path.")
        return path
    import difflib

    close = difflib.get_close_matches(grid, known, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise GridError(f"Unknown grid {grid!r}.{hint} Built-in grids: {', '.join(known)}; or pass a path to a .toml file.")


def load_grid(grid: str) -> Grid:
    """Parse, validate and expand a grid; raises GridError with a one-line message."""
    path = resolve(grid)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise GridError(f"{path}: not valid TOML ({exc}).") from None
    return parse_grid(raw, name=path.stem, path=str(path))


def _eps(value: Any, where: str) -> float:
    """A number, or a fraction string like '8/255'."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            raise GridError(f"{where}: eps {value!r} is not a number or a fraction like '8/255'.") from None
    else:
        raise GridError(f"{where}: eps {value!r} must be a number or a fraction string like '8/255'.")
    if out < 0:
        raise GridError(f"{where}: eps must be >= 0, got {value!r}.")
    return out


def _section(raw: dict[str, Any], key: str, cls: type, where: str) -> Any:
    table = raw.get(key, {})
    allowed = cls.__dataclass_fields__
    for k in table:
        if k not in allowed:
            raise GridError(f"{where}: unknown key [{key}].{k}; accepted keys: {', '.join(allowed)}.")
    try:
        return cls(**table)
    except TypeError as exc:
        raise GridError(f"{where}: bad [{key}] table ({exc}).") from None
    except GridError as exc:  # a config's own validation (e.g. TrainConfig's regime)
        raise GridError(f"{where}: {exc}") from None


def _names(raw: dict[str, Any], key: str, registry: Any, where: str) -> list[str]:
    values = raw[key]
    if not values or not all(isinstance(v, str) for v in values):
        raise GridError(f"{where}: '{key}' must be a non-empty list of names.")
    for v in values:
        _check_plugin(registry, v, where, key)
    return values


def _check_plugin(registry: Any, name: str, where: str, key: str) -> None:
    try:
        registry.get(name)
    except HarnessError as exc:
        raise GridError(f"{where}: '{key}': {exc}") from None


def _plugin_params(cls: type, params: dict[str, Any], name: str, where: str) -> None:
    """Instantiate once so an unknown or mistyped parameter fails before anything runs."""
    try:
        cls(**params)
    except TypeError as exc:
        raise GridError(f"{where}: bad parameters for {name!r}: {exc}.") from None
    except HarnessError as exc:
        raise GridError(f"{where}: bad parameters for {name!r}: {exc}") from None


def parse_grid(raw: dict[str, Any], name: str = "grid", path: str = "<memory>") -> Grid:
    """Validate a parsed grid table and expand its cross product into jobs."""
    where = f"grid {path}"
    for k, v in raw.items():
        if k not in TOP_KEYS:
            raise GridError(f"{where}: unknown key {k!r}; accepted keys: {', '.join(TOP_KEYS)}.")
        if not isinstance(v, TOP_KEYS[k]):
            raise GridError(f"{where}: {k!r} must be a {TOP_KEYS[k].__name__}, got {type(v).__name__}.")
    for k in REQUIRED:
        if k not in raw:
            raise GridError(f"{where}: missing required key {k!r}.")
    ds = _names(raw, "datasets", datasets, where)
    archs = _names(raw, "architectures", architectures, where)

    pspecs = []
    for p in raw["pruners"]:
        table = {"name": p} if isinstance(p, str) else dict(p) if isinstance(p, dict) else None
        if table is None or not isinstance(table.get("name"), str):
            raise GridError(f"{where}: each 'pruners' entry must be a name or a table with a 'name'.")
        pname = table.pop("name")
        _check_plugin(pruners, pname, where, "pruners")
        _plugin_params(pruners.get(pname).obj, table, pname, where)
        entry = pruners.get(pname)
        pspecs.append(PrunerSpec(pname, tuple(sorted(table.items())), entry.metadata.get("submission_sha256")))

    sparsities = raw.get("sparsities", [0.5])
    for s in sparsities:
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not 0.0 <= s < 1.0:
            raise GridError(f"{where}: 'sparsities' values must be numbers in [0, 1), got {s!r}.")

    aspecs = []
    for a in raw["attacks"]:
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            raise GridError(f"{where}: each 'attacks' entry must be a table with 'name' and 'eps'.")
        table = dict(a)
        aname = table.pop("name")
        _check_plugin(attacks, aname, where, "attacks")
        eps = table.pop("eps", None)
        eps_list = eps if isinstance(eps, list) else [eps] if eps is not None else None
        if not eps_list:
            raise GridError(f"{where}: attack {aname!r} needs 'eps' (a number or a list, e.g. ['8/255']).")
        _plugin_params(attacks.get(aname).obj, table, aname, where)
        aspecs.append(AttackSpec(aname, tuple(_eps(e, f"{where}: attack {aname!r}") for e in eps_list), tuple(sorted(table.items()))))

    seeds = raw.get("seeds", [0])
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise GridError(f"{where}: 'seeds' must be a non-empty list of integers.")
    train = _section(raw, "train", TrainConfig, where)
    finetune = _section(raw, "finetune", FinetuneConfig, where)
    evalc = _section(raw, "eval", EvalConfig, where)

    jobs: list[JobSpec] = []
    seen: set[str] = set()
    for d, a, seed, p in itertools.product(ds, archs, seeds, pspecs):
        # The dense baseline has no sparsity axis: one job per (dataset, architecture, seed).
        for s in [0.0] if pruners.get(p.name).obj.family == "none" else sparsities:
            job = JobSpec(d, a, seed, p, float(s), train, finetune, evalc, tuple(aspecs))
            if job.key not in seen:
                seen.add(job.key)
                jobs.append(job)
    return Grid(name=str(raw.get("name", name)), description=str(raw.get("description", "")), path=path, jobs=jobs, raw=raw)
