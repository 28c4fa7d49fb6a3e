"""Generator inversion of one API (docs/protocol.md sections 5 and 7), and random noise as a floor.

A generator G (re-initialised at every call) and trainable latents z produce x = G(z) in [0,1];
each iteration augments every sample independently (random crop with padding, flip: the
reference drew one augmentation per batch), estimates the input gradient of the per-sample
loss on the API's outputs with the given estimator, and back-propagates the surrogate
mean_i <x~_i, stopgrad(g_i)> into G and z. The batch with the lowest TRUE loss (the loss at the
base points, not the surrogate's value) is kept.

With a student (the task-adapted meta model) the loss adds the boundary term
-w * m(x) * ||A(x) - s(x)||_1, m(x) = 1 where API and student agree on the argmax.

An optional total-variation prior (`tv` > 0, not in docs/protocol.md) adds tv * TV(x_i) to each
sample's loss; its gradient is exact (it needs no API), so it costs no queries.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dfml_bench.interfaces import DataRecoverer, GradientEstimator, RecoveredSet
from dfml_plugins.recoverers.api_loss import api_log_probs
from dfml_plugins.recoverers.generator import GeneratorRecovererParams, NoiseRecovererParams


class Generator(nn.Module):
    """z -> linear -> w x s/4 x s/4 -> BN -> up -> conv -> BN -> LReLU -> up -> conv -> BN -> LReLU -> conv -> sigmoid.

    docs/protocol.md section 5 has w = 128 (the last hidden layer has w / 2 channels).
    """

    def __init__(self, z_dim: int, size: int, width: int = 128):
        super().__init__()
        self.init_size = max(1, size // 4)
        self.size, self.width = size, width
        half = max(1, width // 2)
        self.fc = nn.Linear(z_dim, width * self.init_size ** 2)
        self.bn0 = nn.BatchNorm2d(width)
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2), nn.Conv2d(width, half, 3, 1, 1), nn.BatchNorm2d(half), nn.LeakyReLU(0.2),
            nn.Conv2d(half, 3, 3, 1, 1), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.bn0(self.fc(z).view(z.shape[0], self.width, self.init_size, self.init_size))
        x = self.body(h)
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x

    def reset(self, generator: torch.Generator) -> None:
        """N(0, 0.02) weights, BatchNorm gamma ~ N(1, 0.02), zero biases."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.02, generator=generator)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02, generator=generator)
                nn.init.zeros_(m.bias)


def augment(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Per-sample random crop (zero padding `pad`) and horizontal flip, differentiable in x."""
    n, _, h, w = x.shape
    if pad > 0:
        c = x.shape[1]
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * pad)
        cols = (dx[:, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
        x = padded.gather(2, rows).gather(3, cols)
    if flip:
        mask = torch.rand(n, generator=generator, device=x.device) < 0.5
        x = torch.where(mask.view(n, 1, 1, 1), x.flip(3), x)
    return x


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Per-sample mean absolute difference between vertically and horizontally adjacent pixels."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


class GeneratorRecoverer(DataRecoverer):
    """Zero-order (or white-box) generator inversion with an optional boundary term."""

    def __init__(self, params: GeneratorRecovererParams):
        self.p = params

    def recover(self, api: object, estimator: GradientEstimator, per_class: int, image_size: int,
                generator: torch.Generator,
                student: Callable[[torch.Tensor], torch.Tensor] | None = None) -> RecoveredSet:
        device = generator.device
        k = api.num_classes  # type: ignore[attr-defined]
        n = k * per_class
        targets = torch.arange(k, device=device).repeat_interleave(per_class)
        g_net = Generator(self.p.z_dim, image_size, self.p.width).to(device)
        g_net.reset(generator)
        if device.type == "cpu":  # after the (layout-dependent) init: faster steps (benchmarks/README.md)
            g_net.to(memory_format=torch.channels_last)
        z = torch.randn(n, self.p.z_dim, device=device, generator=generator).requires_grad_(True)
        opt = torch.optim.Adam(list(g_net.parameters()) + [z], lr=self.p.lr, betas=(0.5, 0.999))
        weight = self.p.boundary_weight
        output = api.output  # type: ignore[attr-defined]

        def loss_fn(inputs: torch.Tensor, scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            logp = api_log_probs(scores, k, output)
            loss = F.nll_loss(logp, targets[index], reduction="none")
            if student is not None and weight > 0 and scores.dim() == 2:
                s = student(inputs)
                agree = (s.argmax(1) == scores.argmax(1)).float()
                loss = loss - weight * agree * (scores - s).abs().sum(1)
            return loss

        best_loss, best_x = float("inf"), None
        g_net.train()
        for _ in range(self.p.iterations):
            x = g_net(z)
            xa = augment(x, self.p.pad, self.p.flip, generator)
            est = estimator.estimate(api, xa.detach(), loss_fn)
            prior = self.p.tv * total_variation(x).mean() if self.p.tv > 0 else x.new_zeros(())
            true_loss = est.loss.mean().item() + prior.item()
            if true_loss < best_loss:
                best_loss, best_x = true_loss, x.detach().clone()
            surrogate = (xa * est.grad).flatten(1).sum(1).mean() + prior
            opt.zero_grad(set_to_none=True)
            surrogate.backward()
            opt.step()
        assert best_x is not None
        with torch.no_grad():
            scores = api.query(best_x)  # type: ignore[attr-defined]
        pred = scores if scores.dim() == 1 else scores.argmax(1)
        agreement = 100.0 * (pred == targets).float().mean().item()
        return RecoveredSet(best_x, targets, best_loss, agreement, scores)


class NoiseRecoverer(DataRecoverer):
    """Uniform noise images labelled by the API's own argmax: a floor for recovery."""

    def __init__(self, params: NoiseRecovererParams | None = None):
        self.params = params

    def recover(self, api: object, estimator: GradientEstimator, per_class: int, image_size: int,
                generator: torch.Generator,
                student: Callable[[torch.Tensor], torch.Tensor] | None = None) -> RecoveredSet:
        k = api.num_classes  # type: ignore[attr-defined]
        x = torch.rand(k * per_class, 3, image_size, image_size, generator=generator, device=generator.device)
        with torch.no_grad():
            scores = api.query(x)  # type: ignore[attr-defined]
        labels = scores if scores.dim() == 1 else scores.argmax(1)
        return RecoveredSet(x, labels, float("nan"), 100.0, scores)
