"""Declared parameters of the built-in components (light: no torch import)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from dfml_bench import param

GLYPH_DOMAINS = ("letters", "symbols", "scripts")


@dataclass
class GlyphsParams:
    domain: str = param("letters", "which glyph domain", choices=GLYPH_DOMAINS)
    instances_per_class: int = param(60, "rendered instances (fonts x jitter) per character", min=1)
    image_size: int | None = param(None, "render size in px (default: the domain's native size)", min=8)
    seed: int = param(0, "rendering and class-split seed (fixed across runs)", min=0, max=999_999)
    instance: str = param("dev", "dev: the rendering and class split to develop and tune on; sealed: another "
                          "rendering and class split (seed + 1000000), for published tables only (see docs/tuning.md)",
                          choices=("dev", "sealed"))


@dataclass
class Conv4Params:
    width: int = param(32, "channels of every conv block", min=1)
    pool: str = param("auto", "flatten | max | auto (max when input sizes are mixed)",
                      choices=("auto", "flatten", "max"))


@dataclass
class MamlParams:
    inner_steps: int = param(5, "SGD steps on the support set per task", min=0)
    inner_lr: float = param(0.01, "inner-loop step size", min=0, exclusive_min=True)
    first_order: bool = param(False, "drop second-order terms (FOMAML)")


LETTERS = "glyphs[domain=letters]"
ALL_GLYPHS = ["glyphs[domain=letters]", "glyphs[domain=symbols]", "glyphs[domain=scripts]"]
ALL_ARCHS = ["conv4", "resnet10", "resnet18"]


def _pool_check(value: dict) -> str | None:
    if value and not (isinstance(value.get("kind"), str) and value["kind"]):
        return "needs a 'kind' naming a pool plugin (e.g. kind: http)"
    return None


@dataclass
class ScenarioParams:
    """A pool of APIs: datasets x API architectures x apis_per_cell (docs/protocol.md sections 1-2)."""

    datasets: list[str] = param([LETTERS], "datasets, each name[key=value,...]; class ids are made global")
    architectures: list[str] = param(["conv4"], "API architectures, each name[key=value,...]")
    apis_per_cell: int = param(100, "APIs per (dataset, architecture) cell", min=1)
    classes_per_api: int = param(5, "classes each API was trained on (K-way APIs)", min=2)
    output: str = param("logits", "what an API returns", choices=("logits", "probs", "label"))
    access: str = param("white", "the most access offered: black (query only) or white (weights too, for "
                        "methods registered as white-box); black-box methods always get query-only handles",
                        choices=("black", "white"))
    pool_seed: int = param(0, "seed of the class draws and API training (same seed, same pool)", min=0)
    api_epochs: int = param(60, "training epochs of each API (the best held-out epoch is kept)", min=1)
    api_batch_size: int = param(128, "API training batch size", min=1)
    api_lr: float = param(0.01, "API learning rate (Adam for conv4, SGD+momentum otherwise)", min=0,
                          exclusive_min=True)
    api_optimizer: str = param("auto", "auto | adam | sgd", choices=("auto", "adam", "sgd"))
    api_shift: int = param(0, "random translation (px) of API training images; 0 = none, as docs/protocol.md")
    label: str = param("", "name shown in tables (default: the scenario's own name)")
    pool: dict = param({}, "a pool served elsewhere instead of a built one: {kind: http, url: ..., ...} "
                       "(`dfml-bench list pool`); the pool parameters above are then unused", check=_pool_check)


@dataclass
class SSParams(ScenarioParams):
    pass


@dataclass
class SHParams(ScenarioParams):
    architectures: list[str] = param(list(ALL_ARCHS), "API architectures, each name[key=value,...]")


@dataclass
class MHParams(ScenarioParams):
    datasets: list[str] = param(list(ALL_GLYPHS), "datasets mixed in the pool; evaluation on each, headline = mean")
    architectures: list[str] = param(list(ALL_ARCHS), "API architectures, each name[key=value,...]")


@dataclass
class CustomScenarioParams(ScenarioParams):
    pass


@dataclass
class CifarFSParams:
    image_size: int = param(32, "input size in px (paper: 32)", min=8)
    max_per_class: int | None = param(None, "keep at most this many images per class (None: all)", min=1)


@dataclass
class MiniImageNetParams:
    image_size: int = param(84, "input size in px (paper: 84)", min=8)
    max_per_class: int | None = param(None, "keep at most this many images per class (None: all 600)", min=1)


@dataclass
class CUBParams:
    image_size: int = param(84, "input size in px (paper: 84); images are squashed to square", min=8)
    max_per_class: int | None = param(None, "keep at most this many images per class (None: all)", min=1)


@dataclass
class ResNetParams:
    width: int = param(64, "channels of the first stage (stages use w, 2w, 4w, 8w); paper: 64", min=1)


@dataclass
class ZOParams:
    q: int = param(100, "random directions per image (docs/protocol.md section 6)", min=1)
    mu: float = param(0.005, "smoothing radius of the finite difference", min=0, exclusive_min=True)
    memory_mb: int = param(256, "memory budget of one API call's input batch; sets the chunk size", min=1)


@dataclass
class WhiteBoxEstimatorParams:
    pass


@dataclass
class GeneratorRecovererParams:
    iterations: int = param(200, "generator optimisation steps per recovered set (docs/protocol.md section 5)", min=1)
    lr: float = param(1e-3, "Adam learning rate of the generator and latents (betas 0.5, 0.999)",
                      min=0, exclusive_min=True)
    z_dim: int = param(256, "latent size", min=1)
    width: int = param(128, "generator channels (docs/protocol.md: 128); its cost grows with width^2", min=1)
    pad: int = param(4, "random-crop padding of the per-sample augmentation, px", min=0)
    flip: bool = param(True, "random horizontal flips in the augmentation")
    tv: float = param(0.0, "weight of a total-variation image prior added to every sample's loss (0: docs/protocol.md's "
                      "loss); computed on the generator's side, so it costs no queries", min=0)
    boundary_weight: float = param(1.0, "weight of the boundary term when a student is given (section 7)", min=0)


@dataclass
class NoiseRecovererParams:
    pass


@dataclass
class KDParams:
    inner_steps: int = param(10, "SGD steps of KD on the recovered support set (docs/protocol.md section 8)", min=0)
    inner_lr: float = param(0.01, "inner-loop step size", min=0, exclusive_min=True)
    first_order: bool = param(False, "drop second-order terms of the inner loop")
    temperature: float = param(1.0, "softmax temperature of both teacher and student", min=0, exclusive_min=True)


@dataclass
class TaskMemoryParams:
    capacity_per_class: int = param(600, "images kept per global class (a ring: 20 batches of 30 in the paper)", min=1)
    remember: str = param("all", "recovered images that enter the memory: all (docs/protocol.md) or agreed (those the "
                          "API labels as their target, from the outputs already queried)", choices=("all", "agreed"))


@dataclass
class ApiTasksParams:
    keep: int = param(32, "the most recent API tasks kept for replay", min=1)
    keep_agreement: float = param(80.0, "keep an API task only if the API labels at least this % of its recovered "
                                  "support images as their targets (0: keep all; uses the outputs already queried)",
                                  min=0, max=100)
    replay_support: str = param("shots", "support images a replayed task adapts on: shots (the run's K per class, "
                                "drawn afresh per replay, so replayed tasks have the test tasks' support size) or all",
                                choices=("shots", "all"))


@dataclass
class NoReplayParams:
    pass


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


@dataclass(frozen=True)
class Variant:
    """A method registered as another one with some defaults changed (`changes`). It takes the
    configured values of its `base` (profile, --config, --set method.BASE.x=...) for every
    setting it does not change; its own block (method.NAME) wins over both."""

    name: str
    base: str | None
    help: str
    changes: dict[str, Any] = field(default_factory=dict)
    access: str = "black"
    queries: str | None = None      # None: the base's
    meta: dict[str, Any] = field(default_factory=dict)   # further registration metadata

    def description(self) -> str:
        if self.base is None:
            return self.help
        changed = ", ".join(f"{k}={v}" for k, v in self.changes.items())
        return f"{self.help} [{changed}; otherwise as {self.base} is configured]"


def variant_params(base: type, name: str, changes: dict[str, Any]) -> type:
    """`base`'s params dataclass with the defaults in `changes` (help, choices and bounds kept)."""
    hints = get_type_hints(base)
    fields_ = {f.name: f for f in dataclasses.fields(base)}
    unknown = set(changes) - set(fields_)
    if unknown:
        raise ValueError(f"variant '{name}' changes unknown settings {sorted(unknown)}")
    cls_name = "".join(part.title() for part in name.split("_")) + "Params"
    cls = dataclasses.make_dataclass(
        cls_name, [(k, hints[k], field(default=v, metadata=fields_[k].metadata)) for k, v in changes.items()],
        bases=(base,))
    cls.__module__ = __name__
    globals()[cls_name] = cls  # importable by name, like the hand-written ones
    return cls


