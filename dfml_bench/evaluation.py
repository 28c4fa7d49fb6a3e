"""Test-time adaptation and the evaluation protocol (docs/protocol.md section 9).

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


# Student's t, 97.5 % quantile, for 1..30 degrees of freedom
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    """Student's t 97.5 % quantile: tabulated to 30 degrees of freedom, then the Cornish-Fisher
    expansion around 1.96 (within 1e-3 of the exact value)."""
    if df < 1:
        raise ValueError("t975 needs at least one degree of freedom")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def mean_ci95(values: Sequence[float], *, student_t: bool = False) -> tuple[float, float]:
    """Mean and half-width of the 95% CI, q * sample std / sqrt(n) (0 for n < 2), with q = 1.96
    (normal: the protocol's CI over hundreds of episodes) or, with `student_t`, Student's t
    quantile for n - 1 degrees of freedom (a handful of seeds: 12.71 for 2, 4.30 for 3)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci95 needs at least one value")
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, (t975(n - 1) if student_t else 1.96) * math.sqrt(var) / math.sqrt(n)


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
    model.train()  # BatchNorm uses the current batch's statistics (docs/protocol.md section 3)
    params = {k: v.detach() for k, v in model.named_parameters()}
    accs = []
    for i in range(episodes):
        accs.append(episode_accuracy(model, params, sampler.episode(i), steps, lr))
        if on_episode is not None:
            on_episode()
    mean, ci = mean_ci95(accs)
    return EvalResult(mean, ci, episodes)
