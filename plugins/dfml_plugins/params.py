"""Declared parameters of the built-in components (light: no torch import)."""

from __future__ import annotations

from dataclasses import dataclass

from dfml_bench import param

GLYPH_DOMAINS = ("letters", "symbols", "scripts")


@dataclass
class GlyphsParams:
    domain: str = param("letters", "which glyph domain", choices=GLYPH_DOMAINS)
    instances_per_class: int = param(60, "rendered instances (fonts x jitter) per character")
    image_size: int | None = param(None, "render size in px (default: the domain's native size)")
    seed: int = param(0, "rendering and class-split seed (fixed across runs)")


@dataclass
class Conv4Params:
    width: int = param(32, "channels of every conv block")
    pool: str = param("auto", "flatten | max | auto (max when input sizes are mixed)",
                      choices=("auto", "flatten", "max"))


@dataclass
class MamlParams:
    inner_steps: int = param(5, "SGD steps on the support set per task")
    inner_lr: float = param(0.01, "inner-loop step size")
    first_order: bool = param(False, "drop second-order terms (FOMAML)")


@dataclass
class SSParams:
    datasets: list[str] = param(["glyphs[domain=letters]"], "the one dataset, name[key=value,...]")


@dataclass
class SHParams:
    datasets: list[str] = param(["glyphs[domain=letters]"], "the one dataset, name[key=value,...]")


@dataclass
class MHParams:
    datasets: list[str] = param(["glyphs[domain=letters]", "glyphs[domain=symbols]", "glyphs[domain=scripts]"],
                                "the datasets mixed in the pool; evaluation on each, headline = mean")


@dataclass
class CifarFSParams:
    image_size: int = param(32, "input size in px (paper: 32)")
    max_per_class: int | None = param(None, "keep at most this many images per class (None: all)")


@dataclass
class MiniImageNetParams:
    image_size: int = param(84, "input size in px (paper: 84)")
    max_per_class: int | None = param(None, "keep at most this many images per class (None: all 600)")


@dataclass
class CUBParams:
    image_size: int = param(84, "input size in px (paper: 84); images are squashed to square")
    max_per_class: int | None = param(None, "keep at most this many images per class (None: all)")
