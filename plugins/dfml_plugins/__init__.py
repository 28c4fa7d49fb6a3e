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
    register("glyphs", "dfml_plugins.datasets.glyphs:build_glyphs", params=P.GlyphsParams,
             help="embedded characters rendered from matplotlib's fonts; three domains")
    register("cifar_fs", "dfml_plugins.datasets.real:build_cifar_fs", params=P.CifarFSParams,
             help="CIFAR-FS from --data-root/cifar-100-python (Bertinetto et al. 64/16/20 split), 32 px")
    register("mini_imagenet", "dfml_plugins.datasets.real:build_mini_imagenet", params=P.MiniImageNetParams,
             help="MiniImageNet from --data-root/mini-imagenet/{train,val,test}.csv + images/ (Ravi split), 84 px")
    register("cub", "dfml_plugins.datasets.real:build_cub", params=P.CUBParams,
             help="CUB-200-2011 from --data-root/CUB_200_2011/images (100/50/50 by index), 84 px")


@hookimpl
def register_architectures(register: Any) -> None:
    register("conv4", "dfml_plugins.models.conv4:build_conv4", params=P.Conv4Params,
             help="4 x [conv3x3-BN-ReLU-maxpool] + linear (docs/protocol.md section 3)")
    register("resnet10", "dfml_plugins.models.resnet:build_resnet10", params=P.ResNetParams,
             help="ResNet-10 for small images, basic blocks [1,1,1,1] (docs/protocol.md section 3)")
    register("resnet18", "dfml_plugins.models.resnet:build_resnet18", params=P.ResNetParams,
             help="ResNet-18 for small images, basic blocks [2,2,2,2] (docs/protocol.md section 3)")


@hookimpl
def register_meta_learners(register: Any) -> None:
    register("maml", "dfml_plugins.meta_learners.maml:MAML", params=P.MamlParams,
             help="MAML with cross-entropy; second order unless first_order=true")
    register("kd", "dfml_plugins.meta_learners.kd:BilevelKD", params=P.KDParams,
             help="bi-level KD: inner KD on the support set (API outputs cached), outer KD on the query set")
    register("protonet", "dfml_plugins.meta_learners.protonet:ProtoNet", params=P.ProtoNetParams,
             help="ProtoNet: negative squared distances to support-feature means as logits (soft means and KD "
                  "with teacher probabilities)")


@hookimpl
def register_recoverers(register: Any) -> None:
    register("generator", "dfml_plugins.recoverers.generator:GeneratorRecoverer", params=P.GeneratorRecovererParams,
             help="generator inversion with per-sample augmentation, keeps the lowest true-loss batch")
    register("noise", "dfml_plugins.recoverers.generator:NoiseRecoverer", params=P.NoiseRecovererParams,
             help="uniform noise labelled by the API (a floor)")
    register("deepinversion", "dfml_plugins.recoverers.deepinversion:DeepInversionRecoverer",
             params=P.DeepInversionParams,
             help="white-box DeepInversion: learnable pixels, CE + TV + BatchNorm statistics + L2, jitter; "
                  "persistent per API (PURER)")


@hookimpl
def register_replay_strategies(register: Any) -> None:
    register("task_memory", "dfml_plugins.replay.task_memory:TaskMemory", params=P.TaskMemoryParams,
             help="per-class ring buffer of recovered uint8 images in memory; tasks mix APIs and datasets")
    register("none", "dfml_plugins.replay.task_memory:NoReplay", params=P.NoReplayParams,
             help="no replay: every meta-iteration queries APIs")


