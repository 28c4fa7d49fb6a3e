"""The `finetune` evaluation rule, the default: registration (its implementation is the core's
`dfml_bench.evaluation.FinetuneRule`)."""

from __future__ import annotations

from typing import Any

from dfml_bench import hookimpl


@hookimpl
def register_evaluation_rules(register: Any) -> None:
    register("finetune", "dfml_bench.evaluation:FinetuneRule", params=None,
             help="SGD fine-tuning of the whole model with cross-entropy on the support set (eval.steps, eval.lr)")
