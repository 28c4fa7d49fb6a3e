"""The `hello` method: imported only when a run builds it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from dfml_bench.interfaces import Method, MethodContext


class HelloMethod(Method):
    """Sets every classifier-head parameter (the last Linear layer) to `head_init`; trains nothing."""

    trains = False

    def __init__(self, params: Any, context: MethodContext):
        super().__init__(params, context)
        heads = [m for m in context.model.modules() if isinstance(m, torch.nn.Linear)]
        if heads:
            with torch.no_grad():
                heads[-1].weight.fill_(params.head_init)
                heads[-1].bias.fill_(params.head_init)

    def train_step(self, iteration: int) -> Mapping[str, float]:
        raise RuntimeError("hello has no training step")
