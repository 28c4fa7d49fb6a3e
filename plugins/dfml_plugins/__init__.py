"""The built-in dfml-bench plugins.

Registered through the `dfml_bench` entry-point group exactly like a third-party plugin,
using only the public API (`dfml_bench.hookimpl`, `dfml_bench.interfaces`, ...). This module
is imported by `dfml-bench list`, so it only declares light metadata: every factory is a
"module:attribute" string imported when the component is built.
"""

from __future__ import annotations

from typing import Any

from dfml_bench import hookimpl
from dfml_plugins import params as P


@hookimpl
def register_datasets(register: Any) -> None:
    register("glyphs", "dfml_plugins.datasets.glyphs.dataset:build_glyphs", params=P.GlyphsParams,
             help="embedded characters rendered from matplotlib's fonts; three domains")
    register("cifar_fs", "dfml_plugins.datasets.real.dataset:build_cifar_fs",
             fingerprint="dfml_plugins.datasets.real.dataset:fingerprint_cifar_fs", params=P.CifarFSParams,
             help="CIFAR-FS from --data-root/cifar-100-python (Bertinetto et al. 64/16/20 split), 32 px")
    register("mini_imagenet", "dfml_plugins.datasets.real.dataset:build_mini_imagenet",
             fingerprint="dfml_plugins.datasets.real.dataset:fingerprint_mini_imagenet", params=P.MiniImageNetParams,
             help="MiniImageNet from --data-root/mini-imagenet/{train,val,test}.csv + images/ (Ravi split), 84 px")
    register("cub", "dfml_plugins.datasets.real.dataset:build_cub",
             fingerprint="dfml_plugins.datasets.real.dataset:fingerprint_cub", params=P.CUBParams,
             help="CUB-200-2011 from --data-root/CUB_200_2011/images (100/50/50 by index), 84 px")


@hookimpl
def register_architectures(register: Any) -> None:
    register("conv4", "dfml_plugins.models.conv4.model:build_conv4", params=P.Conv4Params,
             help="4 x [conv3x3-BN-ReLU-maxpool] + linear (docs/protocol.md section 3)")
    register("resnet10", "dfml_plugins.models.resnet.model:build_resnet10", params=P.ResNetParams,
             help="ResNet-10 for small images, basic blocks [1,1,1,1] (docs/protocol.md section 3)")
    register("resnet18", "dfml_plugins.models.resnet.model:build_resnet18", params=P.ResNetParams,
             help="ResNet-18 for small images, basic blocks [2,2,2,2] (docs/protocol.md section 3)")


@hookimpl
def register_meta_learners(register: Any) -> None:
    register("maml", "dfml_plugins.meta_learners.maml.learner:MAML", params=P.MamlParams,
             help="MAML with cross-entropy; second order unless first_order=true")
    register("kd", "dfml_plugins.meta_learners.kd.learner:BilevelKD", params=P.KDParams,
             help="bi-level KD: inner KD on the support set (API outputs cached), outer KD on the query set")
    register("protonet", "dfml_plugins.meta_learners.protonet.learner:ProtoNet", params=P.ProtoNetParams,
             help="ProtoNet: negative squared distances to support-feature means as logits (soft means and KD "
                  "with teacher probabilities)")


@hookimpl
def register_recoverers(register: Any) -> None:
    register("generator", "dfml_plugins.recoverers.generator.recoverer:GeneratorRecoverer", params=P.GeneratorRecovererParams,
             help="generator inversion with per-sample augmentation, keeps the lowest true-loss batch")
    register("noise", "dfml_plugins.recoverers.generator.recoverer:NoiseRecoverer", params=P.NoiseRecovererParams,
             help="uniform noise labelled by the API (a floor)")
    register("deepinversion", "dfml_plugins.recoverers.deepinversion.recoverer:DeepInversionRecoverer",
             params=P.DeepInversionParams,
             help="white-box DeepInversion: learnable pixels, CE + TV + BatchNorm statistics + L2, jitter; "
                  "persistent per API (PURER)")


