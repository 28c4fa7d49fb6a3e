"""SS / SH / MH scenarios. For now they select datasets; API pools arrive with the pool issue."""

from __future__ import annotations

from typing import Any

from dfml_bench.errors import ConfigError
from dfml_bench.interfaces import ScenarioContext, ScenarioData
from dfml_bench.params import build_params
from dfml_bench.selection import parse_selection


def _datasets(specs: list[str], ctx: ScenarioContext) -> list[Any]:
    if not specs:
        raise ConfigError("a scenario needs at least one dataset.")
    out = []
    for spec in specs:
        name, values = parse_selection(spec)
        comp = ctx.registry.get("dataset", name)
        params = build_params(comp.params, values, f"dataset '{name}'")
        out.append(comp.load()(params, ctx.data_root, ctx.cache_dir))
    names = [d.name for d in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"scenario lists the same dataset twice: {names}.")
    return out


def _single(name: str, params: Any, ctx: ScenarioContext) -> ScenarioData:
    if len(params.datasets) != 1:
        raise ConfigError(f"scenario {name} uses exactly one dataset, got {len(params.datasets)}; use MH for several.")
    return ScenarioData(name, _datasets(params.datasets, ctx))


def build_ss(params: Any, ctx: ScenarioContext) -> ScenarioData:
    return _single("SS", params, ctx)


def build_sh(params: Any, ctx: ScenarioContext) -> ScenarioData:
    return _single("SH", params, ctx)


def build_mh(params: Any, ctx: ScenarioContext) -> ScenarioData:
    return ScenarioData("MH", _datasets(params.datasets, ctx))
