"""The `prototype` evaluation rule: nearest class mean of the meta model's features.

Queries are classified by the negative squared Euclidean distance of their features (the input
of the classifier head) to the support features' class means, as the ProtoNet meta-learner
does when it trains; the head itself is never used, so a metric-trained model is scored by the
rule it learned with.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dfml_bench.data import Task
from dfml_bench.interfaces import EvaluationRule, Params
from dfml_plugins.meta_learners.protonet.learner import distance_logits, prototypes
from dfml_plugins.models.head import features


class PrototypeRule(EvaluationRule):
    """Nearest support prototype in the model's feature space; `steps` and `lr` are not used."""

    def __init__(self, params: Any = None) -> None:
        del params

    def predict(self, model: nn.Module, params: Params, task: Task, *, steps: int, lr: float) -> torch.Tensor:
        with torch.no_grad():
            ways = int(task.support_y.max().item()) + 1
            protos = prototypes(features(model, params, task.support_x), task.support_y, ways)
            return distance_logits(features(model, params, task.query_x), protos).argmax(dim=1)
