"""Registries: decorator registration, lookup errors with suggestions, duplicate names, built-ins loaded."""

from __future__ import annotations

import functools

import pytest
from torch import Tensor, nn

from harness import PruneContext, Pruner
from harness.api.errors import RegistrationError, UnknownPluginError
from harness.api.plugins import REGISTRIES, architectures, attacks, datasets, pruners
from harness.api.registry import Registry


def test_builtins_are_registered() -> None:
    assert {"none", "random_filter", "l1_filter"} <= set(pruners.names())
    assert {"fgsm", "pgd_linf"} <= set(attacks.names())
    assert {"small_cnn", "resnet20"} <= set(architectures.names())
    assert {"digits", "cifar10", "fashion_mnist"} <= set(datasets.names())


def test_every_entry_has_description_and_source_hash() -> None:
    for reg in REGISTRIES.values():
        for e in reg.entries():
            assert e.description, f"{reg.kind} {e.name} has no docstring"
            assert len(e.sha256) == 64 and e.source.endswith(".py")


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownPluginError) as info:
        pruners.get("l1_filtr")
    msg = str(info.value)
    assert "Unknown pruner 'l1_filtr'" in msg and "Did you mean: l1_filter" in msg and "Available" in msg


def test_glob_listing() -> None:
    assert pruners.names("l1_*") == [n for n in pruners.names() if n.startswith("l1_")]


def test_decorator_forms_and_duplicates() -> None:
    reg: Registry = Registry("pruner", Pruner)
    reg._discovered = True  # isolated from built-ins

    @reg.decorator
    class plain(Pruner):
        """A."""

        def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> nn.Module:
            return model

    @reg.decorator("named", paper="P")
    class Other(plain):
        """B."""

    assert reg.get("plain").obj is plain and reg.get("named").metadata["paper"] == "P"
    assert reg.get("named").description == "B."

    class Clash(plain):
        """C."""

    with pytest.raises(RegistrationError, match="already registered"):
        reg.register("named", Clash)


def test_registry_tells_objects_without_a_name_apart_and_allows_a_reloaded_class() -> None:
    """Datasets may be registered as instances: a second one under a taken name is a clash, not an AttributeError."""
    reg: Registry = Registry("dataset")
    reg._discovered = True
    first, second = functools.partial(int, "1"), functools.partial(int, "2")
    reg.register("numbers", first)
    reg.register("numbers", first)  # the same object again is fine
    with pytest.raises(RegistrationError, match="already registered"):
        reg.register("numbers", second)

    def make() -> type:
        class Reloaded:
            """R."""
        return Reloaded

    reg.register("reloaded", make())
    reg.register("reloaded", make())  # same source and qualified name: a re-imported module
    assert reg.get("numbers").obj is first


def test_registry_rejects_wrong_base_and_bad_names() -> None:
    reg: Registry = Registry("pruner", Pruner)
    with pytest.raises(RegistrationError, match="subclass"):
        reg.register("thing", object)
    with pytest.raises(RegistrationError, match="snake_case"):
        reg.register("Bad-Name", Pruner)


def test_entry_point_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata as md

    class EP:
        name, value, group = "ep_pruner", "x:y", "harness.pruners"
        dist = None

        def load(self) -> type:
            class EpPruner(Pruner):
                """From an entry point."""

                def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> nn.Module:
                    return model

            return EpPruner

    reg: Registry = Registry("pruner", Pruner)
    monkeypatch.setattr(md, "entry_points", lambda group: [EP()] if group == "harness.pruners" else [])
    assert "ep_pruner" in reg.names()
    assert reg.get("ep_pruner").description == "From an entry point."


def test_architectures_build_and_run(digits) -> None:  # type: ignore[no-untyped-def]
    import torch

    for name in ("small_cnn", "resnet20"):
        net = architectures.get(name).obj(num_classes=10, in_channels=1)
        out: Tensor = net(torch.rand(2, 1, 8, 8))
        assert out.shape == (2, 10)
