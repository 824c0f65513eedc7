"""Exception hierarchy: library code raises these; only the CLI turns them into exit codes."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """Base class for every error the harness reports to a user."""

    exit_code: int = 1


class UnknownPluginError(HarnessError, KeyError):
    """A plugin name that no registry entry matches."""

    def __init__(self, kind: str, name: str, available: Iterable[str]) -> None:
        names = sorted(available)
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        listed = ", ".join(names) if names else "none"
        super().__init__(
            f"Unknown {kind} {name!r}.{hint} Available ({len(names)}): {listed}. "
            f"See `harness list {kind}s`."
        )
        self.kind, self.name = kind, name

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class RegistrationError(HarnessError):
    """A plugin that cannot be registered (duplicate name, wrong type or signature)."""


class GridError(HarnessError):
    """A grid file that is missing, unparsable or invalid."""


class DatasetError(HarnessError):
    """A dataset that cannot be found or loaded."""


class CheckpointError(HarnessError):
    """A given dense model (`[train] checkpoint`) that is missing, changed, or not of the grid's architecture."""


class PruningError(HarnessError):
    """A pruner that cannot do what the job asks (e.g. reach the requested sparsity)."""


class AttackError(HarnessError):
    """An attack that is misconfigured or fails."""


class SubmissionError(HarnessError):
    """A submitted plugin file that breaks the contract."""

    exit_code = 2
