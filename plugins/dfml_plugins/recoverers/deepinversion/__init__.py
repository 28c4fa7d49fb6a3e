"""The `deepinversion` data recoverer: parameters and registration (light: no torch import).
Implementation: `recoverer.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param


@dataclass
class DeepInversionParams:
    iterations: int = param(1, "inversion steps per recover call (PURER: one per task, on the drawn API's images)", min=1)
    persistent: bool = param(True, "keep each API's pixels and optimiser across calls (PURER); false: fresh "
                             "pixels per call")
    lr: float = param(0.05, "Adam learning rate of the pixel logits (images = sigmoid(logits))", min=0,
                      exclusive_min=True)
    tv: float = param(1e-4, "weight of the total-variation prior (docs/protocol.md section 10)", min=0)
    bn: float = param(0.01, "weight of BatchNorm-statistics matching (skipped for APIs without BatchNorm)", min=0)
    l2: float = param(1e-5, "weight of the L2 prior", min=0)
    jitter: int = param(2, "random per-sample translation, +- px", min=0)
    flip: bool = param(True, "random horizontal flips")
    student_weight: float = param(1.0, "weight of the adversarial term against a student (the curriculum)", min=0)


@hookimpl
def register_recoverers(register: Any) -> None:
    register("deepinversion", "dfml_plugins.recoverers.deepinversion.recoverer:DeepInversionRecoverer",
             params=DeepInversionParams,
             help="white-box DeepInversion: learnable pixels, CE + TV + BatchNorm statistics + L2, jitter; "
                  "persistent per API (PURER)")
