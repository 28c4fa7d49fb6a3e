"""The classifier head of a model (its last nn.Linear) and the features that feed it.

Metric meta-learners (ProtoNet) and multi-teacher distillation work on the meta model's
features rather than its logits; every built-in architecture ends in one nn.Linear.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from dfml_bench.interfaces import Params


def head_name(model: nn.Module) -> str:
    """Module name of the model's last nn.Linear (its classifier head)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier head; feature-based "
                         "meta-learners need one as the last layer.")
    return names[-1]


def head(model: nn.Module) -> nn.Linear:
    """The model's classifier head module."""
    return model.get_submodule(head_name(model))  # type: ignore[return-value]


def features(model: nn.Module, params: Params, x: torch.Tensor) -> torch.Tensor:
    """The input of the classifier head for `x` under the weights `params` (differentiable)."""
    captured: list[torch.Tensor] = []
    handle = head(model).register_forward_pre_hook(lambda _m, inp: captured.append(inp[0]))
    try:
        functional_call(model, params, (x,))
    finally:
        handle.remove()
    return captured[-1]
