"""Grid files (TOML): validation with one-line errors, and expansion into job specifications."""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.api.config import (
    DENSE_FAMILIES,
    AttackSpec,
    EvalConfig,
    FinetuneConfig,
    JobSpec,
    PrunerSpec,
    TrainConfig,
    parse_eps,
)
from harness.api.errors import GridError, HarnessError
from harness.api.paths import GRIDS_DIR
from harness.api.plugins import architectures, attacks, datasets, pruners
from harness.engine.checkpoints import checkpoint_shas

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
    "match": str,
}
MATCH = ("macs",)
REQUIRED = ("datasets", "architectures", "pruners", "attacks")
# Bounds on what a grid file may ask for, checked before anything is expanded or run.
MAX_GRID_BYTES = 10 * 2**20
MAX_JOBS = 100_000


@dataclass
class Grid:
    """A validated grid."""

    name: str
    description: str
    path: str
    jobs: list[JobSpec] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. duplicate entries that were collapsed

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
        if path.is_dir():
            raise GridError(f"Grid file {grid} is a folder; pass a built-in name ({', '.join(known)}) or the path of a TOML file.")
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
    return parse_grid(read_grid_file(path), name=path.stem, path=str(path))


def read_grid_file(path: Path) -> dict[str, Any]:
    """The TOML table of a grid file; GridError with one line when it is too big, not UTF-8 text or not TOML."""
    size = path.stat().st_size
    if size > MAX_GRID_BYTES:
        raise GridError(f"{path}: {size / 2**20:.1f} MB; a grid file may be at most {MAX_GRID_BYTES // 2**20} MB. Nothing was run.")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise GridError(f"{path}: not valid TOML ({exc}).") from None
    except UnicodeDecodeError as exc:
        raise GridError(f"{path}: not a text file (byte {exc.start} is not UTF-8); a grid is a UTF-8 TOML file.") from None
    except OSError as exc:
        raise GridError(f"{path}: cannot read it ({exc.strerror or exc}).") from None
    return raw


def _section(raw: dict[str, Any], key: str, cls: type[Any], where: str) -> Any:
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


def _collapse(values: list[Any], key: str, notes: list[str]) -> list[Any]:
    """`values` without repeats (first occurrence kept), with a note when any were dropped.

    Hashable entries are looked up in a set, so an axis of a million seeds is refused by the job bound in a
    second, not after a quadratic scan; tables (unhashable) are compared with the few tables before them.
    """
    seen: list[Any] = []
    hashed: set[Any] = set()
    tables: list[Any] = []
    dropped: list[Any] = []
    for v in values:
        try:
            repeat = v in hashed
            if not repeat:
                hashed.add(v)
        except TypeError:  # a table or list: no hash
            repeat = v in tables
            if not repeat:
                tables.append(v)
        (dropped if repeat else seen).append(v)
    if dropped:
        notes.append(f"'{key}' lists {', '.join(map(repr, dict.fromkeys(map(str, dropped))))} more than once; each is run once.")
    return seen


def _has_no_sparsity(pruner: Any) -> bool:
    """Whether a grid's pruner entry is a dense row (the baseline or the fine-tuned control): one job per seed."""
    name = pruner if isinstance(pruner, str) else pruner.get("name") if isinstance(pruner, dict) else None
    return isinstance(name, str) and name in pruners and pruners.get(name).obj.family in DENSE_FAMILIES


def check_bounds(raw: dict[str, Any], where: str) -> list[str]:
    """Refuse what no study needs before anything expands or runs; collapse duplicate entries in place. Returns the notes.

    Bounds: sparsities in [0, 1); eps in (0, 1] for Linf attacks and > 0 for others (checked in parse_grid, where
    each attack's threat model is known); at most MAX_JOBS jobs, counted from the axes without expanding them.
    """
    notes: list[str] = []
    for key in ("datasets", "architectures", "pruners", "sparsities", "seeds", "attacks"):
        if isinstance(raw.get(key), list):
            raw[key] = _collapse(raw[key], key, notes)
    for s in raw.get("sparsities", []):
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not 0.0 <= s < 1.0:
            raise GridError(f"{where}: 'sparsities' values must be numbers in [0, 1), got {s!r}.")
    for a in raw.get("attacks", []):
        if isinstance(a, dict) and isinstance(a.get("eps"), list):
            a["eps"] = _collapse(a["eps"], f"attacks.{a.get('name')}.eps", notes)
    dense = sum(1 for p in raw.get("pruners", []) if _has_no_sparsity(p))
    per_setup = dense + (len(raw.get("pruners", [])) - dense) * len(raw.get("sparsities", [0.5]))
    n = len(raw.get("datasets", [])) * len(raw.get("architectures", [])) * len(raw.get("seeds", [0])) * per_setup
    if n > MAX_JOBS:
        raise GridError(f"{where}: expands to {n:,} jobs; a grid may have at most {MAX_JOBS:,}. Split it into smaller grids. Nothing was run.")
    return notes


