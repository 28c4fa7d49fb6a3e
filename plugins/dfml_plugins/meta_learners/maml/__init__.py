"""The `maml` meta-learner: parameters and registration (light: no torch import). Implementation: `learner.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param


@dataclass
class MamlParams:
    inner_steps: int = param(5, "SGD steps on the support set per task", min=0)
    inner_lr: float = param(0.01, "inner-loop step size", min=0, exclusive_min=True)
    first_order: bool = param(False, "drop second-order terms (FOMAML)")


@hookimpl
def register_meta_learners(register: Any) -> None:
    register("maml", "dfml_plugins.meta_learners.maml.learner:MAML", params=MamlParams,
             help="MAML with cross-entropy; second order unless first_order=true")
