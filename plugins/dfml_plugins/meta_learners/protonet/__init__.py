"""The `protonet` meta-learner: parameters and registration (light: no torch import).
Implementation: `learner.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param


@dataclass
class ProtoNetParams:
    inner_steps: int = param(0, "SGD steps from the prototype head (0: a plain ProtoNet; >0: Proto-MAML)", min=0)
    inner_lr: float = param(0.01, "step size of those steps", min=0, exclusive_min=True)
    first_order: bool = param(False, "drop second-order terms of those steps (prototypes stay exact)")


@hookimpl
def register_meta_learners(register: Any) -> None:
    register("protonet", "dfml_plugins.meta_learners.protonet.learner:ProtoNet", params=ProtoNetParams,
             help="ProtoNet: negative squared distances to support-feature means as logits (soft means and KD "
                  "with teacher probabilities)")