@hookimpl
def register_replay_strategies(register: Any) -> None:
    register("task_memory", "dfml_plugins.replay.task_memory.replay:TaskMemory", params=P.TaskMemoryParams,
             help="per-class ring buffer of recovered uint8 images in memory; tasks mix APIs and datasets")
    register("api_tasks", "dfml_plugins.replay.api_tasks.replay:ApiTasks", params=P.ApiTasksParams,
             help="the most recent API tasks with their cached API outputs, replayed by bi-level KD again "
                  "(only tasks whose support set the API recognises; K support shots per class)")
    register("none", "dfml_plugins.replay.task_memory.replay:NoReplay", params=P.NoReplayParams,
             help="no replay: every meta-iteration queries APIs")


META_LR = {"train.meta_lr": {"log_uniform": [1e-4, 1e-2]}}


def search_space(method: str) -> dict[str, Any]:
    """The settings `dfml-bench tune` searches for a built-in method (DomainBed style: 1-3 each;
    the default of each is the tuned config's value). Keys are config paths; see docs/tuning.md."""
    if method.startswith("bidf_mkd"):
        return {**META_LR, f"method.{method}.patience": {"int_log_uniform": [5, 100]},
                f"method.{method}.per_class": {"choice": [3, 6, 10]}}
    if method in ("maml_oracle", "purer", "purer_fo"):
        space = {**META_LR, "meta_learner.maml.inner_lr": {"log_uniform": [1e-3, 1e-1]}}
        if method != "maml_oracle":
            space["recoverer.deepinversion.lr"] = {"log_uniform": [0.02, 0.5]}
        return space
    if method == "kd":
        return {**META_LR, "method.kd.recover_every": {"choice": [1, 5, 10, 20]},
                "method.kd.temperature": {"choice": [1.0, 2.0, 4.0]}}
    if method == "maml_oracle_proto":
        return dict(META_LR)
    return {}  # random and average: nothing to tune


@hookimpl
def register_methods(register: Any) -> None:
    # Metadata of every method: `access` (none / black / white / real_data), `data_free`,
    # `queries`, its default use of the query budget (K classes per API; q, iterations and
    # per_class are the estimator's, recoverer's and method's parameters), and `reads` where a
    # method never opens the pool (its runs are then shared by scenarios with the same data).
    register("random", "dfml_plugins.methods.random_init.method:RandomInit", params=None,
             help="randomly initialised meta model, only adapted at test time (a floor)",
             access="none", data_free=True, queries="none", uses=("architecture",), reads=("data",),
             search_space=search_space("random"))
    register("maml_oracle", "dfml_plugins.methods.maml_oracle.method:MamlOracle", params=None,
             help="MAML on the REAL meta-train images: an upper bound, NOT data-free",
             access="real_data", data_free=False, queries="none (real images, no APIs)",
             uses=("architecture", "meta_learner"), reads=("data",),
             search_space=search_space("maml_oracle"))
    register("maml_oracle_proto", "dfml_plugins.methods.oracle_learner.method:OracleWithLearner",
             params=P.OracleLearnerParams,
             help="the oracle with a ProtoNet meta-learner (`learner` swaps it): upper bound, NOT data-free",
             access="real_data", data_free=False, queries="none (real images, no APIs)", uses=("architecture",),
             reads=("data",), search_space=search_space("maml_oracle_proto"),
             evaluation="prototype")
    _register_variants(register, "dfml_plugins.methods.bidf_mkd.method:BidfMkd", P.BIDF_MKD_VARIANTS, P.BIDF_MKD_PARAMS)
    register("average", "dfml_plugins.methods.average.method:AverageAPIs", params=None,
             help="parameter mean of all APIs (white-box; one architecture only, so SS)",
             access="white", data_free=True, queries="none (reads API weights)", uses=("architecture",),
             search_space=search_space("average"))
    _register_variants(register, "dfml_plugins.methods.purer.method:Purer", P.PURER_VARIANTS, P.PURER_PARAMS)
    register("kd", "dfml_plugins.methods.kd_distill.method:KDDistill", params=P.KDDistillParams,
             help="data-free multi-teacher KD of every API into the meta model over its classes; no meta-learning",
             access="black", data_free=True,
             queries="every recover_every meta-iterations: meta_batch_size x (iterations x K*per_class x (q+1) "
                     "+ K*per_class)", uses=("architecture",), search_space=search_space("kd"))


