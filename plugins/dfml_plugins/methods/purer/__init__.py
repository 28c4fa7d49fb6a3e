"""PURER and its variant `purer_fo`: parameters, the variant table and registration (light: no
torch import). Implementation: `method.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param
from dfml_plugins.common import META_LR, Variant, add_variants, variant_table


@dataclass
class PurerParams:
    recoverer: str = param("deepinversion", "data recoverer of the learnable images", component="recoverer")
    learner: str = param("maml", "meta-learner of the pseudo tasks", component="meta_learner")
    per_class: int = param(20, "learnable images per API class", min=1)
    curriculum: bool = param(True, "adversarial episode curriculum: images pushed to where the adapted meta "
                             "model errs while the API still agrees")
    curriculum_start: int = param(0, "meta-iteration from which the curriculum term is on", min=0)
    first_order: bool = param(False, "first-order inner loop")
    permute: bool = param(False, "each episode maps the API's classes onto the model's outputs in a random order "
                          "(off: class i of the API is output i, as PURER does)")


PURER_VARIANTS = [
    Variant("purer", None, "PURER: persistent DeepInversion pixels per API class, MAML on their episodes, "
            "adversarial episode curriculum (white-box)", access="white",
            queries="per task: (iterations + 1) x K*per_class white-box forwards"),
    Variant("purer_fo", "purer", "PURER with a first-order inner loop", {"first_order": True}, access="white"),
]
PURER_PARAMS = variant_table(PurerParams, PURER_VARIANTS)


def search_space(method: str) -> dict[str, Any]:
    """The settings `dfml-bench tune` searches for PURER and its variant."""
    return {**META_LR, "meta_learner.maml.inner_lr": {"log_uniform": [1e-3, 1e-1]},
            "recoverer.deepinversion.lr": {"log_uniform": [0.02, 0.5]}}


@hookimpl
def register_methods(register: Any) -> None:
    add_variants(register, "dfml_plugins.methods.purer.method:Purer", PURER_VARIANTS, PURER_PARAMS, search_space)
