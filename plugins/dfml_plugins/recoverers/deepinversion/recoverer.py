"""DeepInversion (Yin et al. 2020) of one white-box API, as PURER uses it (docs/protocol.md section 10).

Learnable pixels (images = sigmoid(logits), `per_class` per API class) minimise

    CE(API(jitter(x)), y) + tv * TV(x) + bn * sum_l (||mu_l - mu_l^run||_2 + ||var_l - var_l^run||_2) + l2 * ||x||_2

where mu_l / var_l are the per-channel statistics of the input of the API's BatchNorm layer l on the
batch (forward hooks) and ^run its running statistics; jitter is a per-sample random circular
translation of +-`jitter` px (DeepInversion's roll, which keeps pixel statistics) and flip. TV sums
the L2 norms of the differences between neighbouring pixels (vertical, horizontal and both
diagonals), as DeepInversion does; norms are over the batch.
An API without BatchNorm running statistics gets no BN term (one note, at the first such API).

With a student (x -> logits, e.g. the meta model adapted on these images) the loss adds the
adversarial curriculum term -w * mean_i m_i * CE(student(x_i), y_i), m_i = 1 while the student
still classifies x_i correctly: the images move to where the adapted model errs, the CE term
keeps the API agreeing, and the mask stops the push once the student errs.

`persistent=True` (PURER) keeps each API's pixels and their Adam state between calls, so each
call is `iterations` more steps on the same images; `persistent=False` starts fresh pixels.
The images are differentiated through the API itself (its BatchNorm statistics are internals),
so this recoverer needs a WhiteBoxAPI and ignores the gradient estimator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dfml_bench.errors import AccessError
from dfml_bench.interfaces import DataRecoverer, GradientEstimator, RecoveredSet
from dfml_plugins.recoverers.deepinversion import DeepInversionParams


def jitter(x: torch.Tensor, shift: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Per-sample random circular translation by up to +-`shift` px (as DeepInversion's roll: pixel
    statistics are unchanged, unlike a zero-padded crop) and horizontal flip; differentiable in x."""
    n, c, h, w = x.shape
    if shift > 0:
        dy = torch.randint(-shift, shift + 1, (n,), generator=generator, device=x.device)
        dx = torch.randint(-shift, shift + 1, (n,), generator=generator, device=x.device)
        rows = (torch.arange(h, device=x.device) - dy[:, None]) % h
        cols = (torch.arange(w, device=x.device) - dx[:, None]) % w
        x = x.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w)).gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))
    if flip:
        mask = torch.rand(n, generator=generator, device=x.device) < 0.5
        x = torch.where(mask.view(n, 1, 1, 1), x.flip(3), x)
    return x


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Sum of the L2 norms of vertical, horizontal and diagonal neighbour differences."""
    return ((x[..., 1:, :] - x[..., :-1, :]).norm() + (x[..., :, 1:] - x[..., :, :-1]).norm()
            + (x[..., 1:, 1:] - x[..., :-1, :-1]).norm() + (x[..., 1:, :-1] - x[..., :-1, 1:]).norm())


class BNStatistics:
    """Forward hooks on a module's BatchNorm layers (with running stats) that collect, per
    forward pass, sum_l ||mu_l - running_mean_l||_2 + ||var_l - running_var_l||_2."""

    def __init__(self, module: nn.Module):
        self.layers = [m for m in module.modules()
                       if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]
        self.terms: list[torch.Tensor] = []
        self._handles: list[Any] = []

    def __enter__(self) -> BNStatistics:
        self._handles = [m.register_forward_hook(self._hook) for m in self.layers]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _hook(self, mod: nn.Module, inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        x = inp[0]
        dims = [0] + list(range(2, x.dim()))
        self.terms.append((x.mean(dims) - mod.running_mean).norm()  # type: ignore[operator]
                          + (x.var(dims, unbiased=False) - mod.running_var).norm())  # type: ignore[operator]

    def pop(self) -> torch.Tensor | None:
        """The summed term of the last forward pass (None without BN layers); clears it."""
        total = torch.stack(self.terms).sum() if self.terms else None
        self.terms = []
        return total


class _Bank:
    """An API's learnable pixel logits and their optimiser."""

    def __init__(self, logits: torch.Tensor, lr: float):
        self.logits = logits.requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.logits], lr=lr)


class DeepInversionRecoverer(DataRecoverer):
    """White-box DeepInversion with optional persistent per-API pixels and a student term."""

    def __init__(self, params: DeepInversionParams):
        self.p = params
        self.banks: dict[str, _Bank] = {}
        self.noted = False  # the "no BatchNorm" note was given

    def _bank(self, api_id: str, n: int, size: int, generator: torch.Generator) -> _Bank:
        bank = self.banks.get(api_id) if self.p.persistent else None
        if bank is None or bank.logits.shape[0] != n or bank.logits.shape[-1] != size:
            init = 0.5 * torch.randn(n, 3, size, size, generator=generator, device=generator.device)
            bank = _Bank(init, self.p.lr)
            if self.p.persistent:
                self.banks[api_id] = bank
        return bank

    def recover(self, api: Any, estimator: GradientEstimator | None, per_class: int, image_size: int,
                generator: torch.Generator,
                student: Callable[[torch.Tensor], torch.Tensor] | None = None) -> RecoveredSet:
        if not callable(getattr(type(api), "forward", None)) or not hasattr(type(api), "module"):
            raise AccessError("the deepinversion recoverer needs a WhiteBoxAPI (BatchNorm statistics and input "
                              "gradients); register the method with access='white' or use the generator recoverer.")
        k = api.num_classes
        targets = torch.arange(k, device=generator.device).repeat_interleave(per_class)
        bank = self._bank(api.api_id, k * per_class, image_size, generator)
        stats = BNStatistics(api.module)
        if not stats.layers and self.p.bn > 0 and not self.noted:
            self.noted = True
            self.log(f"deepinversion: API {api.api_id} ({api.info.architecture}) has no BatchNorm running "
                     "statistics; the BN-statistics term is skipped for it and any other such API")
        loss_value = float("nan")
        with stats, torch.enable_grad():
            for _ in range(self.p.iterations):
                x = torch.sigmoid(bank.logits)
                xj = jitter(x, self.p.jitter, self.p.flip, generator)
                loss = F.cross_entropy(api.forward(xj), targets)
                bn = stats.pop()
                if bn is not None and self.p.bn > 0:
                    loss = loss + self.p.bn * bn
                loss = loss + self.p.tv * total_variation(x) + self.p.l2 * x.norm()
                if student is not None and self.p.student_weight > 0:
                    s = student(xj)
                    right = (s.argmax(1) == targets).float().detach()
                    loss = loss - self.p.student_weight * (right * F.cross_entropy(s, targets, reduction="none")).mean()
                bank.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                bank.optimizer.step()
                loss_value = loss.item()
        images = torch.sigmoid(bank.logits).detach().clone()
        with torch.no_grad():
            scores = api.query(images)
        pred = scores if scores.dim() == 1 else scores.argmax(1)
        agreement = 100.0 * (pred == targets).float().mean().item()
        return RecoveredSet(images, targets, loss_value, agreement, scores)

    def state_dict(self) -> dict[str, Any]:
        """Persistent pixels and optimiser states, for checkpoints."""
        return {api_id: {"logits": b.logits.detach(), "optimizer": b.optimizer.state_dict()}
                for api_id, b in self.banks.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.banks = {}
        for api_id, s in state.items():
            bank = _Bank(s["logits"].detach().clone(), self.p.lr)
            bank.optimizer.load_state_dict(s["optimizer"])
            self.banks[str(api_id)] = bank
