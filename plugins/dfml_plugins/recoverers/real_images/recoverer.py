"""Real meta-train images of an API's classes as its "recovered" set: the transfer probe's ceiling.

The API is queried once on the images, as for any recovered set, so a method distils the API's
outputs on them exactly as it would on inverted images; `labels` are the images' true classes
(in the API's output order) and `agreement` is the API's accuracy on them. A boundary student is
ignored: real images do not move.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from dfml_bench.data import ClassImages
from dfml_bench.errors import ConfigError
from dfml_bench.interfaces import DataRecoverer, GradientEstimator, RecoveredSet
from dfml_plugins.recoverers.real_images import RealImagesRecovererParams


class RealImagesRecoverer(DataRecoverer):
    needs_real_images = True

    def __init__(self, params: RealImagesRecovererParams | None = None):
        self.params = params
        self.images: ClassImages | None = None

    def use_real_images(self, images: ClassImages) -> None:
        self.images = images

    def recover(self, api: object, estimator: GradientEstimator | None, per_class: int, image_size: int,
                generator: torch.Generator,
                student: Callable[[torch.Tensor], torch.Tensor] | None = None) -> RecoveredSet:
        if self.images is None:
            raise ConfigError("the real_images recoverer was given no real images; use it in a method "
                              "registered with access='real_data' (e.g. bidf_mkd_real).")
        classes = api.classes  # type: ignore[attr-defined]
        device = generator.device
        x = torch.cat([self.images.sample(c, per_class, generator) for c in classes]).to(device).float().div_(255)
        if x.shape[-1] != image_size:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
        labels = torch.arange(len(classes), device=device).repeat_interleave(per_class)
        with torch.no_grad():
            scores = api.query(x)  # type: ignore[attr-defined]
        out = RecoveredSet(x, labels, float("nan"), 0.0, scores)
        out.agreement = 100.0 * out.agreed().float().mean().item()  # the API's accuracy on its classes
        return out
