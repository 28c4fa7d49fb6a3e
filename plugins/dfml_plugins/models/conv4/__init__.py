"""The `conv4` architecture: parameters and registration (light: no torch import). Implementation: `model.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param


@dataclass
class Conv4Params:
    width: int = param(32, "channels of every conv block", min=1)
    pool: str = param("auto", "flatten | max | auto (max when input sizes are mixed)",
                      choices=("auto", "flatten", "max"))


@hookimpl
def register_architectures(register: Any) -> None:
    register("conv4", "dfml_plugins.models.conv4.model:build_conv4", params=Conv4Params,
             help="4 x [conv3x3-BN-ReLU-maxpool] + linear (docs/protocol.md section 3)")
