"""Profiles, config files, --set overrides, validation and the resolved per-run config.

Layering, later wins: profile YAML < --config FILE < --method/--scenario/... selections <
--set key=value < other CLI flags (--shots, --seeds, --device, ...).
A component section names the selected component and its parameters, either flat::

    meta_learner: {name: maml, inner_steps: 5}

or per component (so one file can tune several methods)::

    method: {name: random, maml_oracle: {}, bidf_mkd: {...}}

`--set meta_learner.inner_steps=3` sets a parameter of the selected component;
`--set method.maml_oracle.x=1` one of a named component.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dfml_bench import __version__
from dfml_bench.errors import ConfigError, did_you_mean, shown
from dfml_bench.params import as_dict, build_params, component_fields, describe, param
from dfml_bench.selection import parse_selection

PROFILES = ("smoke", "quick", "long", "paper")
DEFAULT_PROFILE = "quick"

# Sections that select a component of a registry kind.
COMPONENT_SECTIONS: dict[str, str] = {
    "method": "method",
    "scenario": "scenario",
    "architecture": "architecture",
    "meta_learner": "meta_learner",
    "launcher": "launcher",
    "estimator": "estimator",
    "recoverer": "recoverer",
    "replay": "replay",
    "evaluation_rule": "evaluation_rule",  # parameters only: the rule itself is the method's (its registration)
}
ALIASES = {"meta": "meta_learner", "model": "architecture", "arch": "architecture"}
MAX_VALUES = 100_000  # values in a config once YAML aliases are expanded
MAX_DEPTH = 32        # nesting of a config's mappings and lists
READS = ("data", "pool")  # what a method may read; its run key holds only those parts
COUNT_MAX = 10**7     # iterations, episodes, steps: a count above this would run for days


def _non_empty(values: Sequence[Any]) -> str | None:
    return "must list at least one value" if not values else None


def _finite(value: float) -> str | None:
    return "must be a finite number (null for unlimited)" if not math.isfinite(value) else None


@dataclasses.dataclass
class TrainSettings:
    """Meta-training settings shared by all methods (the `train` section)."""

    meta_iterations: int = param(1000, "meta-iterations (each averages `meta_batch_size` task losses)", min=0,
                                 max=COUNT_MAX)
    meta_batch_size: int = param(4, "tasks per meta-iteration; their losses are averaged", min=1, max=10_000)
    meta_lr: float = param(1e-3, "Adam learning rate of the meta model", min=0, max=1e3, exclusive_min=True)
    val_every: int = param(250, "validate on meta-val every this many meta-iterations", min=1, max=COUNT_MAX)
    val_episodes: int = param(100, "episodes per validation (the best validation picks the model)", min=1,
                              max=COUNT_MAX)
    log_every: int = param(25, "write a metrics record every this many meta-iterations", min=1, max=COUNT_MAX)
    early_stop: int = param(0, "stop after this many validations without a new best meta-val accuracy "
                            "(0: off; meta_iterations is then a cap)", min=0, max=COUNT_MAX)


@dataclasses.dataclass
class EvalSettings:
    """Test-time adaptation and evaluation protocol (docs/protocol.md section 9)."""

    episodes: int = param(600, "meta-test episodes per dataset", min=1, max=COUNT_MAX)
    steps: int = param(10, "SGD fine-tuning steps on the support set", min=0, max=COUNT_MAX)
    lr: float = param(0.01, "fine-tuning step size", min=0, max=1e3, exclusive_min=True)
    seed: int = param(0, "episode seed: the same episodes for every method and run", min=0, max=2**63 - 1)


@dataclasses.dataclass
class TopLevel:
    """Top-level scalar settings."""

    device: str = param("auto", "auto | cpu | cuda | cuda:N | mps")
    ways: int = param(5, "classes per task (N-way)", min=2, max=10_000)
    queries: int = param(15, "query images per class in training and evaluation tasks", min=1, max=100_000)
    shots: list[int] = param([1, 5], "support images per class (K-shot); one run per value", min=1,
                             max=100_000, check=_non_empty)
    seeds: list[int] = param([0], "run seeds; one run per value", min=0, max=2**63 - 1, check=_non_empty)
    data_root: str | None = param(None, "directory holding prepared real datasets")
    cache_dir: str | None = param(None, "cache for rendered data (default: ~/.cache/dfml-bench)")
    loggers: list[str] = param([], "run loggers to attach (see `dfml-bench list`)")
    budget: float | None = param(None, "API query budget in images per run (None: unlimited)", min=0,
                                 max=1e15, check=_finite)
    pool_dir: str | None = param(None, "where API pools are cached (default: $DFML_BENCH_POOL_DIR, else "
                                 "<cache>/pools)")
    workers: int = param(2, "worker processes for building API pools", min=1, max=1024)
    profile: str = param(DEFAULT_PROFILE, "name of the profile this config started from")
    instance: str = param("dev", "data instance of every dataset of the scenario that has instances (glyphs): dev "
                          "(develop and tune on it) or sealed (tables only); see docs/tuning.md")


SECTIONS: dict[str, type] = {"train": TrainSettings, "eval": EvalSettings}
TOP_KEYS = {f.name for f in dataclasses.fields(TopLevel)}
ALL_KEYS = TOP_KEYS | set(SECTIONS) | set(COMPONENT_SECTIONS)


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with a one-sentence error on a missing or malformed file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file '{path}' ({exc.strerror}); check the path.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{path}' is not UTF-8 text; save it as UTF-8.") from None
    data = safe_yaml(text, f"config file '{path}'")
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of settings, not a {type(data).__name__}.")
    return data


def safe_yaml(text: str, what: str) -> Any:
    """Parse YAML with the safe loader: a tag like !!python/object, a syntax error or a value too
    large or deep once its aliases are expanded is a one-sentence ConfigError naming `what`."""
    try:
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        tag = str(exc.problem or "").partition("tag ")[2].strip().strip("'\"")[:80] or "?"
        raise ConfigError(f"{what} uses the YAML tag '{tag}'{where}, which is not allowed; write plain "
                          "values (strings, numbers, lists, mappings).") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{what} is not valid YAML{where}; fix its syntax.") from None
    except RecursionError:
        raise ConfigError(f"{what} is nested more than {MAX_DEPTH} levels deep; flatten it.") from None
    check_size(data, what)
    return {} if data is None else data


def check_size(data: Any, what: str) -> None:
    """Refuse a value with more than MAX_VALUES values once shared (aliased) parts are counted
    each time they appear, or nested deeper than MAX_DEPTH: bounded work, whatever the input."""
    stack, count = [(data, 0)], 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(f"{what} holds more than {MAX_VALUES:,} values once its YAML aliases are expanded; "
                              "remove the aliases (*name) that repeat large parts.")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{what} is nested more than {MAX_DEPTH} levels deep; flatten it.")
        if isinstance(value, Mapping):
            stack.extend((v, depth + 1) for kv in value.items() for v in kv)
        elif isinstance(value, (list, tuple, set)):
            stack.extend((v, depth + 1) for v in value)


def load_profile(name_or_path: str, _chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """A shipped profile by name (smoke, quick, long, paper) or a YAML file path. A profile with
    `base: NAME` (a shipped profile or a file, relative to this one) is that profile with its own
    settings layered over it."""
    if name_or_path in PROFILES:
        text = resources.files("dfml_bench.profiles").joinpath(f"{name_or_path}.yaml").read_text()
        data, name, here = yaml.safe_load(text) or {}, name_or_path, None
    else:
        path = Path(name_or_path)
        if not (path.suffix in (".yaml", ".yml") or path.exists()):
            raise ConfigError(f"unknown profile '{name_or_path}'." + did_you_mean(name_or_path, PROFILES)
                              + " A profile is one of those names or a YAML file.")
        data, name, here = load_yaml(path), path.stem, path.parent
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str) or not base:
            raise ConfigError(f"profile '{name}': `base` must name a profile (e.g. base: quick), not {shown(base)}.")
        if here is not None and base not in PROFILES and not Path(base).is_absolute():
            base = str(here / base)
        if base in _chain or len(_chain) > 8:
            raise ConfigError(f"profile '{name}': its `base` chain loops ({' -> '.join((*_chain, base))}); "
                              "remove one `base`.")
        data = deep_merge({k: v for k, v in load_profile(base, (*_chain, name_or_path)).items() if k != "profile"},
                          data)
    data["profile"] = name if here is None else data.get("profile", name)
    return data


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge `over` into a copy of `base`."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_set(item: str) -> dict[str, Any]:
    """'a.b.c=value' -> {'a': {'b': {'c': value}}}, the value parsed as YAML."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects key=value (e.g. train.meta_iterations=100), got {shown(item)}.")
    try:
        value = safe_yaml(raw, f"--set {shown(key, 80)}") if raw.strip() else ""
    except ConfigError as exc:
        if "not valid YAML" not in str(exc):
            raise
        value = raw  # not YAML: the plain string
    parts = key.split(".")
    parts[0] = ALIASES.get(parts[0], parts[0])
    if parts[0] not in ALL_KEYS:
        where = f"--set {shown(key, 60)}" if len(parts) > 1 else "--set"
        raise ConfigError(f"{where}: unknown setting {shown(parts[0], 60)}."
                          + did_you_mean(parts[0], ALL_KEYS))
    if len(parts) > MAX_DEPTH:
        raise ConfigError(f"--set {shown(key, 80)} is nested more than {MAX_DEPTH} levels deep.")
    return nest(parts, value)