@hookimpl
def register_methods(register: Any) -> None:
    # Metadata of every method: `access` (none / black / white / real_data), `data_free`, and
    # `queries`, its default use of the query budget (K classes per API; q, iterations and
    # per_class are the estimator's, recoverer's and method's parameters).
    zo = "per API task: 2 sets x (iterations x K*per_class x ({}) + K*per_class); replay tasks: none"
    register("random", "dfml_plugins.methods.random_init:RandomInit", params=None,
             help="randomly initialised meta model, only adapted at test time (a floor)",
             access="none", data_free=True, queries="none", uses=("architecture",))
    register("maml_oracle", "dfml_plugins.methods.maml_oracle:MamlOracle", params=None,
             help="MAML on the REAL meta-train images: an upper bound, NOT data-free",
             access="real_data", data_free=False, queries="none (real images, no APIs)",
             uses=("architecture", "meta_learner"))
    register("maml_oracle_proto", "dfml_plugins.methods.oracle_learner:OracleWithLearner",
             params=P.OracleLearnerParams,
             help="the oracle with a ProtoNet meta-learner (`learner` swaps it): upper bound, NOT data-free",
             access="real_data", data_free=False, queries="none (real images, no APIs)", uses=("architecture",))
    bidf = "dfml_plugins.methods.bidf_mkd:BidfMkd"
    for name, params, access, text, queries in (
            ("bidf_mkd", P.BidfMkdParams, "black", "BiDf-MKD: zero-order inversion, bi-level KD, boundary queries, replay",
             zo.format("q+1")),
            ("bidf_mkd_fo", P.BidfMkdFOParams, "black", "BiDf-MKD with first-order inner loops", zo.format("q+1")),
            ("bidf_mkd_wb", P.BidfMkdWBParams, "white", "BiDf-MKD with true gradients (white-box DFML reference)",
             zo.format("1 white-box forward")),
            ("bidf_mkd_no_boundary", P.BidfMkdNoBoundaryParams, "black", "ablation: no boundary query-set term",
             zo.format("q+1")),
            ("bidf_mkd_no_replay", P.BidfMkdNoReplayParams, "black", "ablation: no task-memory replay",
             zo.format("q+1") + " (every task is an API task)"),
            ("bidf_mkd_central", P.BidfMkdCentralParams, "black", "ablation: antithetic (central) estimator",
             zo.format("2q+1")),
            ("bidf_mkd_noise", P.BidfMkdNoiseParams, "black", "floor: the whole method on uniform noise labelled by "
             "each API instead of inverted images", "per API task: 2 sets x K*per_class; replay tasks: none"),
            ("bidf_mkd_proto", P.BidfMkdProtoParams, "black", "BiDf-MKD with ProtoNet meta-learners (API and replay "
             "tasks)", zo.format("q+1"))):
        register(name, bidf, params=params, help=text, access=access, data_free=True, queries=queries,
                 uses=("architecture",))
    register("average", "dfml_plugins.methods.average:AverageAPIs", params=None,
             help="parameter mean of all APIs (white-box; one architecture only, so SS)",
             access="white", data_free=True, queries="none (reads API weights)", uses=("architecture",))
    purer = "per task: (iterations + 1) x K*per_class white-box forwards"
    register("purer", "dfml_plugins.methods.purer:Purer", params=P.PurerParams,
             help="PURER: persistent DeepInversion pixels per API class, MAML on their episodes, adversarial "
                  "episode curriculum (white-box)",
             access="white", data_free=True, queries=purer, uses=("architecture",))
    register("purer_fo", "dfml_plugins.methods.purer:Purer", params=P.PurerFOParams,
             help="PURER with a first-order inner loop", access="white", data_free=True, queries=purer,
             uses=("architecture",))
    register("kd", "dfml_plugins.methods.kd_distill:KDDistill", params=P.KDDistillParams,
             help="data-free multi-teacher KD of every API into the meta model over its classes; no meta-learning",
             access="black", data_free=True,
             queries="every recover_every meta-iterations: meta_batch_size x (iterations x K*per_class x (q+1) "
                     "+ K*per_class)", uses=("architecture",))


@hookimpl
def register_scenarios(register: Any) -> None:
    for name, params, text in (
            ("SS", P.SSParams, "one dataset, one API architecture"),
            ("SH", P.SHParams, "one dataset, API architectures mixed (conv4, resnet10, resnet18)"),
            ("MH", P.MHParams, "several datasets (global class ids) x mixed architectures"),
            ("custom", P.CustomScenarioParams, "any datasets x architectures; `--scenario my.yaml` uses it")):
        register(name, f"dfml_plugins.scenarios:build_{name.lower()}", params=params, help=text)


@hookimpl
def register_estimators(register: Any) -> None:
    register("zo_forward", "dfml_plugins.estimators.zeroth_order:ZOForward", params=P.ZOParams,
             help="zero-order forward differences, B(q+1) queries per step (docs/protocol.md section 6)")
    register("zo_central", "dfml_plugins.estimators.zeroth_order:ZOCentral", params=P.ZOParams,
             help="zero-order central differences over antithetic pairs, B(2q+1) queries per step")
    register("white_box", "dfml_plugins.estimators.zeroth_order:WhiteBoxGradient",
             params=P.WhiteBoxEstimatorParams, help="true input gradients through a WhiteBoxAPI")


@hookimpl
def register_launchers(register: Any) -> None:
    register("local", "dfml_plugins.launchers.local:LocalLauncher", params=P.LocalLauncherParams,
             help="this machine: runs one after another, or `workers` processes each pinned to a share of the cores")
    register("ray", "dfml_plugins.launchers.ray_tasks:RayLauncher", params=P.RayLauncherParams,
             help="Ray tasks with declared CPUs / GPUs on a cluster (`address`) or a local Ray instance; "
                  "needs dfml-bench[ray]")
    register("slurm", "dfml_plugins.launchers.slurm:SlurmLauncher", params=P.SlurmLauncherParams,
             help="a Slurm job array through submitit (`executor=local`: submitit's LocalExecutor); "
                  "needs dfml-bench[slurm]")


@hookimpl
def register_pools(register: Any) -> None:
    register("http", "dfml_plugins.pools.http:HttpPool", params=P.HttpPoolParams,
             help="APIs served by `dfml-bench pool serve` (retries with backoff; each image counted once)")


@hookimpl
def register_loggers(register: Any) -> None:
    register("csv", "dfml_plugins.loggers.csv_logger:CsvLogger", params=None,
             help="writes metrics.csv beside metrics.jsonl in each run directory")
