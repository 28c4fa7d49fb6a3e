"""The core interfaces that plugins implement. Small on purpose; see docs/writing-plugins.md."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from dfml_bench.config import TrainSettings  # the `train` section, as methods see it in MethodContext.train
from dfml_bench.errors import AccessError

if TYPE_CHECKING:  # keep this module importable without torch
    import torch
    from torch import nn

    from dfml_bench.data import ClassImages, FewShotDataset, Task

Params = dict[str, "torch.Tensor"]

ACCESS_LEVELS = ("none", "black", "white", "real_data")


class Seedable:
    """A component with random draws of its own (meta-learners, estimators, recoverers, replay).

    The runner builds such a component with ``factory(params)`` and then calls :meth:`reseed`
    once, before the method uses it, with a seed derived from the run's seed, the component's
    kind and the name it was selected by; the same run therefore always draws the same numbers.
    """

    def reseed(self, seed: int) -> None:  # noqa: B027 - optional: nothing to seed by default
        """Seed the component's own generators (draw nothing before this is called)."""


class Noting:
    """A component with notes for the user (e.g. a recoverer that finds no BatchNorm statistics).

    It writes them with ``self.log(text)``; the runner points `log` at the run's log when it builds
    the component, so notes land beside the run's other messages (``print`` until then).
    """

    def log(self, text: str) -> None:
        print(text)


class Checkpointed:
    """A component whose state changes while a run trains: checkpoints save and resume it."""

    def state_dict(self) -> dict[str, Any]:
        """The state to checkpoint (tensors and plain data only); nothing by default."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # noqa: B027 - optional
        """Restore what `state_dict` returned."""


@dataclasses.dataclass
class TaskOutcome:
    """The outer loss of one task (differentiable w.r.t. the meta parameters) and its accuracy."""

    loss: torch.Tensor
    accuracy: float


class MetaLearner(Seedable, abc.ABC):
    """Inner-loop adaptation and outer loss of one task.

    Fast weights are plain dicts of tensors applied with ``torch.func.functional_call``.
    """

    @abc.abstractmethod
    def adapt(self, model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
              *, create_graph: bool) -> Params:
        """Return fast weights adapted to the labelled support set (x, y)."""

    @abc.abstractmethod
    def task_outcome(self, model: nn.Module, params: Params, task: Task) -> TaskOutcome:
        """Adapt on the task's support set; return the loss and accuracy on its query set."""


class EvaluationRule(abc.ABC):
    """How a meta model is scored on one episode (meta-val and meta-test alike).

    A method selects its rule by name with the registration keyword ``evaluation`` (default
    ``finetune``). The runner samples the episodes and counts correct query predictions, so
    every rule sees the same episodes; the model is in train mode (BatchNorm uses the batch).
    """

    @abc.abstractmethod
    def predict(self, model: nn.Module, params: Params, task: Task, *, steps: int, lr: float) -> torch.Tensor:
        """Predicted labels [Q] of the task's query images, using its labelled support set.

        `params` are the meta model's detached parameters (never modify them in place); `steps`
        and `lr` are the ``eval`` section's fine-tuning settings, which rules that do not
        fine-tune ignore.
        """


#: Per-row loss on API outputs: loss_fn(inputs [N,C,H,W], scores [N,K], sample index [N]) -> [N].
PerSampleLoss = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]


@dataclasses.dataclass
class Estimate:
    """A gradient estimate for a batch: the true loss at the base points and d loss_i / d x_i."""

    loss: torch.Tensor
    grad: torch.Tensor


class GradientEstimator(Seedable, Checkpointed, abc.ABC):
    """Estimates d loss_i / d x_i of a per-sample loss on an API's outputs (zero-order or autograd).

    An estimator that draws random directions seeds them in :meth:`reseed` and returns their
    generators' state from :meth:`state_dict`, so a resumed run draws what it would have drawn.
    """

    #: True when the estimator needs a WhiteBoxAPI.
    needs_white_box: ClassVar[bool] = False

    @abc.abstractmethod
    def estimate(self, api: Any, x: torch.Tensor, loss_fn: PerSampleLoss) -> Estimate:
        """Estimate the input gradient of ``loss_fn`` at the [0,1] images `x` ([B,C,H,W])."""