def variant_table(root: type, variants: list[Variant]) -> dict[str, type]:
    """Params dataclass of each variant, built from its base's (the first variant has no base)."""
    built: dict[str, type] = {}
    for v in variants:
        built[v.name] = root if v.base is None else variant_params(built[v.base], v.name, v.changes)
    return built


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
    Variant("bidf_mkd_proto", "bidf_mkd", "BiDf-MKD with ProtoNet meta-learners (API and replay tasks)",
            {"api_learner": "protonet", "replay_learner": "protonet"},
            meta={"evaluation": "prototype"}),
    Variant("bidf_mkd_plus", "bidf_mkd", f"BiDf-MKD+ ({_PLUS}): API tasks in a random class order per task, replay "
            "of kept API tasks (bi-level KD again on their cached API outputs, K support shots per class, only "
            "tasks whose support the API recognises)", {"permute": True, "replay": "api_tasks"}),
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


@dataclass
class ProtoNetParams:
    inner_steps: int = param(0, "SGD steps from the prototype head (0: a plain ProtoNet; >0: Proto-MAML)", min=0)
    inner_lr: float = param(0.01, "step size of those steps", min=0, exclusive_min=True)
    first_order: bool = param(False, "drop second-order terms of those steps (prototypes stay exact)")


@dataclass
class DeepInversionParams:
    iterations: int = param(1, "inversion steps per recover call (PURER: one per task, on the drawn API's images)", min=1)
    persistent: bool = param(True, "keep each API's pixels and optimiser across calls (PURER); false: fresh "
                             "pixels per call")
    lr: float = param(0.05, "Adam learning rate of the pixel logits (images = sigmoid(logits))", min=0,
                      exclusive_min=True)
    tv: float = param(1e-4, "weight of the total-variation prior (docs/protocol.md section 10)", min=0)
    bn: float = param(0.01, "weight of BatchNorm-statistics matching (skipped for APIs without BatchNorm)", min=0)
    l2: float = param(1e-5, "weight of the L2 prior", min=0)
    jitter: int = param(2, "random per-sample translation, +- px", min=0)
    flip: bool = param(True, "random horizontal flips")
    student_weight: float = param(1.0, "weight of the adversarial term against a student (the curriculum)", min=0)


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


