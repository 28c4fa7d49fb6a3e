"""Plugin discovery and the component registry.

Every plugin, built-in or third-party, is a module exposed through the ``dfml_bench``
entry-point group. Each entry point is loaded on its own: one that fails to import, or
that implements a hook which does not exist (a typo), is reported by name with the reason
and skipped, unless strict mode (``DFML_BENCH_STRICT_PLUGINS=1`` or ``--strict-plugins``)
makes that fatal (every broken plugin is then listed in one error).

Environment variables:
  DFML_BENCH_PLUGINS           comma list: load only these entry points (by name)
  DFML_BENCH_DISABLE_PLUGINS   comma list: skip these entry points
  DFML_BENCH_STRICT_PLUGINS    1/true: a broken plugin is a fatal error
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from dfml_bench import hookspecs
from dfml_bench.errors import ConfigError, PluginError, did_you_mean, shown

ENTRY_POINT_GROUP = "dfml_bench"
ENV_ALLOW = "DFML_BENCH_PLUGINS"
ENV_DENY = "DFML_BENCH_DISABLE_PLUGINS"
ENV_STRICT = "DFML_BENCH_STRICT_PLUGINS"

KINDS: tuple[str, ...] = tuple(hookspecs.COMPONENT_HOOKS)

# The class ("module:Class") a factory of each kind must return an instance of; checked when built.
INTERFACES: dict[str, str] = {
    "dataset": "dfml_bench.data:FewShotDataset",
    "architecture": "torch.nn:Module",
    "method": "dfml_bench.interfaces:Method",
    "meta_learner": "dfml_bench.interfaces:MetaLearner",
    "scenario": "dfml_bench.interfaces:ScenarioData",
    "launcher": "dfml_bench.interfaces:Launcher",
    "logger": "dfml_bench.interfaces:RunLogger",
    "estimator": "dfml_bench.interfaces:GradientEstimator",
    "recoverer": "dfml_bench.interfaces:DataRecoverer",
    "replay": "dfml_bench.interfaces:ReplayStrategy",
    "evaluation_rule": "dfml_bench.interfaces:EvaluationRule",
}
# A pool has no base class: it must answer these, like dfml_bench.pool.APIPool.
POOL_METHODS: tuple[str, ...] = ("__len__", "info", "api", "close")


@dataclasses.dataclass(frozen=True)
class Component:
    """A registered component: light metadata plus a lazily imported factory."""

    kind: str
    name: str
    factory: str | Callable[..., Any]
    params: type | None
    help: str
    plugin: str
    meta: Mapping[str, Any]

    def load(self) -> Callable[..., Any]:
        """Import and return the factory (this is where heavy modules get imported)."""
        if callable(self.factory):
            return self.factory
        module_name, _, attr = self.factory.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"{self.kind} '{self.name}' from plugin '{self.plugin}' cannot be "
                              f"loaded ({exc}); reinstall or fix that plugin.") from exc
        return obj

    def build(self, *args: Any, **kwargs: Any) -> Any:
        """Call the factory and check that it returned its kind's interface (:func:`check_built`)."""
        return check_built(self, self.load()(*args, **kwargs))


def check_built(comp: Component, obj: Any) -> Any:
    """Return `obj` if it implements `comp`'s kind, else raise one PluginError sentence naming
    the plugin, the component and the type its factory must return."""
    if comp.kind == "pool":
        missing = [m for m in POOL_METHODS if not callable(getattr(obj, m, None))]
        expected = "pool answering len(), info(), api() and close() like dfml_bench.pool.APIPool"
        ok = not missing
    elif comp.kind in INTERFACES:
        module_name, _, attr = INTERFACES[comp.kind].partition(":")
        ok = isinstance(obj, getattr(importlib.import_module(module_name), attr))
        expected = f"{module_name}.{attr}"
    else:
        return obj
    if ok:
        return obj
    cls = type(obj)
    got = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    where = f" ({comp.factory})" if isinstance(comp.factory, str) else ""
    raise PluginError(f"plugin '{comp.plugin}' registered {comp.kind.replace('_', ' ')} '{comp.name}' whose "
                      f"factory{where} returned {got}; it must return a {expected}.")


@dataclasses.dataclass(frozen=True)
class FailedPlugin:
    """A plugin that was skipped, and why."""

    name: str
    reason: str


