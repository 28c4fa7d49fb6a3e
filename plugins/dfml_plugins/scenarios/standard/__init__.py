"""The SS / SH / MH scenarios (docs/protocol.md section 1) and `custom`: parameters and
registration (light: no torch import). Implementation: `scenario.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param

LETTERS = "glyphs[domain=letters]"
ALL_GLYPHS = ["glyphs[domain=letters]", "glyphs[domain=symbols]", "glyphs[domain=scripts]"]
ALL_ARCHS = ["conv4", "resnet10", "resnet18"]


def _pool_check(value: dict) -> str | None:
    if value and not (isinstance(value.get("kind"), str) and value["kind"]):
        return "needs a 'kind' naming a pool plugin (e.g. kind: http)"
    return None


@dataclass
class ScenarioParams:
    """A pool of APIs: datasets x API architectures x apis_per_cell (docs/protocol.md sections 1-2)."""

    datasets: list[str] = param([LETTERS], "datasets, each name[key=value,...]; class ids are made global")
    architectures: list[str] = param(["conv4"], "API architectures, each name[key=value,...]")
    apis_per_cell: int = param(100, "APIs per (dataset, architecture) cell", min=1)
    classes_per_api: int = param(5, "classes each API was trained on (K-way APIs)", min=2)
    output: str = param("logits", "what an API returns", choices=("logits", "probs", "label"))
    access: str = param("white", "the most access offered: black (query only) or white (weights too, for "
                        "methods registered as white-box); black-box methods always get query-only handles",
                        choices=("black", "white"))
    pool_seed: int = param(0, "seed of the class draws and API training (same seed, same pool)", min=0)
    api_epochs: int = param(60, "training epochs of each API (the best held-out epoch is kept)", min=1)
    api_batch_size: int = param(128, "API training batch size", min=1)
    api_lr: float = param(0.01, "API learning rate (Adam for conv4, SGD+momentum otherwise)", min=0,
                          exclusive_min=True)
    api_optimizer: str = param("auto", "auto | adam | sgd", choices=("auto", "adam", "sgd"))
    api_shift: int = param(0, "random translation (px) of API training images; 0 = none, as docs/protocol.md")
    label: str = param("", "name shown in tables (default: the scenario's own name)")
    pool: dict = param({}, "a pool served elsewhere instead of a built one: {kind: http, url: ..., ...} "
                       "(`dfml-bench list pool`); the pool parameters above are then unused", check=_pool_check)


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


@hookimpl
def register_scenarios(register: Any) -> None:
    for name, params, text in (
            ("SS", SSParams, "one dataset, one API architecture"),
            ("SH", SHParams, "one dataset, API architectures mixed (conv4, resnet10, resnet18)"),
            ("MH", MHParams, "several datasets (global class ids) x mixed architectures"),
            ("custom", CustomScenarioParams, "any datasets x architectures; `--scenario my.yaml` uses it")):
        register(name, f"dfml_plugins.scenarios.standard.scenario:build_{name.lower()}", params=params, help=text)
