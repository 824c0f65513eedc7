"""RobustBench's model zoo as a source of dense models: robustbench's own `load_model`, offline, from its model folder.

robustbench 1.1 imports `autoattack` (the name of AutoAttack's git package) at import time; pyautoattack ships the
same code as `pyautoattack`, so `robustbench_load_model` aliases the module when no `autoattack` is installed.
The zoo model's weights are then copied, in order, into the grid's architecture, and the two must give the same
logits: the harness prunes networks it knows, and the job's architecture name stays true.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from harness.api.data import ImageData, to_float
from harness.api.errors import CheckpointError
from harness.api.nets import Normalized

PREFIX = "robustbench:"
DEFAULT_MODEL_DIR = "models"  # robustbench's own default, relative to the working directory
CHECK_IMAGES = 8  # test images on which the copy must give the zoo model's logits
CHECK_TOL = 1e-4  # relative to the largest logit


def parse(spec: str) -> tuple[str, str, str]:
    """'robustbench:cifar10/Linf/Standard' -> (dataset, threat model, model name)."""
    parts = spec.removeprefix(PREFIX).split("/")
    if len(parts) != 3 or not all(parts):
        raise CheckpointError(f"[train] checkpoint {spec!r}: write robustbench:DATASET/THREAT/NAME, e.g. robustbench:cifar10/Linf/Standard.")
    return parts[0], parts[1], parts[2]


def model_file(spec: str, model_dir: str | None) -> Path:
    """Where robustbench keeps the zoo model's weights; offline, the file must be there already."""
    dataset, threat, name = parse(spec)
    folder = Path(model_dir or DEFAULT_MODEL_DIR).expanduser()
    path = folder / dataset / threat / f"{name}.pt"
    if not path.is_file():
        fetch = f"python -c \"from robustbench import load_model; load_model('{name}', model_dir='{folder}', dataset='{dataset}', threat_model='{threat}')\""
        raise CheckpointError(f"[train] checkpoint {spec!r}: {path} not found; download it once with {fetch} (online), or set [train] model_dir.")
    return path


def robustbench_load_model() -> Callable[..., nn.Module]:
    """robustbench's `load_model`, importable with pyautoattack standing in for the `autoattack` package."""
    if importlib.util.find_spec("autoattack") is None and importlib.util.find_spec("pyautoattack") is not None:
        for name in ("", ".state", ".autoattack", ".autopgd_base", ".fab_pt", ".square", ".other_utils"):
            sys.modules.setdefault(f"autoattack{name}", importlib.import_module(f"pyautoattack{name}"))
    try:
        with warnings.catch_warnings():  # robustbench 1.1 imports the deprecated pkg_resources: a warning line per run
            warnings.simplefilter("ignore", UserWarning)
            from robustbench.utils import load_model
    except ImportError as exc:
        raise CheckpointError(f"checkpoint 'robustbench:...' needs robustbench ({exc}); install it with pip install 'harness[robustbench]'.") from None
    return load_model


def copy_weights(zoo_net: nn.Module, net: nn.Module, what: str, arch: str) -> None:
    """Copy every parameter and buffer of `zoo_net` into `net`, in registration order; shapes must match one to one."""
    src, dst = list(zoo_net.state_dict().items()), list(net.state_dict().items())
    bad = next((f"{a} {tuple(x.shape)} vs {b} {tuple(y.shape)}" for (a, x), (b, y) in zip(src, dst) if x.shape != y.shape), None)
    if len(src) != len(dst) or bad:
        detail = bad or f"{len(src)} tensors vs {len(dst)}"
        raise CheckpointError(f"{what} ({type(zoo_net).__name__}) is not architecture {arch!r} ({detail}); name the matching architecture in the grid.")
    net.load_state_dict({name: value for (name, _), (_, value) in zip(dst, src)}, strict=True)


def load(spec: str, model_dir: str | None, net: nn.Module, arch: str, data: ImageData) -> Normalized:
    """The zoo model as the grid's architecture, taking [0, 1] pixels as zoo models do."""
    dataset, threat, name = parse(spec)
    folder = model_file(spec, model_dir).parents[2]
    try:
        zoo_net = robustbench_load_model()(name, model_dir=str(folder), dataset=dataset, threat_model=threat).eval()
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"[train] checkpoint {spec!r}: robustbench cannot load it ({exc}).") from None
    copy_weights(zoo_net, net, f"robustbench model {name}", arch)
    model = Normalized(net, (0.0,) * data.in_channels, (1.0,) * data.in_channels).eval()  # zoo models normalise inside, if at all
    x = to_float(data.x_test[:CHECK_IMAGES])
    with torch.inference_mode():
        want, got = zoo_net(x), model(x)
    if not torch.allclose(got, want, rtol=0, atol=CHECK_TOL * float(want.abs().max().clamp_min(1.0))):
        raise CheckpointError(f"robustbench model {name} ({type(zoo_net).__name__}) computes something else than architecture {arch!r} with its weights (input transform or block order differ); use a zoo model of that architecture.")
    return model
