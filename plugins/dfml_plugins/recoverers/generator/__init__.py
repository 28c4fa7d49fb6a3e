"""The `generator` and `noise` data recoverers: parameters and registration (light: no torch
import). Implementation: `recoverer.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param


@dataclass
class GeneratorRecovererParams:
    iterations: int = param(200, "generator optimisation steps per recovered set (docs/protocol.md section 5)", min=1)
    lr: float = param(1e-3, "Adam learning rate of the generator and latents (betas 0.5, 0.999)",
                      min=0, exclusive_min=True)
    z_dim: int = param(256, "latent size", min=1)
    width: int = param(128, "generator channels (docs/protocol.md: 128); its cost grows with width^2", min=1)
    pad: int = param(4, "random-crop padding of the per-sample augmentation, px", min=0)
    flip: bool = param(True, "random horizontal flips in the augmentation")
    tv: float = param(0.0, "weight of a total-variation image prior added to every sample's loss (0: docs/protocol.md's "
                      "loss); computed on the generator's side, so it costs no queries", min=0)
    boundary_weight: float = param(1.0, "weight of the boundary term when a student is given (section 7)", min=0)


@dataclass
class NoiseRecovererParams:
    pass


@hookimpl
def register_recoverers(register: Any) -> None:
    register("generator", "dfml_plugins.recoverers.generator.recoverer:GeneratorRecoverer",
             params=GeneratorRecovererParams,
             help="generator inversion with per-sample augmentation, keeps the lowest true-loss batch")
    register("noise", "dfml_plugins.recoverers.generator.recoverer:NoiseRecoverer", params=NoiseRecovererParams,
             help="uniform noise labelled by the API (a floor)")
