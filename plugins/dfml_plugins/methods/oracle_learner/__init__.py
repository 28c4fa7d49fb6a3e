"""The `maml_oracle_proto` method (the oracle with another meta-learner): parameters and
registration (light: no torch import). Implementation: `method.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param
from dfml_plugins.common import META_LR


@dataclass
class OracleLearnerParams:
    learner: str = param("protonet", "meta-learner trained on the real episodes", component="meta_learner")


@hookimpl
def register_methods(register: Any) -> None:
    register("maml_oracle_proto", "dfml_plugins.methods.oracle_learner.method:OracleWithLearner",
             params=OracleLearnerParams,
             help="the oracle with a ProtoNet meta-learner (`learner` swaps it): upper bound, NOT data-free",
             access="real_data", data_free=False, queries="none (real images, no APIs)", uses=("architecture",),
             reads=("data",), search_space=dict(META_LR), evaluation="prototype")
