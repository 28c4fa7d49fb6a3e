"""MAML (Finn et al. 2017) with fast weights through torch.func.functional_call."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dfml_bench.data import Task
from dfml_bench.interfaces import MetaLearner, Params, TaskOutcome
from dfml_plugins.meta_learners.maml import MamlParams


class MAML(MetaLearner):
    """Inner SGD on cross-entropy; outer cross-entropy on the query set.

    Second order by default (the inner gradients keep their graph); `first_order=True`
    treats the inner gradients as constants (FOMAML).
    """

    def __init__(self, params: MamlParams):
        self.p = params

    def adapt(self, model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
              *, create_graph: bool) -> Params:
        fast = dict(params)
        for _ in range(self.p.inner_steps):
            loss = F.cross_entropy(functional_call(model, fast, (x,)), y)
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=create_graph)
            fast = {k: v - self.p.inner_lr * g for (k, v), g in zip(fast.items(), grads)}
        return fast

    def task_outcome(self, model: nn.Module, params: Params, task: Task) -> TaskOutcome:
        fast = self.adapt(model, params, task.support_x, task.support_y, create_graph=not self.p.first_order)
        logits = functional_call(model, fast, (task.query_x,))
        loss = F.cross_entropy(logits, task.query_y)
        acc = 100.0 * (logits.argmax(1) == task.query_y).float().mean().item()
        return TaskOutcome(loss, acc)
