"""The built-in dfml-bench plugins.

Registered through the `dfml_bench` entry-point group exactly like a third-party plugin,
using only the public API (`dfml_bench.hookimpl`, `dfml_bench.interfaces`, ...). Each component
has its own folder, `GROUP/COMPONENT/`: its `__init__.py` declares the component's parameters
and implements the registration hook a plugin module would (`register_methods`, ...), and the
implementation beside it is named there as a "module:attribute" factory, imported only when a
run builds the component. This module finds the component folders of every group and calls
their hooks, so adding a component touches its own folder only. `dfml-bench list` imports this
module and every component's `__init__.py`: none of them may import torch.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any

from dfml_bench import hookimpl
from dfml_bench.errors import PluginError, did_you_mean
from dfml_bench.hookspecs import COMPONENT_HOOKS

# Folders holding one subfolder per component; plain modules beside those (e.g. models/head.py)
# are implementation code shared by several components.
GROUPS = ("datasets", "models", "meta_learners", "estimators", "recoverers", "replay", "methods", "scenarios",
          "evaluation_rules", "launchers", "pools", "loggers")
HOOKS = frozenset(COMPONENT_HOOKS.values())


def _component_modules() -> list[ModuleType]:
    """The `__init__` module of every component folder, by group and then by name."""
    modules = []
    for group in GROUPS:
        package = importlib.import_module(f"{__name__}.{group}")
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            if info.ispkg:
                modules.append(_checked(importlib.import_module(f"{package.__name__}.{info.name}")))
    return modules


def _checked(module: ModuleType) -> ModuleType:
    """`module`, if each of its hook implementations is a registration hook (one this module calls)."""
    for attr in dir(module):
        if hasattr(getattr(module, attr), "dfml_bench_impl") and attr not in HOOKS:
            raise PluginError(f"component module {module.__name__} implements '{attr}', which is not a "
                              f"registration hook.{did_you_mean(attr, HOOKS)}")
    return module


COMPONENTS = _component_modules()


def _collect(hook: str, register: Any) -> None:
    for module in COMPONENTS:
        impl = getattr(module, hook, None)
        if impl is not None:
            impl(register=register)


@hookimpl
def register_datasets(register: Any) -> None:
    _collect("register_datasets", register)


@hookimpl
def register_architectures(register: Any) -> None:
    _collect("register_architectures", register)


@hookimpl
def register_meta_learners(register: Any) -> None:
    _collect("register_meta_learners", register)


@hookimpl
def register_estimators(register: Any) -> None:
    _collect("register_estimators", register)


@hookimpl
def register_recoverers(register: Any) -> None:
    _collect("register_recoverers", register)


@hookimpl
def register_replay_strategies(register: Any) -> None:
    _collect("register_replay_strategies", register)


@hookimpl
def register_methods(register: Any) -> None:
    _collect("register_methods", register)


@hookimpl
def register_scenarios(register: Any) -> None:
    _collect("register_scenarios", register)


@hookimpl
def register_evaluation_rules(register: Any) -> None:
    _collect("register_evaluation_rules", register)


@hookimpl
def register_launchers(register: Any) -> None:
    _collect("register_launchers", register)


@hookimpl
def register_pools(register: Any) -> None:
    _collect("register_pools", register)


@hookimpl
def register_loggers(register: Any) -> None:
    _collect("register_loggers", register)
