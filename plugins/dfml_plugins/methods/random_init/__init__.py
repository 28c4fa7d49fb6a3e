"""The `random` method (a floor): registration (light: no torch import). Implementation: `method.py`."""

from __future__ import annotations

from typing import Any

from dfml_bench import hookimpl


@hookimpl
def register_methods(register: Any) -> None:
    register("random", "dfml_plugins.methods.random_init.method:RandomInit", params=None,
             help="randomly initialised meta model, only adapted at test time (a floor)",
             access="none", data_free=True, queries="none", uses=("architecture",), reads=("data",),
             search_space={})  # nothing to tune
