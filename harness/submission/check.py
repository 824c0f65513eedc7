"""Child side of `harness submit`: import one submission under limits, check its contract, dry-run it on a tiny real model.

Runs only in a process of its own (forked from a preloaded server by `harness.submission.submit`, or `python -m
harness.submission.check FILE --json` by hand). Importing this module loads every built-in plugin, so a
forked check starts warm and a name that collides with a built-in is refused by the registry itself.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import random
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from harness.api.errors import RegistrationError
from harness.api.nets import Normalized
from harness.api.plugins import REGISTRIES, architectures, datasets, pruners
from harness.api.pruner import PruneContext, Pruner
from harness.engine.trust import trusted_class
from harness.scheduling.isolation import (
    die_with_parent,
    enter_sandbox,
    guard_paths,
    is_memory_error,
    limit_memory,
    violations,
)

FAMILIES = ("filter", "layer", "unstructured")
DRY_RUN_ARCH = {"filter": "small_cnn", "unstructured": "small_cnn", "layer": "resnet20"}  # layer pruners need residual blocks
DRY_RUN_BATCH = 16
URL_SCHEMES = ("https://", "http://")

# The signature each overridable method must accept, as (parameters after self, how it reads in messages).
EXPECTED = {
    "score": (("weight",), "score(self, weight: Tensor) -> Tensor"),
    "importance": (("model", "ctx"), "importance(self, model: nn.Module, ctx: PruneContext) -> GroupImportance"),
    "prune": (("model", "sparsity", "ctx"), "prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> nn.Module"),
    "block_scores": (("model", "blocks", "ctx"), "block_scores(self, model: nn.Module, blocks: list[Block], ctx: PruneContext) -> Tensor"),
    "finalize": (("model",), "finalize(self, model: nn.Module) -> nn.Module"),
}

for _reg in REGISTRIES.values():
    _reg.names()  # load built-ins now: forked checks inherit them


@dataclass
class CheckLimits:
    """What the child is allowed and asked: memory budget, requested sparsity, guarded and read-only paths."""

    memory_mb: int = 4096
    sparsity: float = 0.5
    seed: int = 0
    protected: list[str] = field(default_factory=list)  # files the submission may not open (results DB)
    sandbox: bool = False  # kernel sandbox: every path read-only but `workdir`, no network
    workdir: str = ""  # the empty private folder the check starts in; the only place it may write


class CheckFailed(Exception):
    """One broken rule of the contract: which check, a one-line message, and the submission's traceback if any."""

    def __init__(self, check: str, message: str, trace: str = "") -> None:
        super().__init__(message)
        self.check, self.message, self.trace = check, message, trace


def submission_trace(exc: BaseException, path: str) -> str:
    """The traceback's frames in the submission file, on one line (the message names the exception); '' when none."""
    real = os.path.realpath(path)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.realpath(f.filename) == real]
    where = "; ".join(f"line {f.lineno} in {f.name}" + (f": {f.line.strip()}" if f.line else "") for f in frames)
    return f"submission frames only: {where}" if frames else ""


def _raised(check: str, what: str, exc: BaseException, path: str) -> CheckFailed:
    if is_memory_error(exc):
        return CheckFailed("memory", f"allocates past the memory limit {what}")
    text = str(exc).splitlines()[0][:300] if str(exc).strip() else ""
    return CheckFailed(check, f"raised {type(exc).__name__} {what}" + (f": {text}" if text else ""), submission_trace(exc, path))


def load(path: str) -> list[str]:
    """Import the file; returns 'kind:name' for what it registered, or raises CheckFailed naming the cause."""
    from harness.api.plugin_files import load_plugin_file

    try:
        return load_plugin_file(path)
    except SyntaxError as exc:
        raise CheckFailed("syntax", f"syntax error at {exc.filename}:{exc.lineno}:{exc.offset}: {exc.msg}") from None
    except ModuleNotFoundError as exc:
        raise CheckFailed("import", f"import error: the submission imports {exc.name!r}, which is not installed here; add it to the harness's dependencies or remove the import", submission_trace(exc, path)) from None
    except ImportError as exc:
        raise CheckFailed("import", f"import error: {exc}", submission_trace(exc, path)) from None
    except RegistrationError as exc:
        raise CheckFailed("registration", f"registration refused: {exc}") from None
    except (Exception, SystemExit) as exc:  # anything the module body raises is the submission's
        raise _raised("import", "while importing", exc, path) from None


