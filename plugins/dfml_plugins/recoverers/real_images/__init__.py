"""The `real_images` recoverer, a transfer probe: real meta-train images of the API's classes
instead of inverted ones (light: no torch import). Implementation: `recoverer.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl


@dataclass
class RealImagesRecovererParams:
    pass


@hookimpl
def register_recoverers(register: Any) -> None:
    register("real_images", "dfml_plugins.recoverers.real_images.recoverer:RealImagesRecoverer",
             params=RealImagesRecovererParams,
             help="probe (needs a real-data method): real meta-train images of the API's classes, labelled by "
                  "the API; the ceiling of any recovery")
