"""The hooks a dfml-bench plugin can implement.

Component hooks receive a ``register`` callback; call it once per component::

    @hookimpl
    def register_methods(register):
        register("hello", "my_pkg.method:HelloMethod", params=HelloParams,
                 help="a tiny example method", access="none", data_free=True)

The factory is a ``"module:attribute"`` string (imported only when the component is built,
so listing components never imports torch) or the callable itself. What a factory returns is
checked against its kind's interface when the component is built (``Component.build``): the
wrong type is a PluginError naming the plugin, the component and the expected type.

Lifecycle hooks (``on_run_start``, ``on_metrics``, ``on_evaluation``, ``on_run_end``) are the
one event system of a run: the runner calls them for every run, with every plugin's
implementations plus those of the logger components the run selected (``loggers``).
docs/components/ describes each kind's contract, with a skeleton and its conformance check.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "dfml_bench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# Component kind -> the hook that registers components of that kind.
COMPONENT_HOOKS: dict[str, str] = {
    "dataset": "register_datasets",
    "architecture": "register_architectures",
    "method": "register_methods",
    "meta_learner": "register_meta_learners",
    "scenario": "register_scenarios",
    "launcher": "register_launchers",
    "logger": "register_loggers",
    "estimator": "register_estimators",
    "recoverer": "register_recoverers",
    "replay": "register_replay_strategies",
    "pool": "register_pools",
    "evaluation_rule": "register_evaluation_rules",
}


@hookspec
def register_datasets(register: Any) -> None:
    """Register datasets: ``register(name, factory, params=..., help=...)``.

    The factory is called as ``factory(params, data_root, cache_dir)`` and returns a
    :class:`dfml_bench.data.FewShotDataset`. A dataset that reads files under ``data_root``
    should declare ``fingerprint=`` (a callable or "module:attr") called as
    ``fingerprint(params, data_root) -> str | None``: an identity of those files (names, sizes,
    modification times; :func:`dfml_bench.store.tree_fingerprint`) that enters its runs' ids, so
    that other data never reuses a finished run. Data made from the params alone needs none.
    """


@hookspec
def register_architectures(register: Any) -> None:
    """Register network architectures:
    ``factory(params, num_classes, image_size, *, running_stats=False) -> torch.nn.Module``.

    ``image_size`` is None when inputs of several sizes must be accepted (global pooling).
    BatchNorm keeps no running statistics unless ``running_stats`` (the pool builder asks for
    them for APIs; meta models use batch statistics).
    """


@hookspec
def register_methods(register: Any) -> None:
    """Register methods: ``factory(params, context) -> dfml_bench.interfaces.Method``.

    Metadata keywords: ``access`` ("none", "black", "white" or "real_data"),
    ``data_free`` (bool), ``queries`` (a short text: its default use of the query budget),
    ``uses`` (component kinds it reads, e.g. ("architecture", "meta_learner")),
    ``reads`` (what of a scenario it reads: ("data",) or ("data", "pool"), the default). A method
    that declares ("data",) must never open the pool: its run id then leaves the pool's settings
    out, so scenarios that share their datasets share its runs (each shows it in its cells).
    ``evaluation`` (the name of the evaluation rule that scores its meta model on an episode;
    default "finetune").
    """


@hookspec
def register_meta_learners(register: Any) -> None:
    """Register meta-learners: ``factory(params) -> dfml_bench.interfaces.MetaLearner``."""


@hookspec
def register_scenarios(register: Any) -> None:
    """Register scenarios: ``factory(params, context) -> dfml_bench.interfaces.ScenarioData``.

    ``context`` is a :class:`dfml_bench.interfaces.ScenarioContext` (``registry``, ``data_root``,
    ``cache_dir``, ``seed``). The factory builds its datasets through the registry
    (``context.registry.get("dataset", name).build(params, context.data_root, context.cache_dir)``)
    and returns them with a pool spec: a :class:`dfml_bench.pool.PoolSpec` (APIs trained here,
    cached by its hash), a :class:`dfml_bench.pool.PoolSource` (a pool served by a ``pool``
    plugin), or None (no APIs). The pool is built only when a method opens it.
    """


@hookspec
def register_launchers(register: Any) -> None:
    """Register launchers: ``factory(params) -> dfml_bench.interfaces.Launcher``."""


@hookspec
def register_loggers(register: Any) -> None:
    """Register run loggers: ``factory(params, run_dir) -> dfml_bench.interfaces.RunLogger``.

    A logger implements the lifecycle hooks below for the runs that list it in ``loggers``
    (e.g. ``--set loggers=[csv]``); its methods take the hooks' argument names (``params`` is None:
    loggers take no settings).
    """


@hookspec
def register_estimators(register: Any) -> None:
    """Register gradient estimators: ``factory(params) -> dfml_bench.interfaces.GradientEstimator``.

    Like every component a method builds, an estimator is then seeded once through
    :meth:`~dfml_bench.interfaces.Seedable.reseed` (a seed derived from the run's seed and its
    name). Draw every direction from a generator seeded there and return its state from
    ``state_dict`` (restored by ``load_state_dict``), or a resumed run draws other directions than
    an uninterrupted one.
    """


@hookspec
def register_recoverers(register: Any) -> None:
    """Register data recoverers: ``factory(params) -> dfml_bench.interfaces.DataRecoverer``."""


@hookspec
def register_replay_strategies(register: Any) -> None:
    """Register replay strategies: ``factory(params) -> dfml_bench.interfaces.ReplayStrategy``."""


@hookspec
def register_pools(register: Any) -> None:
    """Register sources of pools served elsewhere: ``factory(params, scenario, device) -> pool``.

    ``scenario`` is the :class:`dfml_bench.interfaces.ScenarioData`, ``device`` the run's
    ``torch.device``.

    A scenario selects one with ``pool: {kind: NAME, ...params}``. The pool answers ``len(pool)``,
    ``pool.info(i) -> APIInfo``, ``pool.api(i, ledger, output=..., white_box=...) -> BlackBoxAPI``
    and ``pool.close()``, like :class:`dfml_bench.pool.APIPool`, and charges ``ledger`` once per
    image queried.
    """


@hookspec
def register_evaluation_rules(register: Any) -> None:
    """Register evaluation rules: ``factory(params) -> dfml_bench.interfaces.EvaluationRule``.

    A rule scores a meta model on one episode (meta-val and meta-test); a method selects it with
    the registration keyword ``evaluation=NAME``.
    """


@hookspec
def on_run_start(run: Any) -> None:
    """A run starts or resumes (``run`` is a :class:`dfml_bench.interfaces.RunInfo`: ``run_id``,
    ``run_dir``, the resolved ``config``)."""


@hookspec
def on_metrics(run: Any, record: dict) -> None:
    """A metrics record (step, queries, losses, accuracies, wall time) was logged."""


@hookspec
def on_evaluation(run: Any, split: str, result: dict) -> None:
    """An evaluation on ``split`` ("val" or "test") finished."""


@hookspec
def on_run_end(run: Any, result: dict) -> None:
    """A run finished; ``result`` is the dict just written to result.json (``accuracy``, ``ci95``,
    ``per_dataset``, ``queries``, ``wall_time_s``, ...).

    Not called for a run that failed (its error goes to error.json) nor for one skipped because
    it was already finished.
    """
