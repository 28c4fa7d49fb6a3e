"""The `resnet10` and `resnet18` architectures: parameters and registration (light: no torch
import). Implementation: `model.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param


@dataclass
class ResNetParams:
    width: int = param(64, "channels of the first stage (stages use w, 2w, 4w, 8w); paper: 64", min=1)


@hookimpl
def register_architectures(register: Any) -> None:
    register("resnet10", "dfml_plugins.models.resnet.model:build_resnet10", params=ResNetParams,
             help="ResNet-10 for small images, basic blocks [1,1,1,1] (docs/protocol.md section 3)")
    register("resnet18", "dfml_plugins.models.resnet.model:build_resnet18", params=ResNetParams,
             help="ResNet-18 for small images, basic blocks [2,2,2,2] (docs/protocol.md section 3)")
