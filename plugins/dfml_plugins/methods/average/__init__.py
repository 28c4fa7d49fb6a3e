"""The `average` method (parameter mean of the APIs): registration (light: no torch import).
Implementation: `method.py`."""

from __future__ import annotations

from typing import Any

from dfml_bench import hookimpl


@hookimpl
def register_methods(register: Any) -> None:
    register("average", "dfml_plugins.methods.average.method:AverageAPIs", params=None,
             help="parameter mean of all APIs (white-box; one architecture only, so SS)",
             access="white", data_free=True, queries="none (reads API weights)", uses=("architecture",),
             search_space={})  # nothing to tune