@dataclass
class KDDistillParams:
    estimator: str = param("zo_forward", "gradient estimator of the API inversion", component="estimator")
    recoverer: str = param("generator", "data recoverer that inverts an API", component="recoverer")
    per_class: int = param(30, "images recovered per API class", min=1)
    recover_every: int = param(1, "recover new sets every this many meta-iterations; in between, distil again "
                               "on kept sets (their API outputs are cached: no queries)", min=1)
    keep: int = param(32, "recovered sets kept (with their API outputs) for reuse", min=1)
    temperature: float = param(1.0, "softmax temperature of teacher and student", min=0, exclusive_min=True)


@dataclass
class OracleLearnerParams:
    learner: str = param("protonet", "meta-learner trained on the real episodes", component="meta_learner")


@dataclass
class LocalLauncherParams:
    workers: int = param(1, "runs executed at once, each in its own process (1: one after another, in this process)",
                        min=1)
    threads: int = param(0, "torch threads per run (0: an equal share of this machine's cores with workers > 1, "
                         "torch's default otherwise)", min=0)


@dataclass
class RayLauncherParams:
    address: str | None = param(None, "Ray cluster to join (e.g. auto or ray://head:10001); None starts a local "
                                "Ray instance for the grid")
    num_cpus: float = param(1.0, "CPUs each run's task declares (its torch threads: at least 1)", min=0,
                            exclusive_min=True)
    num_gpus: float = param(0.0, "GPUs each run's task declares (e.g. 1, or 0.5 to share one)", min=0)
    local_cpus: int | None = param(None, "CPUs of a local Ray instance (None: all of this machine's)", min=1)


@dataclass
class SlurmLauncherParams:
    executor: str = param("slurm", "slurm: submit a job array with sbatch; local: submitit's LocalExecutor "
                          "(subprocesses on this machine, for tests)", choices=("slurm", "local"))
    partition: str = param("", "Slurm partition (empty: the cluster's default)")
    time: int = param(240, "time limit of each run's job, minutes", min=1)
    gpus: int = param(0, "GPUs per run", min=0)
    cpus: int = param(2, "CPUs per run (its torch threads)", min=1)
    mem_gb: float | None = param(None, "memory per run in GB (None: the cluster's default)", min=0, exclusive_min=True)
    array_parallelism: int = param(32, "most runs of the job array running at once", min=1)
    folder: str = param("", "submitit's job and log folder (empty: RESULTS/slurm)")


def _url_check(value: str) -> str | None:
    return None if value.startswith(("http://", "https://")) else "must be an http:// or https:// URL"


@dataclass
class HttpPoolParams:
    url: str = param("http://127.0.0.1:8765", "base URL of a pool served by `dfml-bench pool serve`",
                     check=_url_check)
    token_env: str = param("", "environment variable holding the server's bearer token (empty: no token); "
                           "the token itself never goes into a config")
    timeout_s: float = param(30.0, "seconds one HTTP attempt may take", min=0, exclusive_min=True)
    deadline_s: float = param(300.0, "seconds one request may take with all its retries before the run fails",
                              min=0, exclusive_min=True)
    max_batch: int = param(4096, "most images per HTTP request (a query is split into requests)", min=1)
    backoff_s: float = param(0.1, "wait before the first retry; doubles per retry, with jitter", min=0)
    max_backoff_s: float = param(10.0, "longest wait between retries (a server's Retry-After may be longer)", min=0)