def _check_eps(eps: list[float], threat_model: str, name: str, where: str) -> None:
    for e in eps:
        if threat_model == "linf" and not 0.0 < e <= 1.0:
            raise GridError(f"{where}: attack {name!r} (Linf) eps {e:g} is outside (0, 1]; images are scaled to [0, 1], write e.g. '8/255'.")
        if e <= 0.0:
            raise GridError(f"{where}: attack {name!r} eps {e:g} must be positive.")


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
    notes = check_bounds(raw, where)
    ds = _names(raw, "datasets", datasets, where)
    archs = _names(raw, "architectures", architectures, where)

    pspecs = []
    for p in raw["pruners"]:
        table: dict[str, Any] | None = {"name": p} if isinstance(p, str) else dict(p) if isinstance(p, dict) else None
        if table is None or not isinstance(table.get("name"), str):
            raise GridError(f"{where}: each 'pruners' entry must be a name or a table with a 'name'.")
        pname = table.pop("name")
        _check_plugin(pruners, pname, where, "pruners")
        _plugin_params(pruners.get(pname).obj, table, pname, where)
        entry = pruners.get(pname)
        pspecs.append(PrunerSpec(pname, tuple(sorted(table.items())), entry.metadata.get("submission_sha256")))

    if not pspecs:
        raise GridError(f"{where}: 'pruners' must be a non-empty list of names, e.g. ['none', 'l1_filter'].")
    sparsities = raw.get("sparsities", [0.5])
    for s in sparsities:
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not 0.0 <= s < 1.0:
            raise GridError(f"{where}: 'sparsities' values must be numbers in [0, 1), got {s!r}.")
    pruned = [p.name for p in pspecs if pruners.get(p.name).obj.family not in DENSE_FAMILIES]
    if not sparsities and pruned:
        raise GridError(f"{where}: 'sparsities' is empty, so {', '.join(map(repr, pruned))} would run nothing; list at least one, e.g. [0.5].")

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
        values = [parse_eps(e, f"{where}: attack {aname!r}") for e in eps_list]
        _check_eps(values, str(getattr(attacks.get(aname).obj(**table), "threat_model", "")), aname, where)
        aspecs.append(AttackSpec(aname, tuple(values), tuple(sorted(table.items()))))

    seeds = raw.get("seeds", [0])
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise GridError(f"{where}: 'seeds' must be a non-empty list of integers.")
    train = _section(raw, "train", TrainConfig, where)
    finetune = _section(raw, "finetune", FinetuneConfig, where)
    evalc = _section(raw, "eval", EvalConfig, where)
    check_reference(aspecs, evalc, where)
    match = check_match(raw, pspecs, where)

    shas = checkpoint_shas(train, seeds)  # a given dense model is keyed by its content
    jobs: list[JobSpec] = []
    seen: set[str] = set()
    # Rows in order, the reference rows first, each row's seeds innermost: a run cut short (a session's end) leaves
    # rows with every seed and their references, which a verdict needs, rather than every row with one seed.
    ordered = sorted(pspecs, key=lambda p: pruners.get(p.name).obj.family not in DENSE_FAMILIES)
    for d, a, p in itertools.product(ds, archs, ordered):
        dense_row = pruners.get(p.name).obj.family in DENSE_FAMILIES
        # The dense baseline has no sparsity axis: one job per (dataset, architecture, seed).
        for s, seed in itertools.product([0.0] if dense_row else sparsities, seeds):
            job = JobSpec(d, a, seed, p, float(s), train, finetune, evalc, tuple(aspecs), "" if dense_row else match, shas[seed])
            if job.key not in seen:
                seen.add(job.key)
                jobs.append(job)
    return Grid(name=str(raw.get("name", name)), description=str(raw.get("description", "")), path=path, jobs=jobs, raw=raw, notes=notes)


# ---- the strength rule: a grid reports an eps only where its threat model's reference attack runs ----


def threat_model_of(spec: AttackSpec) -> str:
    """The threat model an attack entry runs under (its class attribute, or the `norm` it was given)."""
    cls = attacks.get(spec.name).obj
    params = dict(spec.params)
    return str(params["norm"]) if "norm" in params else str(getattr(cls, "threat_model", "linf"))


def check_reference(specs: list[AttackSpec], cfg: EvalConfig, where: str) -> None:
    """Every (threat model, eps) the grid attacks at must also be attacked by a reference attack of that threat model."""
    refs = cfg.references()
    covered = {(threat_model_of(a), e) for a in specs if a.name in refs.get(threat_model_of(a), ()) for e in a.eps}
    for a in specs:
        tm = threat_model_of(a)
        missing = [e for e in a.eps if (tm, e) not in covered]
        if missing:
            names = " or ".join(refs.get(tm, ())) or "a reference attack"
            raise GridError(
                f"{where}: attack {a.name!r} runs at {tm} eps {', '.join(f'{e:g}' for e in missing)} where no reference "
                f"attack ({names}) runs, so its worst case there would be only as strong as the weaker attacks; add "
                f"{names} at that eps, or set [eval] reference.{tm} to the attack you hold as reference."
            )


# ---- cost matching: `match = "macs"` reads each sparsity as a fraction of MACs to remove ----


def check_match(raw: dict[str, Any], specs: list[PrunerSpec], where: str) -> str:
    """The grid's `match` option ('' when absent); only structured pruners can be matched on MACs."""
    match = raw.get("match", "")
    if not match:
        return ""
    if match not in MATCH:
        raise GridError(f"{where}: unknown match {match!r}; accepted: {', '.join(MATCH)} (or leave it out).")
    for p in specs:
        if not pruners.get(p.name).obj.structured:
            raise GridError(
                f"{where}: match = 'macs' needs structured pruners, but {p.name!r} only zeroes weights (dense MACs do "
                "not change); move it to a grid without match."
            )
    return match
