"""The plugin's entry point: one folder per component, each folder's `__init__.py` declaring
the component's parameters and registration hook. This module finds the folders and calls their
hooks, so a new component is a new folder. Keep these modules light: no torch import here."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from dfml_bench import hookimpl

COMPONENTS = [importlib.import_module(f"{__name__}.{info.name}")
              for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name) if info.ispkg]


@hookimpl
def register_methods(register: Any) -> None:
    # one such function per component kind the plugin's folders register (register_datasets, ...)
    for component in COMPONENTS:
        if hasattr(component, "register_methods"):
            component.register_methods(register=register)