def the_pruner(registered: list[str]) -> str:
    """The single pruner name the file registered, or CheckFailed."""
    # Entries read 'kind:name' (the kind as REGISTRIES spells it: 'pruners').
    split = [r.split(":", 1) for r in registered]
    names = [n for kind, n in split if kind.rstrip("s") == "pruner"]
    others = [f"{kind.rstrip('s')} {n!r}" for kind, n in split if kind.rstrip("s") != "pruner"]
    if not names:
        raise CheckFailed("count", 'no pruner registered: decorate one Pruner subclass with @register_pruner("your_name", author=..., paper=...)')
    if len(names) > 1:
        raise CheckFailed("count", f"registers {len(names)} pruners ({', '.join(names)}); a submission registers exactly one")
    if others:
        raise CheckFailed("count", f"also registers {', '.join(others)}; a submission registers exactly one pruner and nothing else")
    return names[0]


def check_signature(cls: type[Pruner]) -> None:
    """Abstract methods implemented, overrides callable as the harness calls them, constructible without arguments."""
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        wants = "; ".join(EXPECTED.get(m, (None, f"{m}(...)"))[1] for m in missing)
        raise CheckFailed("signature", f"wrong signature: {cls.__name__} does not implement {wants}")
    for method, (params, shown) in EXPECTED.items():
        fn = getattr(cls, method, None)
        if fn is None:
            continue
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            continue
        try:
            sig.bind(None, *params)  # self plus the positional arguments the harness passes
        except TypeError:
            raise CheckFailed("signature", f"wrong signature: {cls.__name__}.{method}{sig} must be {shown}") from None
    try:
        inspect.signature(cls).bind()
    except TypeError:
        raise CheckFailed("signature", f"wrong signature: {cls.__name__}() must be constructible without arguments (give every __init__ parameter a default)") from None
    except ValueError:
        pass


def metadata(name: str) -> dict[str, Any]:
    """Author, description, paper, url and family from the registry entry; CheckFailed when one is missing or bad."""
    entry = pruners.get(name)
    meta = entry.metadata
    family = str(getattr(entry.obj, "family", ""))
    out = {
        "name": name,
        "class": entry.obj.__qualname__,
        "family": family,
        "description": entry.description.strip(),
        "author": str(meta.get("author", "")).strip(),
        "paper": str(meta.get("paper", "")).strip(),
        "url": str(meta.get("url", "")).strip(),
    }
    if not out["author"]:
        raise CheckFailed("metadata", f'pruner {name!r} has no author: pass author="Your Name" to @register_pruner')
    if not out["description"]:
        raise CheckFailed("metadata", f"pruner {name!r} has no description: give the class a one-line docstring")
    if out["url"] and not out["url"].startswith(URL_SCHEMES):
        raise CheckFailed("metadata", f"url {out['url'][:80]!r} must start with https:// or http://")
    if family not in FAMILIES:
        raise CheckFailed("metadata", f"family {family!r} is not one of {', '.join(FAMILIES)}; subclass ScoredFilterPruner, FilterPruner, LayerPruner or UnstructuredPruner")
    return out


def _dry_model(family: str, seed: int) -> nn.Module:
    """A freshly initialised tiny real network for 8x8 one-channel digits, wrapped like the pipeline wraps it."""
    data = datasets.get("digits").obj()
    torch.manual_seed(seed)
    net = architectures.get(DRY_RUN_ARCH[family]).obj(num_classes=10, in_channels=1)
    return Normalized(net, data.mean, data.std).eval()


def _inputs(seed: int) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """Real digits images: one example batch and a few calibration batches."""
    data = datasets.get("digits").obj()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.y_train), generator=g)[: 4 * DRY_RUN_BATCH]
    x, y = data.x_train[idx].float(), data.y_train[idx]
    batches = [(x[i : i + DRY_RUN_BATCH], y[i : i + DRY_RUN_BATCH]) for i in range(0, len(y), DRY_RUN_BATCH)]
    return x[:DRY_RUN_BATCH], batches


