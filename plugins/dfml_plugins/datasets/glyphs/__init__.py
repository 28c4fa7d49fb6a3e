"""The `glyphs` dataset: parameters and registration (light: no torch import). Implementation:
`dataset.py`, on the renderer in `render.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param

GLYPH_DOMAINS = ("letters", "symbols", "scripts")


@dataclass
class GlyphsParams:
    domain: str = param("letters", "which glyph domain", choices=GLYPH_DOMAINS)
    instances_per_class: int = param(60, "rendered instances (fonts x jitter) per character", min=1)
    image_size: int | None = param(None, "render size in px (default: the domain's native size)", min=8)
    seed: int = param(0, "rendering and class-split seed (fixed across runs)", min=0, max=999_999)
    instance: str = param("dev", "dev: the rendering and class split to develop and tune on; sealed: another "
                          "rendering and class split (seed + 1000000), for published tables only (see docs/tuning.md)",
                          choices=("dev", "sealed"))


@hookimpl
def register_datasets(register: Any) -> None:
    register("glyphs", "dfml_plugins.datasets.glyphs.dataset:build_glyphs", params=GlyphsParams,
             help="embedded characters rendered from matplotlib's fonts; three domains")
