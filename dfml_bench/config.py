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
import json
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dfml_bench import __version__
from dfml_bench.errors import ConfigError, did_you_mean
from dfml_bench.params import as_dict, build_params, component_fields, describe, param

PROFILES = ("smoke", "quick", "paper")
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
}
ALIASES = {"meta": "meta_learner", "model": "architecture", "arch": "architecture"}


def _non_empty(values: Sequence[Any]) -> str | None:
    return "must list at least one value" if not values else None


def _finite(value: float) -> str | None:
    return "must be a finite number (null for unlimited)" if not math.isfinite(value) else None


@dataclasses.dataclass
class TrainSettings:
    """Meta-training settings shared by all methods (the `train` section)."""

    meta_iterations: int = param(1000, "meta-iterations (each averages `meta_batch_size` task losses)", min=0)
    meta_batch_size: int = param(4, "tasks per meta-iteration; their losses are averaged", min=1)
    meta_lr: float = param(1e-3, "Adam learning rate of the meta model", min=0, exclusive_min=True)
    val_every: int = param(250, "validate on meta-val every this many meta-iterations", min=1)
    val_episodes: int = param(100, "episodes per validation (the best validation picks the model)", min=1)
    log_every: int = param(25, "write a metrics record every this many meta-iterations", min=1)


@dataclasses.dataclass
class EvalSettings:
    """Test-time adaptation and evaluation protocol (docs/protocol.md section 9)."""

    episodes: int = param(600, "meta-test episodes per dataset", min=1)
    steps: int = param(10, "SGD fine-tuning steps on the support set", min=0)
    lr: float = param(0.01, "fine-tuning step size", min=0, exclusive_min=True)
    seed: int = param(0, "episode seed: the same episodes for every method and run", min=0)


@dataclasses.dataclass
class TopLevel:
    """Top-level scalar settings."""

    device: str = param("auto", "auto | cpu | cuda | cuda:N | mps")
    ways: int = param(5, "classes per task (N-way)", min=2)
    queries: int = param(15, "query images per class in training and evaluation tasks", min=1)
    shots: list[int] = param([1, 5], "support images per class (K-shot); one run per value", min=1,
                             check=_non_empty)
    seeds: list[int] = param([0], "run seeds; one run per value", min=0, check=_non_empty)
    data_root: str | None = param(None, "directory holding prepared real datasets")
    cache_dir: str | None = param(None, "cache for rendered data (default: ~/.cache/dfml-bench)")
    loggers: list[str] = param([], "run loggers to attach (see `dfml-bench list`)")
    budget: float | None = param(None, "API query budget in images per run (None: unlimited)", min=0,
                                 check=_finite)
    pool_dir: str | None = param(None, "where API pools are cached (default: <cache>/pools)")
    workers: int = param(2, "worker processes for building API pools", min=1)
    profile: str = param(DEFAULT_PROFILE, "name of the profile this config started from")


SECTIONS: dict[str, type] = {"train": TrainSettings, "eval": EvalSettings}
TOP_KEYS = {f.name for f in dataclasses.fields(TopLevel)}
ALL_KEYS = TOP_KEYS | set(SECTIONS) | set(COMPONENT_SECTIONS)


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with a one-sentence error on a missing or malformed file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file '{path}' ({exc.strerror}); check the path.") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{where}; fix its syntax.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of settings, not a {type(data).__name__}.")
    return data


