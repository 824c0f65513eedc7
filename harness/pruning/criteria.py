"""Filter importance criteria that torch-pruning lacks, and what data-driven criteria share: calibration images, forward-hook features."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api.errors import PruningError
from harness.api.pruner import PruneContext
from harness.pruning.filters import (
    GroupImportance,
    group_items,
    group_size,
    representative_layers,
    scatter_to_root,
)

# ---- weight-only scores of one conv's filters (out, in, kh, kw) -> (out,) ----


def l1_norm(weight: Tensor) -> Tensor:
    """Sum of |w| over each filter (Li et al. 2017)."""
    return weight.abs().flatten(1).sum(1)


def l2_norm(weight: Tensor) -> Tensor:
    """Euclidean norm of each filter."""
    return weight.flatten(1).norm(dim=1)


def distance_to_others(weight: Tensor) -> Tensor:
    """Sum of Euclidean distances from each filter to the layer's other filters (FPGM, He et al. 2019).

    The geometric median minimises this sum, so the filters with the smallest sums are the ones nearest
    it: the most replaceable, pruned first.
    """
    flat = weight.flatten(1).double()
    return torch.cdist(flat, flat).sum(1).float()


# ---- calibration data ----


def calibration_images(ctx: PruneContext, who: str, limit: int | None = None) -> tuple[Tensor, Tensor]:
    """The calibration batches as one (images, labels) pair, at most `limit` images."""
    if not ctx.calibration:
        raise PruningError(f"{who} is data-driven and needs calibration batches in the PruneContext; pass a few training batches.")
    x = torch.cat([b[0] for b in ctx.calibration])
    y = torch.cat([b[1] for b in ctx.calibration])
    return (x[:limit], y[:limit]) if limit else (x, y)


def group_layers(groups: list[Any]) -> list[nn.Module]:
    """Every layer through which some group's channels are observed (BNs, or convs where a group has no BN)."""
    layers: dict[int, nn.Module] = {}
    for g in groups:
        for layer, _, _ in group_items(g, representative_layers(g)):
            layers[id(layer)] = layer
    return list(layers.values())


@torch.no_grad()
def layer_features(model: nn.Module, layers: list[nn.Module], x: Tensor, feature: Callable[[Tensor], Tensor], batch_size: int = 128) -> dict[nn.Module, Tensor]:
    """Per layer, `feature(relu(output))` for every image: an (images, channels) matrix.

    The ReLU follows HRank, DropNet and PLS+VIP, which all read a filter's activated feature map.
    """
    out: dict[nn.Module, list[Tensor]] = {m: [] for m in layers}

    def hook(m: nn.Module, _inp: Any, o: Tensor) -> None:
        out[m].append(feature(F.relu(o.detach())).float().cpu())

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        model.eval()
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size])
    finally:
        for h in handles:
            h.remove()
    return {m: torch.cat(v) for m, v in out.items()}


def feature_map_rank(a: Tensor) -> Tensor:
    """Rank of each (H, W) feature map: (N, C, H, W) -> (N, C), computed on the CPU.

    Float64 SVDs of many small matrices are slow on GPUs (FP64 rate, one solver launch per batch) and their
    rank tolerance then depends on the device's solver; on the CPU every device gets LAPACK's ranks.
    """
    return torch.linalg.matrix_rank(a.detach().to("cpu", torch.float64)).float()


def mean_abs(a: Tensor) -> Tensor:
    """Mean absolute activation of each feature map: (N, C, H, W) -> (N, C)."""
    return a.abs().mean((2, 3))


def global_max(a: Tensor) -> Tensor:
    """Global max pooling of each feature map: (N, C, H, W) -> (N, C)."""
    return a.amax((2, 3))


class ActivationStatImportance(GroupImportance):
    """Mean over calibration images of a per-feature-map statistic, summed over the group's coupled layers."""

    def __init__(self, stat: Callable[[Tensor], Tensor], name: str, images: int | None = None) -> None:
        self.stat, self.name, self.images = stat, name, images
        self.scores: dict[nn.Module, Tensor] = {}

    def prepare(self, model: nn.Module, ctx: PruneContext, groups: list[Any]) -> None:
        """Run the calibration images through the current model and keep each layer's mean statistic."""
        x, _ = calibration_images(ctx, self.name, self.images)
        feats = layer_features(model, group_layers(groups), x, self.stat)
        self.scores = {m: f.mean(0) for m, f in feats.items()}

    def __call__(self, group: Any) -> Tensor:
        """Sum of the statistic over the layers that carry each channel."""
        total = scatter_to_root(group, lambda m, idxs: self.scores[m][idxs], representative_layers(group))
        return total if total is not None else torch.zeros(group_size(group))