class Registry:
    """All components registered by the loaded plugins, by kind and name."""

    def __init__(self, pm: pluggy.PluginManager, failed: list[FailedPlugin], strict: bool):
        self.pm = pm
        self.failed = failed
        self.strict = strict
        self._components: dict[str, dict[str, Component]] = {k: {} for k in KINDS}
        self._collect()
        if strict and failed:  # every broken plugin at once, so one fix-and-rerun round suffices
            raise PluginError(broken_plugins_message(failed))

    def _collect(self) -> None:
        for kind, hook_name in hookspecs.COMPONENT_HOOKS.items():
            caller = getattr(self.pm.hook, hook_name)
            for impl in caller.get_hookimpls():  # registration order: built-ins win ties
                register = self._register_fn(kind, impl.plugin_name)
                try:
                    impl.function(register=register)
                except PluginError as exc:
                    self._fail(impl.plugin_name, str(exc))
                except Exception as exc:  # a plugin's own bug must not take the CLI down
                    self._fail(impl.plugin_name, f"{hook_name} raised {type(exc).__name__}: {exc}")

    def _register_fn(self, kind: str, plugin: str) -> Callable[..., None]:
        def register(name: str, factory: str | Callable[..., Any], *, params: type | None = None,
                     help: str = "", **meta: Any) -> None:
            if not isinstance(name, str) or not name.isidentifier():
                raise PluginError(f"plugin '{plugin}' registered {kind} name {name!r}, "
                                  "which is not a valid identifier")
            if params is not None and not dataclasses.is_dataclass(params):
                raise PluginError(f"plugin '{plugin}' registered {kind} '{name}' whose params "
                                  "is not a dataclass")
            existing = self._components[kind].get(name)
            if existing is not None:
                raise PluginError(f"plugin '{plugin}' registered {kind} '{name}', which plugin "
                                  f"'{existing.plugin}' already provides")
            self._components[kind][name] = Component(kind, name, factory, params, help, plugin,
                                                     dict(meta))
        return register

    def _fail(self, plugin: str, reason: str) -> None:
        self.failed.append(FailedPlugin(plugin, reason))

    def names(self, kind: str) -> list[str]:
        """Sorted names of the components of one kind."""
        return sorted(self._components[kind])

    def components(self, kind: str) -> list[Component]:
        """The components of one kind, sorted by name."""
        return [self._components[kind][n] for n in self.names(kind)]

    def get(self, kind: str, name: str) -> Component:
        """Look up a component; an unknown name gets a "did you mean"."""
        if kind not in self._components:
            raise ConfigError(f"unknown component kind {shown(kind, 80)}." + did_you_mean(str(kind), KINDS))
        try:
            return self._components[kind][name]
        except KeyError:
            label = kind.replace("_", " ")
            raise ConfigError(f"unknown {label} {shown(name, 80)}." + did_you_mean(str(name), self._components[kind])
                              + " Run `dfml-bench list` to see what is installed.") from None

    def build(self, kind: str, name: str, params: Any, *args: Any, **kwargs: Any) -> Any:
        """Instantiate a component with validated params, checked against its kind's interface."""
        return self.get(kind, name).build(params, *args, **kwargs)


def broken_plugins_message(failed: list[FailedPlugin]) -> str:
    """One sentence listing every broken plugin with its reason (strict mode's error)."""
    items = [(f"'{f.name}'", f"({f.reason.rstrip('. ')})") for f in failed]
    head = (f"plugin {items[0][0]} is broken {items[0][1]}" if len(items) == 1 else
            f"{len(items)} plugins are broken: " + "; ".join(f"{n} {r}" for n, r in items))
    them = "it" if len(failed) == 1 else "them"
    return (f"{head}; fix or uninstall {them}, or load plugins without strict mode "
            f"(no --strict-plugins, {ENV_STRICT} unset).")


def _env_list(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {s.strip() for s in raw.split(",") if s.strip()}


def strict_from_env() -> bool:
    """True when DFML_BENCH_STRICT_PLUGINS asks for strict plugin loading."""
    return os.environ.get(ENV_STRICT, "").lower() in ("1", "true", "yes", "on")


def _unknown_hooks(pm: pluggy.PluginManager, plugin: Any) -> list[str]:
    """Hook implementations of `plugin` that match no hookspec (misspelled hooks)."""
    specs = {name for name in dir(hookspecs) if pm.parse_hookspec_opts(hookspecs, name) is not None}
    bad = []
    for attr in dir(plugin):
        opts = pm.parse_hookimpl_opts(plugin, attr)
        if opts is None:
            continue
        hook_name = opts.get("specname") or attr
        if hook_name not in specs:
            hint = did_you_mean(hook_name, specs).strip().rstrip(".")
            bad.append(f"'{attr}' matches no dfml-bench hook" + (f" ({hint[0].lower()}{hint[1:]})" if hint else ""))
    return bad


def load_registry(*, strict: bool | None = None, extra_plugins: Iterable[tuple[str, Any]] = (),
                  eps: Iterable[EntryPoint] | None = None) -> Registry:
    """Discover plugins through entry points (plus `extra_plugins`) and build the registry."""
    strict = strict_from_env() if strict is None else strict
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    failed: list[FailedPlugin] = []

    def fail(name: str, reason: str) -> None:  # strict mode raises once all are known (Registry)
        failed.append(FailedPlugin(name, reason))

    allow, deny = _env_list(ENV_ALLOW), _env_list(ENV_DENY) or set()
    found = list(entry_points(group=ENTRY_POINT_GROUP) if eps is None else eps)
    candidates: list[tuple[str, Callable[[], Any]]] = [
        (ep.name, ep.load) for ep in sorted(found, key=lambda e: (e.name != "builtin", e.name))
        if (allow is None or ep.name in allow) and ep.name not in deny
    ]
    candidates += [(name, (lambda m=module: m)) for name, module in extra_plugins]
    for name, loader in candidates:
        if pm.get_plugin(name) is not None:
            continue  # the same entry point seen twice (e.g. editable + regular install)
        try:
            module = loader()
        except Exception as exc:  # any import-time error of a third-party plugin is reported
            fail(name, f"import failed with {type(exc).__name__}: {exc}")
            continue
        bad = _unknown_hooks(pm, module)
        if bad:
            fail(name, "; ".join(bad))
            continue
        pm.register(module, name=name)
    pm.check_pending()  # belt and braces: nothing unverified may remain registered
    return Registry(pm, failed, strict)
