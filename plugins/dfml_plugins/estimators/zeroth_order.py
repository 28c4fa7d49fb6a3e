"""Zero-order gradient estimators (PROTOCOL.md section 6) and the white-box autograd reference.

For image x_i (d = C*H*W) and per-sample loss f_i, with u_ij uniform on the unit sphere:

    forward:  g_i = (d / q)  * sum_j [f_i(x_i + mu u_ij) - f_i(x_i)] / mu * u_ij      B (q + 1) queries
    central:  g_i = (d / 2q) * sum_j [f_i(x_i + mu u_ij) - f_i(x_i - mu u_ij)] / mu * u_ij
                                                      (+ the base point for the true loss)  B (2q + 1) queries

Directions are drawn on the images' device from a seeded generator; the base point goes in
the same API call as the perturbed points; the number of images per call comes from a memory
budget, not a constant.
"""

from __future__ import annotations

import torch

from dfml_bench.errors import AccessError
from dfml_bench.interfaces import Estimate, GradientEstimator, PerSampleLoss
from dfml_plugins.params import WhiteBoxEstimatorParams, ZOParams


class _ZeroOrder(GradientEstimator):
    #: antithetic pairs (central difference) or one-sided (forward difference)
    central = False

    def __init__(self, params: ZOParams, seed: int = 0):
        if params.q < 1 or params.mu <= 0:
            raise ValueError("q must be >= 1 and mu > 0")
        self.p = params
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        g = self._generators.get(device)
        if g is None:
            g = torch.Generator(device=device)
            g.manual_seed(self.seed)
            self._generators[device] = g
        return g

    @property
    def points_per_image(self) -> int:
        return 2 * self.p.q + 1 if self.central else self.p.q + 1

    def images_per_call(self, d: int, element_size: int = 4) -> int:
        """Whole images (with all their perturbations) that fit the memory budget in one call."""
        per_image = self.points_per_image * d * element_size
        return max(1, (self.p.memory_mb << 20) // per_image)

    @torch.no_grad()
    def estimate(self, api: object, x: torch.Tensor, loss_fn: PerSampleLoss) -> Estimate:
        b = x.shape[0]
        d = x[0].numel()
        q, mu, m = self.p.q, self.p.mu, self.points_per_image
        gen = self._generator(x.device)
        losses = torch.empty(b, device=x.device)
        grads = torch.empty_like(x)
        step = self.images_per_call(d, x.element_size())
        for start in range(0, b, step):
            xs = x[start:start + step]
            n = xs.shape[0]
            u = torch.randn(n, q, d, device=x.device, dtype=x.dtype, generator=gen)
            u /= u.norm(dim=2, keepdim=True)
            base = xs.reshape(n, 1, d)
            parts = [base, base + mu * u]
            if self.central:
                parts.append(base - mu * u)
            points = torch.cat(parts, dim=1).view(n * m, *x.shape[1:])
            scores = api.query(points)  # one call: base point and perturbations together
            index = torch.arange(start, start + n, device=x.device).repeat_interleave(m)
            f = loss_fn(points, scores, index).view(n, m)
            if self.central:
                diff, scale = f[:, 1:q + 1] - f[:, q + 1:], d / (2 * q)
            else:
                diff, scale = f[:, 1:] - f[:, :1], d / q
            grads[start:start + n] = torch.bmm((diff * (scale / mu)).unsqueeze(1), u).view(n, *x.shape[1:])
            losses[start:start + n] = f[:, 0]
        return Estimate(losses, grads)


class ZOForward(_ZeroOrder):
    """Forward differences (the paper's estimator)."""


class ZOCentral(_ZeroOrder):
    """Central differences over antithetic direction pairs: lower variance per direction."""

    central = True


class WhiteBoxGradient(GradientEstimator):
    """True input gradients by autograd through a WhiteBoxAPI (the white-box reference)."""

    needs_white_box = True

    def __init__(self, params: WhiteBoxEstimatorParams | None = None, seed: int = 0):
        self.params = params

    def estimate(self, api: object, x: torch.Tensor, loss_fn: PerSampleLoss) -> Estimate:
        forward = getattr(type(api), "forward", None)
        if forward is None:
            raise AccessError("the white_box estimator needs a WhiteBoxAPI; this method only has black-box "
                              "access (use zo_forward or zo_central).")
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            scores = api.forward(xg)
            loss = loss_fn(xg, scores, torch.arange(x.shape[0], device=x.device))
            (grad,) = torch.autograd.grad(loss.sum(), xg)
        return Estimate(loss.detach(), grad.detach())