def nest(parts: Sequence[str], value: Any) -> dict[str, Any]:
    """['a', 'b', 'c'], v -> {'a': {'b': {'c': v}}}."""
    out: dict[str, Any] = {}
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def normalise_sections(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Apply aliases, turn `method: name` into `method: {name: name}`, reject unknown keys."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        key = ALIASES.get(key, key)
        if key not in ALL_KEYS:
            raise ConfigError(f"unknown setting {shown(key, 60)}." + did_you_mean(str(key), ALL_KEYS))
        if key in COMPONENT_SECTIONS and isinstance(value, str):
            value = {"name": value}
        elif key in COMPONENT_SECTIONS and isinstance(value, (list, tuple)) and value \
                and all(isinstance(v, str) and v.strip() for v in value):
            value = {"name": ",".join(v.strip() for v in value)}  # a grid of names
        elif key in COMPONENT_SECTIONS and value is not None and not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' must be a component name or a mapping with a 'name', not {shown(value)}.")
        out[key] = value
    return out


def scenario_file(path: Path) -> tuple[str, dict[str, Any]]:
    """A user scenario in YAML -> ('custom', its parameters); its `name` (default: the file name) becomes
    the `label` that tables, run directories and progress lines show."""
    data = load_yaml(path)
    data.setdefault("label", str(data.pop("name", path.stem)))
    return "custom", data


def canonicalise(raw: dict[str, Any]) -> dict[str, Any]:
    """Move flat parameters of each component section into the selected component's block.

    Done after every layer is merged, so a later layer's flat `inner_steps` beats an earlier
    layer's `maml: {inner_steps: ...}` and vice versa, by order alone. A mapping-valued key is
    a per-component block; anything else is a parameter.
    """
    for kind in COMPONENT_SECTIONS:
        section = raw.get(kind)
        if not isinstance(section, Mapping):
            continue
        name = section.get("name")
        if not isinstance(name, str) or "," in name:
            continue  # a grid of names: flat parameters apply to each
        flat = {k: v for k, v in section.items() if k != "name" and not isinstance(v, Mapping)}
        if flat:
            block = dict(section.get(name) or {})
            block.update(flat)
            raw[kind] = {k: v for k, v in section.items() if k not in flat}
            raw[kind][name] = block
    return raw


def build_raw_config(profile: str = DEFAULT_PROFILE, config_file: str | Path | None = None,
                     sets: Sequence[str] = (), flags: Mapping[str, Any] | None = None,
                     tuned: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Layer profile, tuned overlay (a `tune` winner), config file, --set items and CLI flags into
    one raw config."""
    raw = canonicalise(normalise_sections(load_profile(profile)))
    if tuned is not None:
        raw = canonicalise(deep_merge(raw, normalise_sections(tuned)))
    if config_file is not None:
        raw = canonicalise(deep_merge(raw, normalise_sections(load_yaml(Path(config_file)))))
    # Component selections from the CLI come before --set, so `--method m --set method.x=1`
    # sets a parameter of m; other flags (shots, seeds, device, ...) win over everything.
    for key, value in (flags or {}).items():
        if value is not None and key in COMPONENT_SECTIONS:
            section = dict(raw.get(key) or {})
            if key == "scenario" and str(value).endswith((".yaml", ".yml")):
                value, block = scenario_file(Path(value))
                section[value] = block
            section["name"] = value
            raw[key] = section
    for item in sets:
        raw = canonicalise(deep_merge(raw, normalise_sections(parse_set(item))))
    for key, value in (flags or {}).items():
        if value is not None and key not in COMPONENT_SECTIONS:
            raw[key] = value
    return raw


def top_level(raw: Mapping[str, Any]) -> TopLevel:
    """The validated top-level settings of a raw config."""
    return build_params(TopLevel, {k: v for k, v in raw.items() if k in TOP_KEYS}, "config")


def component_params(raw: Mapping[str, Any], kind: str, registry: Any,
                     name: str | None = None) -> tuple[str, Any]:
    """Validate a component section: return (selected name, params instance)."""
    section = raw.get(kind) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"'{kind}' must be a component name or a mapping with a 'name'.")
    name = name or section.get("name")
    if not name:
        raise ConfigError(f"no {kind.replace('_', ' ')} selected; set '{kind}.name' or pass --{kind.replace('_', '-')}.")
    names = set(registry.names(COMPONENT_SECTIONS[kind]))
    name, inline = parse_selection(str(name))  # name[key=value,...]: settings for this use only
    comp = registry.get(COMPONENT_SECTIONS[kind], name)
    flat: dict[str, Any] = {}
    for key, value in section.items():
        if key == "name" or key == comp.name:
            continue
        if key in names:  # parameters of another component of this kind: validate, don't use
            if not isinstance(value, Mapping):
                raise ConfigError(f"'{kind}.{key}' must be a mapping of {key}'s parameters.")
            build_params(registry.get(COMPONENT_SECTIONS[kind], key).params, value, f"{kind}.{key}")
            continue
        flat[key] = value
    named = section.get(comp.name) or {}
    if not isinstance(named, Mapping):
        raise ConfigError(f"'{kind}.{comp.name}' must be a mapping of {comp.name}'s parameters.")
    values = {**_inherited(section, kind, registry, comp), **named, **flat, **inline}
    params = build_params(comp.params, values, f"{kind} '{comp.name}'")
    if kind == "scenario":
        params = apply_instance(comp.name, params, str(raw.get("instance") or "dev"), registry)
    return comp.name, params


def apply_instance(scenario: str, params: Any, instance: str, registry: Any) -> Any:
    """Scenario params whose datasets all select `instance`; `dev` leaves them as they are.

    The instance enters each dataset's selection (``glyphs[domain=letters,instance=sealed]``),
    so it is part of the resolved config (the run id) and dev runs keep their ids.
    """
    if instance == "dev":
        return params
    from dfml_bench.selection import parse_selection

    datasets = getattr(params, "datasets", None)
    if not isinstance(datasets, list):
        raise ConfigError(f"scenario '{scenario}' lists no datasets, so instance '{instance}' cannot apply; "
                          "leave instance at dev.")
    out = []
    for spec in datasets:
        name, values = parse_selection(str(spec))
        comp = registry.get("dataset", name)
        if "instance" not in {p.name for p in describe(comp.params)}:
            raise ConfigError(f"dataset '{comp.name}' has one fixed split and no instances, so instance "
                              f"'{instance}' cannot apply; leave instance at dev for scenarios of real datasets.")
        if values.get("instance", instance) != instance:
            raise ConfigError(f"dataset '{spec}' selects instance '{values['instance']}' but instance "
                              f"'{instance}' was set; drop one of them.")
        values["instance"] = instance
        build_params(comp.params, values, f"dataset '{comp.name}'")
        items = ",".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items())
        out.append(f"{name}[{items}]")
    return dataclasses.replace(params, datasets=out)


def _inherited(section: Mapping[str, Any], kind: str, registry: Any, comp: Any, depth: int = 0) -> dict[str, Any]:
    """What a variant takes from its base's configuration (a component registered with
    ``base=NAME``): the base's configured values, itself following its own base, for every
    setting whose default the variant does not change."""
    base_name = comp.meta.get("base")
    if not base_name or depth > 8:
        return {}
    base = registry.get(COMPONENT_SECTIONS[kind], base_name)
    configured = {**_inherited(section, kind, registry, base, depth + 1), **(section.get(base.name) or {})}
    mine = {p.name: p.default for p in describe(comp.params)}
    theirs = {p.name: p.default for p in describe(base.params)}
    return {k: v for k, v in configured.items() if k in mine and k in theirs and mine[k] == theirs[k]}


def resolve_runs(raw: Mapping[str, Any], registry: Any) -> list[dict[str, Any]]:
    """Expand a raw config into fully resolved per-run configs (method x scenario x shot x seed).

    `raw["method"]["name"]` / `raw["scenario"]["name"]` may be comma lists to form a grid.
    """
    check_size(raw, "the configuration")
    top = top_level(raw)  # bounds of every setting are checked by its param(min=, max=)
    for name, cls in SECTIONS.items():
        if raw.get(name) is not None and not isinstance(raw.get(name), Mapping):
            raise ConfigError(f"'{name}' must be a mapping of settings.")
    per_method = _per_method(raw.get("train") or {}, registry)
    sections = {name: as_dict(build_params(cls, {k: v for k, v in (raw.get(name) or {}).items()
                                                 if name != "train" or k not in per_method}, name))
                for name, cls in SECTIONS.items()}
    methods = selected_names(raw, "method")
    scenarios = selected_names(raw, "scenario")
    for logger in top.loggers:
        registry.get("logger", logger)
    runs = []
    fingerprints: dict[str, dict[str, str]] = {}
    for method in methods:
        m_name, m_params = component_params(raw, "method", registry, method)
        comp = registry.get("method", m_name)
        uses = tuple(comp.meta.get("uses", ("architecture", "meta_learner")))
        reads = method_reads(comp)
        for scenario in scenarios:
            s_name, s_params = component_params(raw, "scenario", registry, scenario)
            if s_name not in fingerprints:
                fingerprints[s_name] = data_fingerprints(s_params, registry, top.data_root)
            base: dict[str, Any] = {
                "version": __version__,
                "profile": top.profile,
                "method": {"name": m_name, "params": as_dict(m_params)},
                "scenario": {"name": s_name, "params": as_dict(s_params)},
            }
            for kind in ("architecture", "meta_learner"):
                if kind in uses:
                    k_name, k_params = component_params(raw, kind, registry)
                    base[kind] = {"name": k_name, "params": as_dict(k_params)}
            named: dict[str, dict[str, Any]] = {}
            for kind, name in component_fields(m_params):
                _, c_params = component_params(raw, kind, registry, name)
                named.setdefault(kind, {})[name] = as_dict(c_params)
            if named:
                base["components"] = named
            base.update(ways=top.ways, queries=top.queries, train=_train_of(m_name, sections["train"], per_method),
                        eval=sections["eval"],
                        budget=None if top.budget is None else int(top.budget))
            if fingerprints[s_name]:  # real data under --data-root: which files (embedded data has none)
                base["data"] = fingerprints[s_name]
            if reads != READS:  # a method that never opens the pool: runs shared across scenarios
                base["reads"] = list(reads)
            rule, rule_params = _evaluation_rule(raw, comp, registry)
            if rule != "finetune":  # in the run key, so a rule's records never stand in for another's
                base["eval"] = {**base["eval"], "rule": rule}
            if rule_params is not None:  # a rule with settings: they enter the key (none of the built-ins has any)
                base["eval"] = {**base["eval"], "rule_params": rule_params}
            for shots in top.shots:
                for seed in top.seeds:
                    run = copy.deepcopy(base)
                    run.update(shots=shots, seed=seed)
                    runs.append(run)
    return runs


def _per_method(train: Mapping[str, Any], registry: Any) -> dict[str, Mapping[str, Any]]:
    """The `train` section's per-method blocks (`train: {maml_oracle: {meta_iterations: 2000}}`):
    mapping-valued keys that are not train settings, each naming a registered method."""
    fields = {f.name for f in dataclasses.fields(TrainSettings)}
    blocks = {k: v for k, v in train.items() if isinstance(v, Mapping) and k not in fields}
    for name in blocks:
        if name not in registry.names("method"):
            raise ConfigError(f"train.{name} is neither a train setting nor a method; a mapping in 'train' sets "
                              "one method's train settings (e.g. train.maml_oracle.meta_iterations)."
                              + did_you_mean(name, set(registry.names("method")) | fields))
        build_params(TrainSettings, blocks[name], f"train.{name}")
    return blocks


def _train_of(method: str, shared: Mapping[str, Any], per_method: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A method's train settings: the shared ones under its own block. `early_stop` is recorded
    only when on, so runs without it keep the run ids they had before the setting existed."""
    train = dict(shared)
    if method in per_method:
        train = as_dict(build_params(TrainSettings, {**shared, **per_method[method]}, f"train.{method}"))
    if not train.get("early_stop"):
        train.pop("early_stop", None)
    return train


def selected_names(raw: Mapping[str, Any], kind: str) -> list[str]:
    """The names a component section selects (a comma list or YAML list forms a grid)."""
    section = raw.get(kind) or {}
    value = section.get("name") if isinstance(section, Mapping) else section
    if not value:
        raise ConfigError(f"no {kind} selected; pass --{kind} NAME.")
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def with_current_defaults(config: Mapping[str, Any], registry: Any) -> dict[str, Any]:
    """A stored run config with every parameter it lacks set to the installed default: a
    component option added after the run (off by default, so the run behaved as with its
    default) then compares equal to newer runs that left it at the default, and a newer run
    that set it is told apart. Components that are no longer installed are left as they are."""
    out = copy.deepcopy(dict(config))

    def fill(params: Any, kind: str, name: Any) -> None:
        if not isinstance(params, dict) or not isinstance(name, str):
            return
        try:
            comp = registry.get(kind, parse_selection(name)[0])
        except ConfigError:
            return
        for info in describe(comp.params):
            params.setdefault(info.name, info.default)

    for section in ("method", "scenario", "architecture", "meta_learner"):
        entry = out.get(section)
        if isinstance(entry, dict):
            fill(entry.get("params"), COMPONENT_SECTIONS[section], entry.get("name"))
    components = out.get("components")
    for kind, named in (components.items() if isinstance(components, dict) else ()):
        for name, params in (named.items() if isinstance(named, dict) and kind in COMPONENT_SECTIONS else ()):
            fill(params, COMPONENT_SECTIONS[kind], name)
    return out


def _evaluation_rule(raw: Mapping[str, Any], method: Any, registry: Any) -> tuple[str, dict[str, Any] | None]:
    """The method's evaluation rule (its registration's `evaluation`, default finetune) and the rule's
    configured parameters from the `evaluation_rule` section (None for a rule without parameters)."""
    rule = str(method.meta.get("evaluation", "finetune"))
    comp = registry.get("evaluation_rule", rule)  # an unknown rule fails here, before any run starts
    section = raw.get("evaluation_rule") or {}
    chosen = section.get("name") if isinstance(section, Mapping) else None
    if chosen is not None and parse_selection(str(chosen))[0] != rule:
        raise ConfigError(f"method '{method.name}' is evaluated by the rule '{rule}' (its registration), not "
                          f"'{chosen}'; the 'evaluation_rule' section only sets rule parameters, e.g. "
                          f"--set evaluation_rule.{rule}.KEY=VALUE.")
    selected = {**section, "name": str(chosen or rule)} if isinstance(section, Mapping) else section
    _, params = component_params({"evaluation_rule": selected}, "evaluation_rule", registry)
    return rule, (as_dict(params) if comp.params is not None else None)


def method_reads(comp: Any) -> tuple[str, ...]:
    """What a method's registration says it reads (`reads=`): "data", "pool"; default both."""
    reads = comp.meta.get("reads", READS)
    reads = (reads,) if isinstance(reads, str) else tuple(reads)
    if not reads or any(r not in READS for r in reads):
        raise ConfigError(f"method '{comp.name}' declares reads={shown(reads, 60)}; use a tuple of "
                          f"{', '.join(repr(r) for r in READS)} (or leave it out: it reads both).")
    return tuple(r for r in READS if r in reads)


def data_fingerprints(s_params: Any, registry: Any, data_root: str | None) -> dict[str, str]:
    """Per dataset of a scenario whose registration declares a `fingerprint` function: an identity
    of the files it reads under --data-root (so other data never reuses a finished run)."""
    from dfml_bench.selection import parse_selection

    out: dict[str, str] = {}
    for spec in getattr(s_params, "datasets", None) or ():
        name, values = parse_selection(str(spec))
        comp = registry.get("dataset", name)
        ref = comp.meta.get("fingerprint")
        if ref is None:
            continue
        if isinstance(ref, str):
            module, _, attr = ref.partition(":")
            ref = getattr(importlib.import_module(module), attr)
        fingerprint = ref(build_params(comp.params, values, f"dataset '{name}'"), data_root)
        if fingerprint is not None:
            out[str(spec)] = str(fingerprint)
    return out


@dataclasses.dataclass(frozen=True)
class ComponentSpec:
    """A selected component of a run: its name (a selection, e.g. ``conv4[width=32]``) and params."""

    name: str
    params: Mapping[str, Any]


@dataclasses.dataclass(frozen=True, eq=False)
class RunSpec:
    """The typed view of one resolved run config, built once by :meth:`from_resolved`.

    ``resolved`` stays the source of truth: it is what is hashed (:func:`run_id`) and written to
    ``config.yaml``; the other fields only read it.
    """

    resolved: Mapping[str, Any]
    run_id: str
    method: ComponentSpec
    scenario: ComponentSpec
    architecture: ComponentSpec | None
    meta_learner: ComponentSpec | None
    components: Mapping[str, Mapping[str, Mapping[str, Any]]]  # kind -> selection -> params
    ways: int
    shots: int
    queries: int
    seed: int
    train: TrainSettings
    eval: EvalSettings
    eval_rule: str | None         # the evaluation rule recorded in the run key, None: the method's own
    eval_rule_params: Mapping[str, Any] | None  # its configured parameters, None: a rule without any
    budget: int | None
    reads: tuple[str, ...]        # what of the scenario the method reads ("data", "pool")
    val_only: bool                # a tuning trial: meta-test is never read
    profile: str | None

    @classmethod
    def from_resolved(cls, resolved: Mapping[str, Any]) -> RunSpec:
        def component(key: str) -> ComponentSpec | None:
            entry = resolved.get(key)
            return None if entry is None else ComponentSpec(str(entry["name"]), entry.get("params") or {})

        ev = dict(resolved["eval"])
        rule, rule_params = ev.pop("rule", None), ev.pop("rule_params", None)
        return cls(resolved=resolved, run_id=run_id(resolved), method=component("method"),  # type: ignore[arg-type]
                   scenario=component("scenario"), architecture=component("architecture"),  # type: ignore[arg-type]
                   meta_learner=component("meta_learner"), components=resolved.get("components") or {},
                   ways=int(resolved["ways"]), shots=int(resolved["shots"]), queries=int(resolved["queries"]),
                   seed=int(resolved["seed"]), train=TrainSettings(**resolved["train"]), eval=EvalSettings(**ev),
                   eval_rule=None if rule is None else str(rule), eval_rule_params=rule_params,
                   budget=resolved.get("budget"),
                   reads=tuple(resolved.get("reads", READS)), val_only=bool(resolved.get("val_only")),
                   profile=resolved.get("profile"))

    @property
    def reads_pool(self) -> bool:
        """Whether the method may open the API pool (else its run id leaves the pool's settings out)."""
        return "pool" in self.reads

    @property
    def label(self) -> str:
        """The run directory's readable prefix (:func:`run_label`)."""
        return run_label(self.resolved)

    @property
    def scenario_label(self) -> str:
        """The scenario as tables show it (:func:`scenario_label`)."""
        return scenario_label(self.resolved)


def run_key(resolved: Mapping[str, Any]) -> Mapping[str, Any]:
    """What a run's result depends on: the resolved config, less the scenario's pool settings (its
    name, APIs, budget) for a method that reads only the data (`reads` without "pool")."""
    reads = resolved.get("reads")
    if reads is None or "pool" in reads:
        return resolved
    key = {k: v for k, v in resolved.items() if k not in ("scenario", "budget")}
    key["scenario"] = {"datasets": (resolved.get("scenario") or {}).get("params", {}).get("datasets")}
    return key


def run_id(resolved: Mapping[str, Any]) -> str:
    """Content hash of a run's key (:func:`run_key`, stable key order), 16 hex characters."""
    blob = json.dumps(run_key(resolved), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def scenario_label(resolved: Mapping[str, Any]) -> str:
    """The scenario's name as tables show it (its `label` parameter, else its registered name)."""
    scenario = resolved.get("scenario") or {}
    return str((scenario.get("params") or {}).get("label") or scenario.get("name"))


def run_label(resolved: Mapping[str, Any]) -> str:
    """Readable prefix for a run directory: method-scenario-Kshot-sSEED (the scenario as tables
    show it, so a YAML scenario keeps its `name`; characters unsafe in a file name become _)."""
    scenario = re.sub(r"[^A-Za-z0-9_.+=-]", "_", scenario_label(resolved))[:64]
    return f"{resolved['method']['name']}-{scenario}-{resolved['shots']}shot-s{resolved['seed']}"