@dataclasses.dataclass
class RecoveredSet:
    """Images recovered from one API: [0,1] floats, target labels (API output positions), stats."""

    images: torch.Tensor
    labels: torch.Tensor
    loss: float
    agreement: float        # % of images the API labels as their target
    scores: torch.Tensor    # the API's outputs on `images` (queried once; reuse them as teacher outputs)

    def agreed(self) -> torch.Tensor:
        """Boolean mask of the images the API labels as their target (from `scores`, no new query)."""
        pred = self.scores if self.scores.dim() == 1 else self.scores.argmax(1)
        return pred.to(self.labels.device) == self.labels


class DataRecoverer(Seedable, Checkpointed, Noting, abc.ABC):
    """Inverts one API into labelled images, optionally pushing them toward a student's boundary.

    A recoverer may keep state across calls (e.g. per-API learnable images); it then returns it
    from `state_dict` (tensors and plain data only) so checkpoints resume it.
    """

    #: True for a probe that draws real meta-train images (it then needs a real-data method, which
    #: hands them over through `use_real_images` before the first `recover`).
    needs_real_images: ClassVar[bool] = False

    def use_real_images(self, images: ClassImages) -> None:  # noqa: B027 - optional
        """Receive the real meta-train images (called only when `needs_real_images`)."""

    @abc.abstractmethod
    def recover(self, api: Any, estimator: GradientEstimator | None, per_class: int, image_size: int,
                generator: torch.Generator,
                student: Callable[[torch.Tensor], torch.Tensor] | None = None) -> RecoveredSet:
        """Recover `per_class` images for each of the API's classes at `image_size` px.

        `estimator` is None for white-box recoverers that differentiate through the API themselves.
        """


@dataclasses.dataclass
class ApiTask:
    """One API task as a method recovered it: what a replay strategy may keep for replay."""

    classes: tuple[int, ...]        # the API's global class ids, in its output order
    domain: int                     # index of the API's dataset in the scenario's datasets
    support: RecoveredSet
    support_targets: torch.Tensor   # the API's probabilities on the support images [N, ways], API order
    query: RecoveredSet
    query_targets: torch.Tensor     # the same on the query images


@dataclasses.dataclass
class ReplayDraw:
    """A replay task: uint8 support / query images in chunks, with each chunk's dataset index.

    Without targets, chunk i holds the images of the task's class i (trained on those labels).
    With targets (teacher probabilities per image, columns in the model's output order) the
    task is distilled from them instead.
    """

    support: list[torch.Tensor]
    query: list[torch.Tensor]
    domains: list[int]
    support_targets: torch.Tensor | None = None
    query_targets: torch.Tensor | None = None


class ReplayStrategy(Seedable, Checkpointed, abc.ABC):
    """What a method keeps of its API tasks, and the replay tasks it draws from that (no queries)."""

    @abc.abstractmethod
    def observe(self, task: ApiTask) -> None:
        """Keep what this strategy replays of a finished API task."""

    @abc.abstractmethod
    def ready(self, ways: int) -> bool:
        """Whether a `ways`-way replay task can be drawn now."""

    @abc.abstractmethod
    def draw(self, ways: int, shots: int, queries: int, generator: torch.Generator,
             class_order: Callable[[], torch.Tensor]) -> ReplayDraw:
        """Draw a replay task. A strategy that replays stored API tasks calls `class_order()` once
        per draw for the order of the API's classes over the model's outputs (output j <- class
        order[j]), so that replayed tasks follow the method's labelling of API tasks."""


