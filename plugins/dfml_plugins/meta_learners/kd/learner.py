"""Bi-level meta knowledge distillation (docs/protocol.md section 8).

Inner level: SGD on KL(p_api || p_model) over the recovered support set, with the API's
outputs queried once and cached in the task (`support_t`), no labels. Outer level: the same
KD on the query set. KL uses log-probabilities of the student (the reference passed
probabilities to F.kl_div, which makes the inner loop nearly inert) and the batch mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dfml_bench.data import Task
from dfml_bench.interfaces import MetaLearner, Params, TaskOutcome
from dfml_plugins.meta_learners.kd import KDParams


def kd_loss(logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(p_teacher || p_student), batch mean."""
    if temperature != 1.0:
        teacher_probs = F.softmax(teacher_probs.clamp_min(1e-8).log() / temperature, dim=1)
    log_student = F.log_softmax(logits / temperature, dim=1)
    return F.kl_div(log_student, teacher_probs, reduction="batchmean")


class BilevelKD(MetaLearner):
    """Inner KD on the support set, outer KD on the query set; second order unless `first_order`."""

    def __init__(self, params: KDParams):
        self.p = params

    def adapt(self, model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
              *, create_graph: bool) -> Params:
        """`y` holds teacher probabilities [N, K]."""
        fast = dict(params)
        for _ in range(self.p.inner_steps):
            loss = kd_loss(functional_call(model, fast, (x,)), y, self.p.temperature)
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=create_graph)
            fast = {k: v - self.p.inner_lr * g for (k, v), g in zip(fast.items(), grads)}
        return fast

    def task_outcome(self, model: nn.Module, params: Params, task: Task) -> TaskOutcome:
        if task.support_t is None or task.query_t is None:
            raise ValueError("bi-level KD needs teacher probabilities in the task (support_t, query_t)")
        fast = self.adapt(model, params, task.support_x, task.support_t, create_graph=not self.p.first_order)
        logits = functional_call(model, fast, (task.query_x,))
        acc = 100.0 * (logits.argmax(1) == task.query_t.argmax(1)).float().mean().item()
        return TaskOutcome(kd_loss(logits, task.query_t, self.p.temperature), acc)
