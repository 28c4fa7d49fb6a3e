"""`average`: the parameter mean of all APIs as the meta model (white-box; same architecture only)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from dfml_bench.errors import ConfigError
from dfml_bench.interfaces import Method, MethodContext


class AverageAPIs(Method):
    """Averages every API's parameters into the meta model, then only adapts at test time.

    Needs all APIs to share the meta model's architecture; mixed pools (SH, MH) are refused.
    BatchNorm running statistics of the APIs are dropped: the meta model normalises with
    batch statistics.
    """

    trains = False

    def __init__(self, params: Any, context: MethodContext):
        super().__init__(params, context)
        spec = context.scenario.pool_spec
        archs = {a.split("[")[0] for a in spec.architectures} if spec is not None else set()
        if len(archs) > 1:  # refuse before any pool is built
            raise ConfigError(f"method 'average' needs APIs of one architecture, but scenario "
                              f"'{context.scenario.name}' mixes {sorted(archs)}; use it on SS.")
        apis = context.apis()
        target = context.model.state_dict()
        total: dict[str, torch.Tensor] = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in target.items()}
        for i in range(len(apis)):
            state = apis.get(i).module.state_dict()
            for k in target:
                if k not in state or state[k].shape != target[k].shape:
                    got = tuple(state[k].shape) if k in state else "missing"
                    raise ConfigError(f"method 'average': API parameter '{k}' has shape {got} but the meta "
                                      f"model's is {tuple(target[k].shape)}; set the architecture (and its "
                                      "width) to the APIs' own.")
                total[k] += state[k].double().to(total[k].device)
        context.model.load_state_dict({k: (v / len(apis)).to(target[k].dtype) for k, v in total.items()})

    def train_step(self, iteration: int) -> Mapping[str, float]:
        raise RuntimeError("average has no training step")