@dataclasses.dataclass
class ScenarioData:
    """What a scenario provides to a run: its datasets (one per domain) and its API pool's spec.

    The pool itself is built (or loaded from the cache) only when a method asks for it.
    """

    name: str
    datasets: list[FewShotDataset]
    pool_spec: Any = None             # dfml_bench.pool.PoolSpec, None for a scenario without APIs
    access: str = "white"             # the most access offered: "black" (query only) or "white"
    output: str = "logits"            # API output mode: logits | probs | label
    instance: str = "dev"             # data instance: dev (develop, tune) | sealed (tables) | standard (real data)

    @property
    def mixed_resolution(self) -> bool:
        return len({d.image_size for d in self.datasets}) > 1

    @property
    def image_size(self) -> int | None:
        """The common input size, or None when datasets differ (global pooling needed)."""
        return None if self.mixed_resolution else self.datasets[0].image_size


@dataclasses.dataclass
class ScenarioContext:
    """What a scenario factory may use to build its datasets."""

    registry: Any
    data_root: Path | None
    cache_dir: Path
    seed: int


@dataclasses.dataclass
class MethodContext:
    """Everything a method may touch during a run.

    Real meta-train images are handed out only to methods registered with
    ``access="real_data"``: a data-free method that asks for them fails.
    """

    model: nn.Module
    device: torch.device
    ways: int
    shots: int
    queries: int
    seed: int
    train: TrainSettings
    scenario: ScenarioData
    access: str
    method_name: str
    build_meta_learner: Callable[[], MetaLearner]
    make_train_sampler: Callable[[int], Any]
    load_pool: Callable[[], Any] = lambda: None
    ledger: Any = None                # dfml_bench.apis.QueryLedger of this run
    build_component: Callable[..., Any] = lambda kind, name=None, overrides=None: None
    normalizers: list[Any] = dataclasses.field(default_factory=list)  # per dataset: [0,1] -> model input
    log: Callable[[str], None] = print

    def meta_learner(self, name: str | None = None) -> MetaLearner:
        """The meta-learner selected in the config (or the named one, with its config params)."""
        return self.build_component("meta_learner", name) if name else self.build_meta_learner()

    def component(self, kind: str, name: str | None = None, **overrides: Any) -> Any:
        """Build a component of `kind` (estimator, recoverer, replay, ...) with its config params.

        `overrides` replace parameters (e.g. ``first_order=True`` for a first-order variant).
        """
        return self.build_component(kind, name, overrides or None)

    def real_train_samplers(self) -> list[Any]:
        """Episode samplers over the scenario's REAL meta-train images (oracle methods only)."""
        self._require_real_data()
        return [self.make_train_sampler(i) for i in range(len(self.scenario.datasets))]

    def real_class_images(self) -> ClassImages:
        """The REAL meta-train images of each API class, by global class id (oracle probes only)."""
        self._require_real_data()
        from dfml_bench.data import ClassImages

        return ClassImages(self.scenario.datasets)

    def _require_real_data(self) -> None:
        if self.access != "real_data":
            raise AccessError(f"method '{self.method_name}' is registered as data-free "
                              f"(access='{self.access}') but asked for the real meta-train "
                              "images; register it with access='real_data' if it is an oracle.")

    def apis(self) -> APIAccess:
        """The scenario's API pool, as this method's declared access allows.

        Black-box methods, and real-data oracles that also query APIs, get query-only handles
        (even on a white-box scenario); white-box methods need a scenario with ``access: white``;
        methods with ``access="none"`` get no APIs.
        """
        if self.access not in ("black", "white", "real_data"):
            raise AccessError(f"method '{self.method_name}' is registered with access='{self.access}', "
                              "which grants no API access; register it with access='black' or 'white'.")
        if self.access == "white" and self.scenario.access != "white":
            raise AccessError(f"method '{self.method_name}' needs white-box APIs but scenario "
                              f"'{self.scenario.name}' gives black-box access; set scenario.access=white "
                              "or choose a black-box method.")
        pool = self.load_pool()
        if pool is None:
            raise AccessError(f"scenario '{self.scenario.name}' has no API pool.")
        return APIAccess(pool, self.ledger, self.scenario.output, white_box=self.access == "white")


