"""Test-time adaptation and the evaluation protocol (docs/protocol.md section 9).

Each episode is scored by the method's evaluation rule (an ``evaluation_rule`` component):
``finetune``, the default, fine-tunes the meta model with plain SGD on the support set (first
order: no graph is kept) and scores the query set; ``prototype`` classifies queries by the
nearest support class mean of the model's features. Every rule sees the same episodes.
Accuracy in %, 95% CI = 1.96 * s / sqrt(n) with the sample standard deviation s; the accuracy
of every episode is kept, so two runs can be compared episode by episode.

On CPU the episode's tensors and the model's 4-d weights are put in channels-last layout,
which makes convolutions faster (benchmarks/README.md); results equal those of the default
layout up to float rounding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dfml_bench.data import EpisodeSampler, Task
from dfml_bench.interfaces import EvaluationRule, Params
from dfml_bench.stats import mean_ci95, t975

__all__ = ["EvalResult", "FinetuneRule", "episode_accuracy", "evaluate", "finetune", "mean_ci95", "t975"]


@dataclasses.dataclass
class EvalResult:
    """Accuracy (%) over episodes with its 95% CI, and each episode's accuracy."""

    accuracy: float
    ci95: float
    episodes: int
    episode_accuracies: list[float] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        """The summary (without the per-episode list)."""
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


class FinetuneRule(EvaluationRule):
    """Fine-tune the whole model with cross-entropy on the support set (`steps` SGD steps of
    size `lr`), then predict the query set's argmax."""

    def __init__(self, params: Any = None) -> None:
        del params  # no parameters: the eval section's steps and lr drive it

    def predict(self, model: nn.Module, params: Params, task: Task, *, steps: int, lr: float) -> torch.Tensor:
        fast = finetune(model, params, task.support_x, task.support_y, steps, lr)
        with torch.no_grad():
            return functional_call(model, fast, (task.query_x,)).argmax(dim=1)


def episode_accuracy(model: nn.Module, params: Params, task: Task, steps: int, lr: float,
                     rule: EvaluationRule | None = None) -> float:
    """Query accuracy in % of one episode under `rule` (default: fine-tuning)."""
    pred = (rule or FinetuneRule()).predict(model, params, task, steps=steps, lr=lr)
    return 100.0 * (pred == task.query_y).float().mean().item()


def _cl(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def channels_last(params: Params) -> Params:
    """The weights with every 4-d tensor (convolution kernels) in channels-last layout."""
    return {k: _cl(v) for k, v in params.items()}


def channels_last_task(task: Task) -> Task:
    """The episode with its images in channels-last layout."""
    return dataclasses.replace(task, support_x=_cl(task.support_x), query_x=_cl(task.query_x))


def evaluate(model: nn.Module, sampler: EpisodeSampler, episodes: int, steps: int, lr: float,
             on_episode: Callable[[], None] | None = None, rule: EvaluationRule | None = None,
             layout: str = "auto") -> EvalResult:
    """Evaluate the model's current parameters on `episodes` episodes of `sampler` under `rule`
    (default: fine-tuning). `layout`: "channels_last", "contiguous", or "auto" (channels-last
    on CPU, where it is faster, the default layout elsewhere)."""
    model.train()  # BatchNorm uses the current batch's statistics (docs/protocol.md section 3)
    rule = rule or FinetuneRule()
    params = {k: v.detach() for k, v in model.named_parameters()}
    device = next(iter(params.values())).device if params else torch.device("cpu")
    use_cl = layout == "channels_last" or (layout == "auto" and device.type == "cpu")
    if use_cl:
        params = channels_last(params)
    accs = []
    for i in range(episodes):
        task = sampler.episode(i)
        accs.append(episode_accuracy(model, params, channels_last_task(task) if use_cl else task, steps, lr, rule))
        if on_episode is not None:
            on_episode()
    mean, ci = mean_ci95(accs)
    return EvalResult(mean, ci, episodes, accs)