def _prune_once(cls: type[Pruner], dense: nn.Module, sparsity: float, seed: int, noise: int, path: str) -> nn.Module:
    """One dry run from a fresh copy; global RNGs are scrambled with `noise` so only ctx.seed may matter."""
    random.seed(noise)
    np.random.seed(noise)
    torch.manual_seed(noise)
    example, calib = _inputs(seed)
    ctx = PruneContext(example_inputs=example, calibration=calib, seed=seed, device=torch.device("cpu"), fine_tune=lambda m, step: None)
    model = copy.deepcopy(dense)
    try:
        pruner = cls()
    except Exception as exc:
        raise _raised("construct", f"constructing {cls.__name__}()", exc, path) from None
    try:
        out = pruner.prune(model, sparsity, ctx)
    except Exception as exc:
        raise _raised("raises", "during pruning", exc, path) from None
    if not isinstance(out, nn.Module):
        raise CheckFailed("type", f"prune returned {type(out).__name__}; it must return the pruned torch.nn.Module (the model it was given, modified, or a new one)")
    try:
        out = pruner.finalize(out)
    except Exception as exc:
        raise _raised("raises", "in finalize", exc, path) from None
    if not isinstance(out, nn.Module):
        raise CheckFailed("type", f"finalize returned {type(out).__name__}; it must return a torch.nn.Module")
    return out.eval()


def _forward(model: nn.Module, x: Tensor, path: str) -> Tensor:
    try:
        with torch.no_grad():
            return model(x)
    except Exception as exc:
        raise _raised("runs", "when the pruned model runs on a batch", exc, path) from None


def dry_run(name: str, limits: CheckLimits, path: str) -> dict[str, Any]:
    """Prune a tiny real model twice; check it runs, keeps its output shape, reaches the sparsity, and repeats exactly."""
    entry = pruners.get(name)
    cls = entry.obj
    dense = _dry_model(str(cls.family), limits.seed)
    x, _ = _inputs(limits.seed)
    with torch.no_grad():
        ref = dense(x)
    t0 = time.perf_counter()
    first = _prune_once(cls, dense, limits.sparsity, limits.seed, noise=1, path=path)
    seconds = time.perf_counter() - t0
    out1 = _forward(first, x, path)
    if out1.shape != ref.shape:
        raise CheckFailed("shape", f"changes the output shape: dense {tuple(ref.shape)}, pruned {tuple(out1.shape)}; a pruner must keep the classifier's outputs")
    # Measured with the harness's own base class, so an overridden achieved_sparsity cannot report a made-up number.
    base = trusted_class(cls)
    probe = cls()
    achieved = float(base.achieved_sparsity(probe, dense, first))
    tol = float(base.tolerance(probe, dense))
    if abs(achieved - limits.sparsity) > tol + 1e-9:
        how = "less" if achieved < limits.sparsity else "more"
        raise CheckFailed("sparsity", f"prunes {how} than asked: the harness measured {cls.family} sparsity {achieved:.4f} on {DRY_RUN_ARCH[cls.family]} for a request of {limits.sparsity:.4f} (tolerance {tol:.4f})")
    second = _prune_once(cls, dense, limits.sparsity, limits.seed, noise=2, path=path)
    out2 = _forward(second, x, path)
    shapes1 = [tuple(t.shape) for t in first.state_dict().values()]
    shapes2 = [tuple(t.shape) for t in second.state_dict().values()]
    diff = float((out1 - out2).abs().max()) if out1.shape == out2.shape else float("inf")
    if shapes1 != shapes2 or diff > 1e-5:
        raise CheckFailed("determinism", f"non-deterministic: two runs with seed {limits.seed} gave different models (max output difference {diff:.3g}); draw randomness only from ctx.seed, e.g. torch.Generator().manual_seed(ctx.seed)")
    return {"architecture": DRY_RUN_ARCH[cls.family], "sparsity_requested": limits.sparsity, "sparsity_achieved": achieved, "tolerance": tol, "prune_seconds": seconds}