class APIAccess:
    """A method's view of the pool: metadata of every API and handles of the granted kind."""

    def __init__(self, pool: Any, ledger: Any, output: str, white_box: bool):
        self._pool, self._ledger, self.output, self.white_box = pool, ledger, output, white_box

    def __len__(self) -> int:
        return len(self._pool)

    def info(self, index: int) -> Any:
        """APIInfo (id, dataset, architecture, global class ids, input size) of API `index`."""
        return self._pool.info(index)

    def get(self, index: int) -> Any:
        """A BlackBoxAPI handle (a WhiteBoxAPI for white-box methods) of API `index`."""
        return self._pool.api(index, self._ledger, output=self.output, white_box=self.white_box)

    def sample(self, generator: torch.Generator) -> int:
        """An API index drawn uniformly with replacement (docs/protocol.md section 1)."""
        import torch

        return int(torch.randint(len(self), (1,), generator=generator).item())

    @property
    def queries_used(self) -> int:
        return int(self._ledger.total)


class Method(abc.ABC):
    """A meta-learning method: one `train_step` per meta-iteration on ``context.model``.

    The runner owns the loop, validation on meta-val, checkpoint selection and the final
    evaluation on meta-test, which is the same for every method.
    """

    #: False for methods with nothing to train (e.g. `random`): the loop is skipped.
    trains: ClassVar[bool] = True

    def __init__(self, params: Any, context: MethodContext):
        self.params = params
        self.context = context

    @abc.abstractmethod
    def train_step(self, iteration: int) -> Mapping[str, float]:
        """Run one meta-iteration; return scalar metrics (e.g. loss, train_acc, queries)."""

    def state_dict(self) -> dict[str, Any]:
        """Method state beyond the meta model (optimiser, schedule) for checkpoints."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def save_artifacts(self, run_dir: Path) -> None:  # noqa: B027 - optional
        """Write extra files into the finished run's directory (e.g. a grid of recovered images).

        Called once, after the final evaluation and before ``result.json`` is written; nothing
        by default.
        """


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """Identity of a run, passed to lifecycle hooks and loggers."""

    run_id: str
    run_dir: Path
    config: Mapping[str, Any]


class RunLogger(abc.ABC):
    """A logger component: the lifecycle hooks (:mod:`dfml_bench.hookspecs`) of the runs that list
    it in ``loggers`` (e.g. ``--set loggers=[csv]``).

    It is built per run as ``factory(params, run_dir)``; the runner calls its methods through the
    same pluggy hook calls as every plugin's ``on_run_start`` ... ``on_run_end`` implementations, by
    keyword, so an override keeps the hook's argument names. Each method does nothing by default.
    """

    def on_run_start(self, run: RunInfo) -> None:  # noqa: B027 - optional hook
        """A run starts."""

    def on_metrics(self, run: RunInfo, record: Mapping[str, Any]) -> None:  # noqa: B027
        """A metrics record was logged."""

    def on_evaluation(self, run: RunInfo, split: str, result: Mapping[str, Any]) -> None:  # noqa: B027
        """An evaluation finished."""

    def on_run_end(self, run: RunInfo, result: Mapping[str, Any]) -> None:  # noqa: B027
        """A run finished."""


class Launcher(abc.ABC):
    """Decides where runs execute. `run_all` calls `execute(job)` for each job somewhere.

    Jobs (`dfml_bench.launch.Job`) and `execute` pickle, so they may cross to other processes
    or machines; `execute` records a failed run itself and does not raise for it.
    """

    #: True when jobs may run on other machines: settings are then not checked on this one
    #: (e.g. ``--device cuda`` from a login node without a GPU).
    remote: bool = False

    @abc.abstractmethod
    def run_all(self, jobs: Iterable[Any], execute: Callable[[Any], Any]) -> list[Any]:
        """Execute every job; return what `execute` returned, in order, or the exception that
        lost a job (a dead worker, a cancelled cluster job) in its place."""
