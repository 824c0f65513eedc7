"""DeepFool (Moosavi-Dezfooli et al., DeepFool: a simple and accurate method to fool deep neural networks, CVPR 2016)."""

import torch
from torch import Tensor, nn

from harness.api.attack import MinimalAttack
from harness.api.errors import AttackError

# How often (in iterations) to check whether every example is already fooled: a host sync, so not every step.
STOP_CHECK_EVERY = 5


class DeepFool(MinimalAttack):
    """Minimal L2 perturbation: repeated steps to the nearest linearised decision boundary among the top classes."""

    threat_model = "l2"

    def __init__(self, steps: int = 50, overshoot: float = 0.02, candidates: int = 10, seed: int = 0) -> None:
        super().__init__(seed=seed)
        if steps < 1 or candidates < 2:
            raise AttackError(f"deepfool: steps={steps} must be >= 1 and candidates={candidates} >= 2.")
        self.steps, self.overshoot, self.candidates = steps, overshoot, candidates

    def minimal(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Batched DeepFool; an example stops moving once it is misclassified."""
        x = x.detach()
        with torch.no_grad():
            logits = model(x)
        k = min(self.candidates, logits.shape[1])
        # The candidate classes: the true class first, then the other top-scoring classes of the clean image.
        others = logits.scatter(1, y[:, None], float("-inf")).topk(k - 1, dim=1).indices
        classes = torch.cat([y[:, None], others], dim=1)
        r_tot = torch.zeros_like(x)
        x_adv = x.clone()
        active = logits.argmax(1) == y
        for start in range(0, self.steps, STOP_CHECK_EVERY):
            # Every few steps, drop the examples already fooled (one host sync) so later steps cost less.
            idx = active.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            xs, cs, rs = x[idx], classes[idx], r_tot[idx]
            still = torch.ones(len(idx), dtype=torch.bool, device=x.device)
            for _ in range(min(STOP_CHECK_EVERY, self.steps - start)):
                xi = (xs + (1 + self.overshoot) * rs).clamp(0.0, 1.0).requires_grad_(True)
                out = model(xi).gather(1, cs)  # (n, k) logits of the candidate classes
                still = still & (out.detach().argmax(1) == 0)
                # All k class gradients in one vectorised backward pass.
                eye = torch.eye(k, device=x.device, dtype=out.dtype)[:, None, :].expand(k, len(idx), k)
                (grads,) = torch.autograd.grad(out, xi, grad_outputs=eye, is_grads_batched=True)
                grads = grads.transpose(0, 1).flatten(2)  # (n, k, d)
                w = grads[:, 1:] - grads[:, :1]
                f = (out[:, 1:] - out[:, :1]).detach()  # negative while still correctly classified
                w_norm = w.norm(dim=2).clamp_min(1e-8)
                dist = f.abs() / w_norm
                best = dist.argmin(1, keepdim=True)
                # Step onto the linearised boundary of the closest class (+1e-4 so it is crossed, as in the paper's code).
                scale = (dist.gather(1, best) + 1e-4) / w_norm.gather(1, best)
                r = scale[:, :, None] * w.gather(1, best[:, :, None].expand(-1, 1, w.shape[2]))
                rs = rs + r.view_as(xs) * still.view(-1, *([1] * (x.dim() - 1)))
            with torch.no_grad():
                x_final = (xs + (1 + self.overshoot) * rs).clamp(0.0, 1.0)
                still = model(x_final).argmax(1) == cs[:, 0]
            r_tot[idx], x_adv[idx], active[idx] = rs, x_final, still
        return x_adv