class BNScaleImportance(GroupImportance):
    """|gamma| of the BatchNorms that follow the group's convs (network slimming, Liu et al. 2017)."""

    def __call__(self, group: Any) -> Tensor:
        """Sum of |gamma| over the BatchNorms that carry each channel."""
        total = scatter_to_root(group, lambda m, idxs: cast(Tensor, m.weight).detach()[idxs].abs(), nn.BatchNorm2d)
        if total is None:
            raise PruningError("bn_scale needs a BatchNorm2d after every pruned conv; this group has none; use l1_filter for such networks.")
        return total


class TaylorImportance(GroupImportance):
    """First-order Taylor estimate of the loss change when a channel's gate goes to zero (Molchanov et al. 2019).

    With a gate after each BatchNorm, the gate's gradient is gamma*dL/dgamma + beta*dL/dbeta; the importance
    is that sum over the channel's coupled layers, squared per minibatch and averaged over minibatches.
    Layers without a BatchNorm use the conv filter's own sum of w*dL/dw (the paper's weight variant).
    """

    def __init__(self) -> None:
        self.contrib: dict[nn.Module, Tensor] = {}  # layer -> (batches, channels)

    def prepare(self, model: nn.Module, ctx: PruneContext, groups: list[Any]) -> None:
        """One forward/backward per calibration batch, in eval mode so BN statistics stay untouched."""
        if not ctx.calibration:
            raise PruningError("taylor needs calibration batches in the PruneContext; pass a few training batches.")
        layers = group_layers(groups)
        per_batch: dict[nn.Module, list[Tensor]] = {m: [] for m in layers}
        model.eval()
        params = [p for p in model.parameters()]
        for x, y in ctx.calibration:
            for p in params:
                p.grad = None
            F.cross_entropy(model(x), y).backward()
            for m in layers:
                per_batch[m].append(_gate_gradient(m).cpu())
        for p in params:
            p.grad = None
        self.contrib = {m: torch.stack(v) for m, v in per_batch.items()}

    def __call__(self, group: Any) -> Tensor:
        """Mean over minibatches of the squared summed gate gradient."""
        kind = representative_layers(group)
        n = group_size(group)
        batches = next(iter(self.contrib.values())).shape[0]
        total = torch.zeros(batches, n)
        for layer, idxs, root in group_items(group, kind):
            total.index_add_(1, torch.as_tensor(root), self.contrib[layer][:, idxs])
        return total.pow(2).mean(0)


@torch.no_grad()
def _gate_gradient(m: nn.Module) -> Tensor:
    """dL/dgate for a unit gate on each output channel of `m`, from the gradients of its parameters."""
    if isinstance(m, nn.BatchNorm2d):
        if m.weight is None:
            raise PruningError("taylor reads the gate gradient from BatchNorm's affine parameters, and this network has BatchNorm2d(affine=False); use l1_filter or hrank for it.")
        g = m.weight * cast(Tensor, m.weight.grad)
        return (g + m.bias * m.bias.grad) if m.bias is not None and m.bias.grad is not None else g
    weight, bias = cast(Tensor, m.weight), cast("Tensor | None", getattr(m, "bias", None))
    g = (weight * cast(Tensor, weight.grad)).flatten(1).sum(1)
    return g + bias * bias.grad if bias is not None and bias.grad is not None else g


