"""The gradient estimators `zo_forward`, `zo_central` and `white_box`: parameters and registration
(light: no torch import). Implementation: `estimator.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param


@dataclass
class ZOParams:
    q: int = param(100, "random directions per image (docs/protocol.md section 6)", min=1)
    mu: float = param(0.005, "smoothing radius of the finite difference", min=0, exclusive_min=True)
    memory_mb: int = param(256, "memory budget of one API call's input batch; sets the chunk size", min=1)


@dataclass
class WhiteBoxEstimatorParams:
    pass


IMPL = "dfml_plugins.estimators.zeroth_order.estimator"


@hookimpl
def register_estimators(register: Any) -> None:
    register("zo_forward", f"{IMPL}:ZOForward", params=ZOParams,
             help="zero-order forward differences, B(q+1) queries per step (docs/protocol.md section 6)")
    register("zo_central", f"{IMPL}:ZOCentral", params=ZOParams,
             help="zero-order central differences over antithetic pairs, B(2q+1) queries per step")
    register("white_box", f"{IMPL}:WhiteBoxGradient", params=WhiteBoxEstimatorParams,
             help="true input gradients through a WhiteBoxAPI")
