"""The `maml_oracle` method (an upper bound, not data-free): registration (light: no torch
import). Implementation: `method.py`."""

from __future__ import annotations

from typing import Any

from dfml_bench import hookimpl
from dfml_plugins.common import META_LR

SEARCH_SPACE = {**META_LR, "meta_learner.maml.inner_lr": {"log_uniform": [1e-3, 1e-1]}}


@hookimpl
def register_methods(register: Any) -> None:
    register("maml_oracle", "dfml_plugins.methods.maml_oracle.method:MamlOracle", params=None,
             help="MAML on the REAL meta-train images: an upper bound, NOT data-free",
             access="real_data", data_free=False, queries="none (real images, no APIs)",
             uses=("architecture", "meta_learner"), reads=("data",), search_space=SEARCH_SPACE)