def run_checks(path: str, limits: CheckLimits) -> dict[str, Any]:
    """Every check in order; returns the report or raises CheckFailed."""
    registered = load(path)
    name = the_pruner(registered)
    cls = pruners.get(name).obj
    check_signature(cls)
    report = metadata(name)
    report["dry_run"] = dry_run(name, limits, path)
    return report


def checked(path: str, limits: CheckLimits) -> dict[str, Any]:
    """The JSON report: {"ok": true, ...} or {"ok": false, "check", "message", "trace"}; a guard violation always wins."""
    try:
        report: dict[str, Any] = {"ok": True, **run_checks(path, limits)}
    except CheckFailed as exc:
        report = {"ok": False, "check": exc.check, "message": exc.message, "trace": exc.trace}
    except BaseException as exc:  # anything else escaping the checks is still reported, never a silent crash
        if is_memory_error(exc):
            report = {"ok": False, "check": "memory", "message": "allocates past the memory limit", "trace": ""}
        else:
            report = {"ok": False, "check": "raises", "message": f"raised {type(exc).__name__}: {exc}", "trace": submission_trace(exc, path)}
    if violations():
        # The submission may have caught the PermissionError and carried on; the attempt is a failure regardless.
        first = violations()[0]
        if first.startswith(("open ", "sqlite3.connect ", "os.")):
            report = {"ok": False, "check": "db", "message": f"tries to open the results database ({first}), which was refused; results reach the DB only through the harness", "trace": ""}
        else:
            report = {"ok": False, "check": "isolation", "message": f"tried {first} ({len(violations())} attempt(s) in all), which was refused; a submission may write only in its private working folder and may not use the network", "trace": ""}
    return report


def child_main(path: str, limits: dict[str, Any], conn: Any) -> None:
    """Entry point of the check process: isolate, limit, check, send one report, exit."""
    os.setsid()  # own process group: the parent kills the group on timeout, children of the submission included
    die_with_parent()
    lim = CheckLimits(**limits)
    if lim.workdir:
        # Start in the empty private folder, with HOME and TMPDIR there too; no .pyc files written anywhere.
        os.chdir(lim.workdir)
        os.environ["HOME"] = os.environ["TMPDIR"] = lim.workdir
        tempfile.tempdir = lim.workdir
        sys.dont_write_bytecode = True
    try:
        if lim.sandbox:
            enter_sandbox(writable=[lim.workdir] if lim.workdir else [])
    except OSError as exc:
        conn.send({"ok": False, "check": "sandbox", "message": f"the sandbox is not available on this machine: {exc}; pass --no-sandbox to check without it", "trace": ""})
        os._exit(0)
    torch.set_num_threads(1)  # one thread: bitwise-repeatable runs, and the check does not crowd out others
    guard_paths(lim.protected, writable=[lim.workdir] if lim.workdir else None)
    limit_memory(lim.memory_mb)
    report = checked(path, lim)
    try:
        conn.send(report)
    finally:
        sys.stdout.flush()
        os._exit(0)  # skip atexit handlers a submission may have registered


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.submission.check FILE [--json]`: check in this process and print the report."""
    ap = argparse.ArgumentParser(prog="python -m harness.submission.check", description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--json", action="store_true", help="print the report as one JSON object")
    ap.add_argument("--memory-mb", type=int, default=CheckLimits.memory_mb)
    ap.add_argument("--sparsity", type=float, default=CheckLimits.sparsity)
    ap.add_argument("--db", action="append", default=[], help="a file the submission may not open (repeatable)")
    args = ap.parse_args(argv)
    lim = CheckLimits(memory_mb=args.memory_mb, sparsity=args.sparsity, protected=args.db)
    torch.set_num_threads(1)
    guard_paths(lim.protected)
    limit_memory(lim.memory_mb)
    report = checked(args.file, lim)
    if args.json:
        print(json.dumps(report))
    else:
        print("ok" if report["ok"] else f"{report['check']}: {report['message']}\n{report['trace']}".rstrip())
    return 0 if report["ok"] else 2


if __name__ == "__main__":
    sys.exit(main())
