"""Zero-order gradient estimators (docs/protocol.md section 6) and the white-box autograd reference.

For image x_i (d = C*H*W) and per-sample loss f_i, with u_ij uniform on the unit sphere:

    forward:  g_i = (d / q)  * sum_j [f_i(x_i + mu u_ij) - f_i(x_i)] / mu * u_ij      B (q + 1) queries
    central:  g_i = (d / 2q) * sum_j [f_i(x_i + mu u_ij) - f_i(x_i - mu u_ij)] / mu * u_ij
                                                      (+ the base point for the true loss)  B (2q + 1) queries

Directions are drawn on the images' device from a seeded generator; the base point goes in
the same API call as the perturbed points; what goes in one call comes from a memory budget,
not a constant: whole images with all their points while they fit, otherwise one image with
its directions split, so the points and directions a step holds fit memory_mb whatever q and B;
the API adds one forward slice of its own (benchmarks/zo_memory.py).
"""

from __future__ import annotations

import torch

from dfml_bench.errors import AccessError
from dfml_bench.interfaces import Estimate, GradientEstimator, PerSampleLoss
from dfml_plugins.estimators.zeroth_order import WhiteBoxEstimatorParams, ZOParams


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

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The direction generators' states, by device (for checkpoints)."""
        return {str(device): g.get_state() for device, g in self._generators.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` returned."""
        for device, value in state.items():
            self._generator(torch.device(device)).set_state(value.cpu())

    @property
    def points_per_image(self) -> int:
        return 2 * self.p.q + 1 if self.central else self.p.q + 1

    def chunks(self, d: int, element_size: int = 4, reserved: int = 0) -> tuple[int, int]:
        """(images, directions) per API call so that what a call holds fits the memory budget.

        A call holds its points (the base point and `sides` points per direction) and the unit
        directions themselves, both counted against the budget less `reserved` bytes (what the
        step holds throughout: its gradient estimates). Whole images with all their
        perturbations while they fit; beyond that (large q or big images) one image per call with
        its directions split, so the peak stays bounded in q.
        """
        budget = (self.p.memory_mb << 20) - reserved
        per_point = d * element_size
        sides = 2 if self.central else 1
        images = budget // ((self.points_per_image + self.p.q) * per_point)
        if images >= 1:
            return images, self.p.q
        return 1, max(1, (budget // per_point - 1) // (sides + 1))

    def images_per_call(self, d: int, element_size: int = 4) -> int:
        """Whole images (with all their perturbations) per call; 1 when an image's directions are split."""
        return self.chunks(d, element_size)[0]

    @torch.no_grad()
    def estimate(self, api: object, x: torch.Tensor, loss_fn: PerSampleLoss) -> Estimate:
        b = x.shape[0]
        d = x[0].numel()
        q, mu, sides = self.p.q, self.p.mu, 2 if self.central else 1
        gen = self._generator(x.device)
        flat = x.reshape(b, d)
        losses = torch.empty(b, device=x.device)
        grads = torch.empty(b, 1, d, device=x.device, dtype=x.dtype)
        n_img, n_dir = self.chunks(d, x.element_size(), reserved=grads.numel() * grads.element_size())
        scale = (d / (2 * q) if self.central else d / q) / mu
        for start in range(0, b, n_img):
            xs = flat[start:start + n_img].unsqueeze(1)
            n = xs.shape[0]
            for j in range(0, q, n_dir):
                k = min(n_dir, q - j)
                first = j == 0  # the base point rides in the same call as the first directions
                u = torch.randn(n, k, d, device=x.device, dtype=x.dtype, generator=gen)
                u /= u.norm(dim=2, keepdim=True)
                m = int(first) + sides * k
                points = torch.empty(n, m, d, device=x.device, dtype=x.dtype)
                if first:
                    points[:, 0] = xs[:, 0]
                for side, sign in enumerate((mu, -mu)[:sides]):
                    block = points[:, int(first) + side * k:int(first) + (side + 1) * k]
                    torch.mul(u, sign, out=block).add_(xs)  # x + mu u (and x - mu u), no temporaries
                inputs = points.view(n * m, *x.shape[1:])
                scores = api.query(inputs)  # base point and perturbations in one call
                index = torch.arange(start, start + n, device=x.device).repeat_interleave(m)
                f = loss_fn(inputs, scores, index).view(n, m)
                if first:
                    losses[start:start + n] = f[:, 0]
                    f0 = f[:, :1]
                f = f[:, int(first):]
                diff = f[:, :k] - f[:, k:] if self.central else f - f0
                out = grads[start:start + n]
                if first:
                    torch.bmm((diff * scale).unsqueeze(1), u, out=out)
                else:
                    out.baddbmm_((diff * scale).unsqueeze(1), u)
                del u, points, inputs, scores  # free this chunk before the next one is drawn
        return Estimate(losses, grads.view_as(x))


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
