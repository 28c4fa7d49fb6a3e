"""SS / SH / MH scenarios (docs/protocol.md section 1) and `custom` for scenarios written in YAML."""

from __future__ import annotations

from typing import Any

from dfml_bench.errors import ConfigError
from dfml_bench.interfaces import ScenarioContext, ScenarioData
from dfml_bench.params import build_params
from dfml_bench.pool import PoolSource, PoolSpec, TrainRecipe
from dfml_bench.selection import parse_selection


def _datasets(specs: list[str], ctx: ScenarioContext) -> tuple[list[Any], str]:
    """The scenario's datasets and their instance (a dataset without instances: "standard")."""
    if not specs:
        raise ConfigError("a scenario needs at least one dataset.")
    chosen = []
    for spec in specs:
        name, values = parse_selection(spec)
        comp = ctx.registry.get("dataset", name)
        chosen.append((comp, build_params(comp.params, values, f"dataset '{name}'")))
    instances = [str(getattr(params, "instance", "standard")) for _, params in chosen]
    if {"dev", "sealed"} <= set(instances):
        raise ConfigError(f"the scenario mixes the dev and sealed instances ({specs}); give every dataset the same "
                          "instance (--instance sets them all).")
    out = [comp.build(params, ctx.data_root, ctx.cache_dir) for comp, params in chosen]
    names = [d.name for d in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"the scenario lists the same dataset twice: {names}.")
    return out, "+".join(dict.fromkeys(instances))


def _scenario(name: str, params: Any, ctx: ScenarioContext) -> ScenarioData:
    if not params.architectures:
        raise ConfigError(f"scenario {name} needs at least one API architecture.")
    for sel in params.architectures:
        ctx.registry.get("architecture", parse_selection(sel)[0])
    if params.api_shift < 0:
        raise ConfigError(f"scenario {name}: api_shift must be >= 0 (pixels); got {params.api_shift}.")
    if params.apis_per_cell < 1 or params.classes_per_api < 2:
        raise ConfigError("apis_per_cell must be >= 1 and classes_per_api >= 2.")
    recipe = TrainRecipe(epochs=params.api_epochs, batch_size=params.api_batch_size, lr=params.api_lr,
                         optimizer=params.api_optimizer, shift=params.api_shift)
    spec: PoolSpec | PoolSource = PoolSpec(tuple(params.architectures), params.apis_per_cell,
                                           params.classes_per_api, params.pool_seed, recipe)
    if params.pool:
        spec = _pool_source(name, params.pool, ctx)
    datasets, instance = _datasets(params.datasets, ctx)
    return ScenarioData(params.label or name, datasets, pool_spec=spec, access=params.access,
                        output=params.output, instance=instance)


def _pool_source(name: str, pool: dict[str, Any], ctx: ScenarioContext) -> PoolSource:
    """`pool: {kind: K, ...}`: a pool served elsewhere, opened by the `pool` plugin K."""
    values = dict(pool)
    comp = ctx.registry.get("pool", str(values.pop("kind")))
    return PoolSource(comp.name, build_params(comp.params, values, f"scenario {name}.pool '{comp.name}'"))


def _need_datasets(name: str, params: Any) -> None:
    if not params.datasets:
        raise ConfigError(f"scenario {name} lists no dataset in scenario.datasets; name at least one "
                          "(e.g. glyphs[domain=letters]).")


def build_ss(params: Any, ctx: ScenarioContext) -> ScenarioData:
    _need_datasets("SS", params)
    if len(params.datasets) != 1 or len(params.architectures) != 1:
        raise ConfigError("scenario SS has one dataset and one API architecture; use SH or MH to mix.")
    return _scenario("SS", params, ctx)


def build_sh(params: Any, ctx: ScenarioContext) -> ScenarioData:
    _need_datasets("SH", params)
    if len(params.datasets) != 1:
        raise ConfigError("scenario SH has one dataset; use MH to mix datasets.")
    return _scenario("SH", params, ctx)


def build_mh(params: Any, ctx: ScenarioContext) -> ScenarioData:
    return _scenario("MH", params, ctx)


def build_custom(params: Any, ctx: ScenarioContext) -> ScenarioData:
    return _scenario("custom", params, ctx)
