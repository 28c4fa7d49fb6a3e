"""The `kd` method (data-free multi-teacher KD, no meta-learning): parameters and registration
(light: no torch import). Implementation: `method.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param
from dfml_plugins.common import META_LR


@dataclass
class KDDistillParams:
    estimator: str = param("zo_forward", "gradient estimator of the API inversion", component="estimator")
    recoverer: str = param("generator", "data recoverer that inverts an API", component="recoverer")
    per_class: int = param(30, "images recovered per API class", min=1)
    recover_every: int = param(1, "recover new sets every this many meta-iterations; in between, distil again "
                               "on kept sets (their API outputs are cached: no queries)", min=1)
    keep: int = param(32, "recovered sets kept (with their API outputs) for reuse", min=1)
    temperature: float = param(1.0, "softmax temperature of teacher and student", min=0, exclusive_min=True)


SEARCH_SPACE = {**META_LR, "method.kd.recover_every": {"choice": [1, 5, 10, 20]},
                "method.kd.temperature": {"choice": [1.0, 2.0, 4.0]}}


@hookimpl
def register_methods(register: Any) -> None:
    register("kd", "dfml_plugins.methods.kd_distill.method:KDDistill", params=KDDistillParams,
             help="data-free multi-teacher KD of every API into the meta model over its classes; no meta-learning",
             access="black", data_free=True,
             queries="every recover_every meta-iterations: meta_batch_size x (iterations x K*per_class x (q+1) "
                     "+ K*per_class)", uses=("architecture",), search_space=SEARCH_SPACE)
