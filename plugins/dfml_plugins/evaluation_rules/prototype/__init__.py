"""The `prototype` evaluation rule: registration (light: no torch import). Implementation: `rule.py`."""

from __future__ import annotations

from typing import Any

from dfml_bench import hookimpl


@hookimpl
def register_evaluation_rules(register: Any) -> None:
    register("prototype", "dfml_plugins.evaluation_rules.prototype.rule:PrototypeRule", params=None,
             help="nearest support class mean of the model's features (ProtoNet); no fine-tuning")