def load_profile(name_or_path: str) -> dict[str, Any]:
    """A shipped profile by name (smoke, quick, paper) or a YAML file path."""
    if name_or_path in PROFILES:
        text = resources.files("dfml_bench.profiles").joinpath(f"{name_or_path}.yaml").read_text()
        data = yaml.safe_load(text) or {}
        data["profile"] = name_or_path
        return data
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        data = load_yaml(path)
        data.setdefault("profile", path.stem)
        return data
    raise ConfigError(f"unknown profile '{name_or_path}'." + did_you_mean(name_or_path, PROFILES)
                      + " A profile is one of those names or a YAML file.")


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
        raise ConfigError(f"--set expects key=value (e.g. train.meta_iterations=100), got '{item}'.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.split(".")
    parts[0] = ALIASES.get(parts[0], parts[0])
    if parts[0] not in ALL_KEYS:
        raise ConfigError(f"--set {key}: unknown setting '{parts[0]}'." + did_you_mean(parts[0], ALL_KEYS))
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
            raise ConfigError(f"unknown setting '{key}'." + did_you_mean(key, ALL_KEYS))
        if key in COMPONENT_SECTIONS and isinstance(value, str):
            value = {"name": value}
        elif key in COMPONENT_SECTIONS and isinstance(value, (list, tuple)) and value \
                and all(isinstance(v, str) and v.strip() for v in value):
            value = {"name": ",".join(v.strip() for v in value)}  # a grid of names
        elif key in COMPONENT_SECTIONS and value is not None and not isinstance(value, Mapping):
            raise ConfigError(f"'{key}' must be a component name or a mapping with a 'name', not {value!r}.")
        out[key] = value
    return out


def scenario_file(path: Path) -> tuple[str, dict[str, Any]]:
    """A user scenario in YAML -> ('custom', its parameters); `name` becomes the table label."""
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
                     sets: Sequence[str] = (), flags: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Layer profile, config file, --set items and CLI flags into one raw config."""
    raw = canonicalise(normalise_sections(load_profile(profile)))
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
    comp = registry.get(COMPONENT_SECTIONS[kind], str(name))
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
    values = {**named, **flat}
    return comp.name, build_params(comp.params, values, f"{kind} '{comp.name}'")


def resolve_runs(raw: Mapping[str, Any], registry: Any) -> list[dict[str, Any]]:
    """Expand a raw config into fully resolved per-run configs (method x scenario x shot x seed).

    `raw["method"]["name"]` / `raw["scenario"]["name"]` may be comma lists to form a grid.
    """
    top = top_level(raw)
    for name, cls in SECTIONS.items():
        if raw.get(name) is not None and not isinstance(raw.get(name), Mapping):
            raise ConfigError(f"'{name}' must be a mapping of settings.")
    sections = {name: as_dict(build_params(cls, raw.get(name) or {}, name)) for name, cls in SECTIONS.items()}
    if top.ways < 2 or top.queries < 1 or any(s < 1 for s in top.shots):
        raise ConfigError("ways must be >= 2, queries >= 1 and every shot >= 1.")
    if top.budget is not None and top.budget < 0:
        raise ConfigError("budget must be a number of images >= 0 (e.g. 2e6), or null for unlimited.")
    if sections["train"]["meta_batch_size"] < 1 or sections["train"]["meta_iterations"] < 0:
        raise ConfigError("train.meta_batch_size must be >= 1 and train.meta_iterations >= 0.")
    methods = _names(raw, "method")
    scenarios = _names(raw, "scenario")
    for logger in top.loggers:
        registry.get("logger", logger)
    runs = []
    for method in methods:
        m_name, m_params = component_params(raw, "method", registry, method)
        comp = registry.get("method", m_name)
        uses = tuple(comp.meta.get("uses", ("architecture", "meta_learner")))
        for scenario in scenarios:
            s_name, s_params = component_params(raw, "scenario", registry, scenario)
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
            base.update(ways=top.ways, queries=top.queries, train=sections["train"], eval=sections["eval"],
                        budget=None if top.budget is None else int(top.budget))
            for shots in top.shots:
                for seed in top.seeds:
                    run = copy.deepcopy(base)
                    run.update(shots=shots, seed=seed)
                    runs.append(run)
    return runs


def _names(raw: Mapping[str, Any], kind: str) -> list[str]:
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
            comp = registry.get(kind, name)
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


def run_id(resolved: Mapping[str, Any]) -> str:
    """Content hash of a resolved run config (stable key order), 16 hex characters."""
    blob = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_label(resolved: Mapping[str, Any]) -> str:
    """Readable prefix for a run directory: method-scenario-Kshot-sSEED."""
    return (f"{resolved['method']['name']}-{resolved['scenario']['name']}-"
            f"{resolved['shots']}shot-s{resolved['seed']}")