def _register_variants(register: Any, factory: str, variants: list[P.Variant], params: dict[str, type]) -> None:
    """Register a method and its variants from their table; a variant records its `base`, whose
    configured values it takes for the settings it does not change."""
    queries: dict[str, str | None] = {}
    for v in variants:
        queries[v.name] = v.queries or (queries[v.base] if v.base else None)
        register(v.name, factory, params=params[v.name], help=v.description(), access=v.access, data_free=True,
                 queries=queries[v.name], uses=("architecture",), search_space=search_space(v.name),
                 **({"base": v.base} if v.base else {}), **v.meta)


@hookimpl
def register_evaluation_rules(register: Any) -> None:
    register("finetune", "dfml_bench.evaluation:FinetuneRule", params=None,
             help="SGD fine-tuning of the whole model with cross-entropy on the support set (eval.steps, eval.lr)")
    register("prototype", "dfml_plugins.evaluation_rules.prototype.rule:PrototypeRule", params=None,
             help="nearest support class mean of the model's features (ProtoNet); no fine-tuning")


@hookimpl
def register_scenarios(register: Any) -> None:
    for name, params, text in (
            ("SS", P.SSParams, "one dataset, one API architecture"),
            ("SH", P.SHParams, "one dataset, API architectures mixed (conv4, resnet10, resnet18)"),
            ("MH", P.MHParams, "several datasets (global class ids) x mixed architectures"),
            ("custom", P.CustomScenarioParams, "any datasets x architectures; `--scenario my.yaml` uses it")):
        register(name, f"dfml_plugins.scenarios.standard.scenario:build_{name.lower()}", params=params, help=text)


@hookimpl
def register_estimators(register: Any) -> None:
    register("zo_forward", "dfml_plugins.estimators.zeroth_order.estimator:ZOForward", params=P.ZOParams,
             help="zero-order forward differences, B(q+1) queries per step (docs/protocol.md section 6)")
    register("zo_central", "dfml_plugins.estimators.zeroth_order.estimator:ZOCentral", params=P.ZOParams,
             help="zero-order central differences over antithetic pairs, B(2q+1) queries per step")
    register("white_box", "dfml_plugins.estimators.zeroth_order.estimator:WhiteBoxGradient",
             params=P.WhiteBoxEstimatorParams, help="true input gradients through a WhiteBoxAPI")


@hookimpl
def register_launchers(register: Any) -> None:
    register("local", "dfml_plugins.launchers.local.launcher:LocalLauncher", params=P.LocalLauncherParams,
             help="this machine: runs one after another, or `workers` processes each pinned to a share of the cores")
    register("ray", "dfml_plugins.launchers.ray_tasks.launcher:RayLauncher", params=P.RayLauncherParams,
             help="Ray tasks with declared CPUs / GPUs on a cluster (`address`) or a local Ray instance; "
                  "needs dfml-bench[ray]")
    register("slurm", "dfml_plugins.launchers.slurm.launcher:SlurmLauncher", params=P.SlurmLauncherParams,
             help="a Slurm job array through submitit (`executor=local`: submitit's LocalExecutor); "
                  "needs dfml-bench[slurm]")


@hookimpl
def register_pools(register: Any) -> None:
    register("http", "dfml_plugins.pools.http.pool:HttpPool", params=P.HttpPoolParams,
             help="APIs served by `dfml-bench pool serve` (retries with backoff; each image counted once)")


@hookimpl
def register_loggers(register: Any) -> None:
    register("csv", "dfml_plugins.loggers.csv_logger.logger:CsvLogger", params=None,
             help="writes metrics.csv beside metrics.jsonl in each run directory")
