"""Test-time adaptation and the evaluation protocol (PROTOCOL.md section 9).

Every method is evaluated the same way: the meta model is fine-tuned with plain SGD on
each episode's support set (first order: no graph is kept, see defect 10 of the
reference) and scored on the query set. Accuracy in %, 95% CI = 1.96 * s / sqrt(n) with
the sample standard deviation s.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dfml_bench.data import EpisodeSampler, Task
from dfml_bench.interfaces import Params


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% normal CI, 1.96 * sample std / sqrt(n) (0 for n < 2)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci95 needs at least one value")
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, 1.96 * math.sqrt(var) / math.sqrt(n)


@dataclasses.dataclass
class EvalResult:
    """Accuracy (%) over episodes with its 95% CI."""

    accuracy: float
    ci95: float
    episodes: int

    def as_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "ci95": self.ci95, "episodes": self.episodes}


def finetune(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, steps: int,
             lr: float) -> Params:
    """`steps` SGD steps on (x, y) from `params`; returns new detached fast weights."""
    fast = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    for _ in range(steps):
        loss = F.cross_entropy(functional_call(model, fast, (x,)), y)
        grads = torch.autograd.grad(loss, list(fast.values()))
        fast = {k: (v - lr * g).detach().requires_grad_(True) for (k, v), g in zip(fast.items(), grads)}
    return {k: v.detach() for k, v in fast.items()}


def episode_accuracy(model: nn.Module, params: Params, task: Task, steps: int, lr: float) -> float:
    """Fine-tune on the support set, return query accuracy in %."""
    fast = finetune(model, params, task.support_x, task.support_y, steps, lr)
    with torch.no_grad():
        pred = functional_call(model, fast, (task.query_x,)).argmax(dim=1)
    return 100.0 * (pred == task.query_y).float().mean().item()


def evaluate(model: nn.Module, sampler: EpisodeSampler, episodes: int, steps: int, lr: float,
             on_episode: Callable[[], None] | None = None) -> EvalResult:
    """Evaluate the model's current parameters on `episodes` episodes of `sampler`."""
    model.train()  # BatchNorm uses the current batch's statistics (PROTOCOL.md section 3)
    params = {k: v.detach() for k, v in model.named_parameters()}
    accs = []
    for i in range(episodes):
        accs.append(episode_accuracy(model, params, sampler.episode(i), steps, lr))
        if on_episode is not None:
            on_episode()
    mean, ci = mean_ci95(accs)
    return EvalResult(mean, ci, episodes)
