"""The `hello` method: its parameters and registration. Keep this module light: no torch import
here (the implementation, `method.py`, is imported only when a run builds the method)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param


@dataclass
class HelloParams:
    """Parameters of `hello`, shown by `dfml-bench list` and validated in configs."""

    head_init: float = param(0.0, "constant that the classifier head's weights start from")


@hookimpl
def register_methods(register: Any) -> None:
    register("hello", "dfml_bench_hello.hello.method:HelloMethod", params=HelloParams,
             help="example plugin: random features, constant classifier head, no meta-training",
             access="none", data_free=True, uses=("architecture",))
