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


LETTERS = "glyphs[domain=letters]"
ALL_GLYPHS = ["glyphs[domain=letters]", "glyphs[domain=symbols]", "glyphs[domain=scripts]"]
ALL_ARCHS = ["conv4", "resnet10", "resnet18"]


@dataclass
class ScenarioParams:
    """A pool of APIs: datasets x API architectures x apis_per_cell (PROTOCOL.md sections 1-2)."""

    datasets: list[str] = param([LETTERS], "datasets, each name[key=value,...]; class ids are made global")
    architectures: list[str] = param(["conv4"], "API architectures, each name[key=value,...]")
    apis_per_cell: int = param(100, "APIs per (dataset, architecture) cell")
    classes_per_api: int = param(5, "classes each API was trained on (K-way APIs)")
    output: str = param("logits", "what an API returns", choices=("logits", "probs", "label"))
    access: str = param("white", "the most access offered: black (query only) or white (weights too, for "
                        "methods registered as white-box); black-box methods always get query-only handles",
                        choices=("black", "white"))
    pool_seed: int = param(0, "seed of the class draws and API training (same seed, same pool)")
    api_epochs: int = param(60, "training epochs of each API (the best held-out epoch is kept)")
    api_batch_size: int = param(128, "API training batch size")
    api_lr: float = param(0.01, "API learning rate (Adam for conv4, SGD+momentum otherwise)")
    api_optimizer: str = param("auto", "auto | adam | sgd", choices=("auto", "adam", "sgd"))
    label: str = param("", "name shown in tables (default: the scenario's own name)")


@dataclass
class SSParams(ScenarioParams):
    pass


@dataclass
class SHParams(ScenarioParams):
    architectures: list[str] = param(list(ALL_ARCHS), "API architectures, each name[key=value,...]")


@dataclass
class MHParams(ScenarioParams):
    datasets: list[str] = param(list(ALL_GLYPHS), "datasets mixed in the pool; evaluation on each, headline = mean")
    architectures: list[str] = param(list(ALL_ARCHS), "API architectures, each name[key=value,...]")


@dataclass
class CustomScenarioParams(ScenarioParams):
    pass


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


@dataclass
class ResNetParams:
    width: int = param(64, "channels of the first stage (stages use w, 2w, 4w, 8w); paper: 64")


@dataclass
class ZOParams:
    q: int = param(100, "random directions per image (PROTOCOL.md section 6)")
    mu: float = param(0.005, "smoothing radius of the finite difference")
    memory_mb: int = param(256, "memory budget of one API call's input batch; sets the chunk size")


@dataclass
class WhiteBoxEstimatorParams:
    pass
