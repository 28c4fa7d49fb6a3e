"""The `kd` (bi-level KD) meta-learner: parameters and registration (light: no torch import).
Implementation: `learner.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param


@dataclass
class KDParams:
    inner_steps: int = param(10, "SGD steps of KD on the recovered support set (docs/protocol.md section 8)", min=0)
    inner_lr: float = param(0.01, "inner-loop step size", min=0, exclusive_min=True)
    first_order: bool = param(False, "drop second-order terms of the inner loop")
    temperature: float = param(1.0, "softmax temperature of both teacher and student", min=0, exclusive_min=True)


@hookimpl
def register_meta_learners(register: Any) -> None:
    register("kd", "dfml_plugins.meta_learners.kd.learner:BilevelKD", params=KDParams,
             help="bi-level KD: inner KD on the support set (API outputs cached), outer KD on the query set")
