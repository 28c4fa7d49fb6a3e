"""Prototypical networks (Snell et al. 2017) on the meta model's features.

Class prototypes are the (soft) means of the support features; a query's logits are its
negative squared Euclidean distances to them. Labels may be class indices [N] or teacher
probabilities [N, K] (distillation tasks): probabilities weight each support feature, and the
distances serve as the student's logits in KD, so ProtoNet drops into BiDf-MKD's API tasks.

`adapt` returns fast weights whose classifier head IS the prototype classifier:
-||f - c_k||^2 = 2 c_k.f - ||c_k||^2 - ||f||^2, so head weight 2c_k and bias -||c_k||^2 give the
negative distances up to the per-row constant -||f||^2, which softmax, cross-entropy, KD and
argmax ignore (the Proto-MAML head of Triantafillou et al. 2020). Any method that adapts and
then calls the model therefore classifies by prototypes; `inner_steps > 0` fine-tunes from there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dfml_bench.data import Task
from dfml_bench.interfaces import MetaLearner, Params, TaskOutcome
from dfml_plugins.meta_learners.kd.learner import kd_loss
from dfml_plugins.meta_learners.protonet import ProtoNetParams
from dfml_plugins.models.head import features, head_name


def prototypes(feats: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class means [K, F] of `feats` [N, F]; `y` is class indices [N] or soft weights [N, K]."""
    w = F.one_hot(y, num_classes).to(feats.dtype) if y.dim() == 1 else y.to(feats.dtype)
    return (w.t() @ feats) / w.sum(0).clamp_min(1e-8).unsqueeze(1)


def distance_logits(feats: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Negative squared Euclidean distances [N, K] (written out: twice differentiable)."""
    return -((feats.unsqueeze(1) - protos.unsqueeze(0)) ** 2).sum(-1)


def _loss_and_accuracy(logits: torch.Tensor, task: Task) -> TaskOutcome:
    if task.query_t is not None:
        acc = 100.0 * (logits.argmax(1) == task.query_t.argmax(1)).float().mean().item()
        return TaskOutcome(kd_loss(logits, task.query_t), acc)
    acc = 100.0 * (logits.argmax(1) == task.query_y).float().mean().item()
    return TaskOutcome(F.cross_entropy(logits, task.query_y), acc)


class ProtoNet(MetaLearner):
    """Prototype classifier; the outer loss is CE on the query labels, or KD on teacher probabilities."""

    def __init__(self, params: ProtoNetParams):
        self.p = params

    def adapt(self, model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
              *, create_graph: bool) -> Params:
        name = head_name(model)
        k = params[f"{name}.weight"].shape[0]
        if y.dim() == 2 and y.shape[1] != k:
            raise ValueError(f"teacher probabilities over {y.shape[1]} classes do not fit a {k}-way head")
        protos = prototypes(features(model, params, x), y, k)
        fast = dict(params)
        fast[f"{name}.weight"] = 2 * protos
        fast[f"{name}.bias"] = -(protos ** 2).sum(1)
        graph = create_graph and not self.p.first_order
        for _ in range(self.p.inner_steps):
            logits = functional_call(model, fast, (x,))
            loss = F.cross_entropy(logits, y) if y.dim() == 1 else kd_loss(logits, y)
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=graph)
            fast = {key: v - self.p.inner_lr * g for (key, v), g in zip(fast.items(), grads)}
        return fast

    def logits(self, model: nn.Module, params: Params, task: Task) -> torch.Tensor:
        """Query logits: exact negative squared distances to the support prototypes (no inner steps),
        otherwise the fine-tuned prototype head's outputs."""
        y = task.support_t if task.support_t is not None else task.support_y
        if self.p.inner_steps > 0:
            fast = self.adapt(model, params, task.support_x, y, create_graph=not self.p.first_order)
            return functional_call(model, fast, (task.query_x,))
        k = params[f"{head_name(model)}.weight"].shape[0]
        protos = prototypes(features(model, params, task.support_x), y, k)
        return distance_logits(features(model, params, task.query_x), protos)

    def task_outcome(self, model: nn.Module, params: Params, task: Task) -> TaskOutcome:
        return _loss_and_accuracy(self.logits(model, params, task), task)
