"""BiDf-MKD and its variants (`bidf_mkd`, `bidf_mkd_fo`, ...): parameters, the variant table and
registration (light: no torch import). Implementation: `method.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param
from dfml_plugins.common import META_LR, Variant, add_variants, variant_table


@dataclass
class BidfMkdParams:
    estimator: str = param("zo_forward", "gradient estimator of the API inversion", component="estimator")
    recoverer: str = param("generator", "data recoverer that inverts an API", component="recoverer")
    api_learner: str = param("kd", "meta-learner of API tasks (bi-level KD)", component="meta_learner")
    replay_learner: str = param("maml", "meta-learner of replay tasks drawn as labelled images (MAML, "
                                "cross-entropy on the recovery labels)", component="meta_learner")
    replay: str = param("task_memory", "replay strategy (`dfml-bench list replay`): task_memory (docs/protocol.md), "
                        "api_tasks or none; name[key=value,...] changes its settings for this method only",
                        component="replay")
    per_class: int = param(30, "images recovered per class, for the support set and again for the query set",
                           min=1)
    boundary: bool = param(True, "boundary query-set recovery against the adapted meta model (section 7)")
    boundary_start: int = param(4000, "meta-iteration from which the boundary term is on", min=0)
    patience: int = param(200, "meta-iterations without a new best replay train accuracy before the next API task",
                          min=1)
    first_order: bool = param(False, "first-order inner loops of API and replay tasks (the one switch: the "
                              "learners' own first_order is replaced by it)")
    permute: bool = param(False, "each API task maps the API's classes onto the model's outputs in a random order "
                          "(not in docs/protocol.md, whose API tasks keep the API's order: a few APIs then give a few "
                          "fixed label maps the meta model can memorise instead of adapting)")


_ZO = "per API task: 2 sets x (iterations x K*per_class x ({}) + K*per_class); replay tasks: none"
_PLUS = "this suite's variant, not the paper's"
BIDF_MKD_VARIANTS = [
    Variant("bidf_mkd", None, "BiDf-MKD (docs/protocol.md): zero-order inversion, bi-level KD, boundary queries, "
            "task-memory replay of tasks mixed across APIs, patience schedule", queries=_ZO.format("q+1")),
    Variant("bidf_mkd_fo", "bidf_mkd", "BiDf-MKD with first-order inner loops", {"first_order": True}),
    Variant("bidf_mkd_wb", "bidf_mkd", "BiDf-MKD with true gradients (white-box DFML reference)",
            {"estimator": "white_box"}, access="white", queries=_ZO.format("1 white-box forward")),
    Variant("bidf_mkd_no_boundary", "bidf_mkd", "ablation: no boundary query-set term", {"boundary": False}),
    Variant("bidf_mkd_no_replay", "bidf_mkd", "ablation: no replay", {"replay": "none"},
            queries=_ZO.format("q+1") + " (every task is an API task)"),
    Variant("bidf_mkd_central", "bidf_mkd", "ablation: antithetic (central) estimator",
            {"estimator": "zo_central"}, queries=_ZO.format("2q+1")),
    Variant("bidf_mkd_noise", "bidf_mkd", "floor: the whole method on uniform noise labelled by each API instead "
            "of inverted images", {"recoverer": "noise"},
            queries="per API task: 2 sets x K*per_class; replay tasks: none"),
    Variant("bidf_mkd_real", "bidf_mkd", "probe (oracle: real data): the whole method on real meta-train images "
            "of each API's classes, labelled by the API, instead of inverted images; with bidf_mkd_noise it brackets "
            "what recovery can contribute", {"recoverer": "real_images"}, access="real_data",
            queries="per API task: 2 sets x K*per_class; replay tasks: none"),
    Variant("bidf_mkd_proto", "bidf_mkd", "BiDf-MKD with ProtoNet meta-learners (API and replay tasks)",
            {"api_learner": "protonet", "replay_learner": "protonet"},
            meta={"evaluation": "prototype"}),
    Variant("bidf_mkd_plus", "bidf_mkd", f"BiDf-MKD+ ({_PLUS}): API tasks in a random class order per task, replay "
            "of kept API tasks (bi-level KD again on their cached API outputs, K support shots per class, only "
            "tasks whose support the API recognises)", {"permute": True, "replay": "api_tasks"}),
    Variant("bidf_mkd_plus_noise", "bidf_mkd_plus", f"floor of bidf_mkd_plus ({_PLUS}): its pipeline on uniform "
            "noise labelled by each API", {"recoverer": "noise"},
            queries="per API task: 2 sets x K*per_class; replay tasks: none"),
    Variant("bidf_mkd_plus_real", "bidf_mkd_plus", f"probe of bidf_mkd_plus ({_PLUS}; oracle: real data): its "
            "pipeline on real meta-train images of each API's classes", {"recoverer": "real_images"},
            access="real_data", queries="per API task: 2 sets x K*per_class; replay tasks: none"),
    Variant("bidf_mkd_plus_no_permute", "bidf_mkd_plus", f"ablation of bidf_mkd_plus ({_PLUS}): the API's class "
            "order", {"permute": False}),
    Variant("bidf_mkd_plus_memory_replay", "bidf_mkd_plus", f"ablation of bidf_mkd_plus ({_PLUS}): docs/protocol.md's "
            "task-memory replay", {"replay": "task_memory"}),
    Variant("bidf_mkd_plus_no_filter", "bidf_mkd_plus", f"ablation of bidf_mkd_plus ({_PLUS}): every API task "
            "kept for replay", {"replay": "api_tasks[keep_agreement=0]"}),
    Variant("bidf_mkd_plus_all_support", "bidf_mkd_plus", f"ablation of bidf_mkd_plus ({_PLUS}): replayed tasks "
            "adapt on all their support images", {"replay": "api_tasks[replay_support=all]"}),
]
BIDF_MKD_PARAMS = variant_table(BidfMkdParams, BIDF_MKD_VARIANTS)


def search_space(method: str) -> dict[str, Any]:
    """The settings `dfml-bench tune` searches for one of the variants."""
    return {**META_LR, f"method.{method}.patience": {"int_log_uniform": [5, 100]},
            f"method.{method}.per_class": {"choice": [3, 6, 10]}}


@hookimpl
def register_methods(register: Any) -> None:
    add_variants(register, "dfml_plugins.methods.bidf_mkd.method:BidfMkd", BIDF_MKD_VARIANTS, BIDF_MKD_PARAMS,
                 search_space)