class KLImportance(GroupImportance):
    """KL divergence of the network's output when one channel is removed (Luo & Wu 2020, as in CURL).

    Removing a channel is simulated by zeroing it at every coupled layer that carries it (so residual
    channels disappear from the whole stream), as pruning then fine-tuning would; KL(q || p) with p the
    intact softmax and q the softmax with the channel removed, averaged over the calibration images.
    """

    def __init__(self, images: int = 64, max_batch: int = 1024) -> None:
        self.images, self.max_batch = images, max_batch
        self.model: nn.Module | None = None
        self.x = torch.empty(0)
        self.log_p = torch.empty(0)

    def prepare(self, model: nn.Module, ctx: PruneContext, groups: list[Any]) -> None:
        """Keep the current model, a calibration subset and its intact log-probabilities."""
        self.x, _ = calibration_images(ctx, "kl_divergence", self.images)
        self.model = model.eval()
        with torch.no_grad():
            self.log_p = F.log_softmax(model(self.x), 1)

    @torch.no_grad()
    def __call__(self, group: Any) -> Tensor:
        """One forward per channel, several channels per batch (each copy of the images loses one channel)."""
        if self.model is None:
            raise PruningError("kl_divergence scored a group before prepare(); call prepare(model, ctx, groups) first.")
        items = list(group_items(group, representative_layers(group)))
        n, per = group_size(group), len(self.x)
        chunk = max(1, self.max_batch // per)
        scores = torch.zeros(n)
        for start in range(0, n, chunk):
            roots = list(range(start, min(start + chunk, n)))
            handles = [layer.register_forward_hook(_zero_channels(per, roots, dict(zip(root, idxs)))) for layer, idxs, root in items]
            try:
                log_q = F.log_softmax(self.model(self.x.repeat(len(roots), 1, 1, 1)), 1).view(len(roots), per, -1)
            finally:
                for h in handles:
                    h.remove()
            kl = (log_q.exp() * (log_q - self.log_p.unsqueeze(0))).sum(2).mean(1)
            scores[start : start + len(roots)] = kl.cpu()
        return scores


def _zero_channels(per: int, roots: list[int], local: dict[int, int]) -> Callable[[nn.Module, Any, Tensor], Tensor]:
    """A forward hook that zeroes, in copy k of the images, this layer's channel for root channel roots[k]."""
    copies = [k for k, r in enumerate(roots) if r in local]
    channels = [local[roots[k]] for k in copies]

    def hook(_m: nn.Module, _inp: Any, out: Tensor) -> Tensor:
        o = out.clone()
        view = o.view(len(roots), per, *o.shape[1:])
        view[torch.as_tensor(copies, dtype=torch.long), :, torch.as_tensor(channels, dtype=torch.long)] = 0
        return o

    return hook


def vip_scores(x: np.ndarray, y: np.ndarray, components: int) -> np.ndarray:
    """Variable Importance in Projection of each column of `x` for a PLS regression onto one-hot labels `y`.

    VIP_j = sqrt(p * sum_k SS_k (w_jk / ||w_k||)^2 / sum_k SS_k), with SS_k = ||q_k||^2 ||t_k||^2 the
    label variance the k-th latent component explains (Wold; Jordao et al. 2018, eq. 2).
    """
    from sklearn.cross_decomposition import PLSRegression

    classes = np.unique(y)
    targets = (y[:, None] == classes[None, :]).astype(np.float64)
    components = max(1, min(components, x.shape[0] - 1, x.shape[1]))
    pls = PLSRegression(n_components=components, scale=True).fit(x.astype(np.float64), targets)
    w, t, q = pls.x_weights_, pls.x_scores_, pls.y_loadings_
    ss = (t**2).sum(0) * (q**2).sum(0)
    w_norm = w / np.linalg.norm(w, axis=0, keepdims=True)
    return np.sqrt(x.shape[1] * (w_norm**2 @ ss) / ss.sum())


class PLSVIPImportance(GroupImportance):
    """VIP of each filter's pooled feature map in one PLS model over all layers (Jordao et al. 2018/2020)."""

    def __init__(self, components: int = 2, images: int | None = None) -> None:
        self.components, self.images = components, images
        self.scores: dict[nn.Module, Tensor] = {}

    def prepare(self, model: nn.Module, ctx: PruneContext, groups: list[Any]) -> None:
        """Represent each filter by global max pooling, fit PLS against the labels, keep every filter's VIP."""
        x, y = calibration_images(ctx, "pls_vip", self.images)
        layers = group_layers(groups)
        feats = layer_features(model, layers, x, global_max)
        matrix = torch.cat([feats[m] for m in layers], 1).numpy()
        vip = torch.from_numpy(vip_scores(matrix, y.cpu().numpy(), self.components)).float()
        self.scores, start = {}, 0
        for m in layers:
            c = feats[m].shape[1]
            self.scores[m] = vip[start : start + c]
            start += c

    def __call__(self, group: Any) -> Tensor:
        """Sum of the VIPs of the coupled layers' features for each channel."""
        total = scatter_to_root(group, lambda m, idxs: self.scores[m][idxs], representative_layers(group))
        return total if total is not None else torch.zeros(group_size(group))
