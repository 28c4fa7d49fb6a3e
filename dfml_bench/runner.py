"""Executes one resolved run: build it, meta-train it, evaluate it on meta-test, store its result.

:func:`execute_run` locks the run's directory and skips finished runs; the meta-training loop
(validation on meta-VAL, model selection, early stopping, checkpoints, resuming) is the
:class:`~dfml_bench.trainer.Trainer`'s; the final meta-TEST evaluation is the same for every
method. Lifecycle events go to the pluggy hooks (:mod:`dfml_bench.hookspecs`) only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import resource
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dfml_bench import store
from dfml_bench.apis import QueryLedger
from dfml_bench.config import RunSpec, run_id, run_label
from dfml_bench.data import EpisodeSampler, Normalizer
from dfml_bench.errors import AccessError, ConfigError, DataError, PluginError, StoreError
from dfml_bench.evaluation import evaluate
from dfml_bench.interfaces import (ACCESS_LEVELS, MethodContext, Noting, RunInfo, ScenarioContext, ScenarioData,
                                   Seedable)
from dfml_bench.plugins import Registry
from dfml_bench.progress import Reporter
from dfml_bench.seeding import derive_seed
from dfml_bench.selection import parse_selection
from dfml_bench.stats import per_dataset_summary
from dfml_bench.store import environment_record
from dfml_bench.trainer import Clock, NonFiniteTraining, Trainer, Validation, load_checkpoint

__all__ = ["Environment", "NonFiniteTraining", "RunEvents", "RunParts", "build_scenario", "build_scenario_by_name",
           "deterministic_cpu", "environment_record", "execute_run", "open_pool", "resolve_device", "run_path",
           "without_test_splits"]

LIFECYCLE_HOOKS = ("on_run_start", "on_metrics", "on_evaluation", "on_run_end")


@dataclasses.dataclass
class Environment:
    """Where and how runs execute; not part of a run's identity (hash)."""

    results_root: Path
    device: str = "auto"
    data_root: Path | None = None
    cache_dir: Path | None = None
    loggers: tuple[str, ...] = ()
    reporter: Reporter = dataclasses.field(default_factory=lambda: Reporter(False))
    pool_dir: Path | None = None
    workers: int = 2  # processes that train an API pool when a run must build it
    reuse_roots: tuple[Path, ...] = ()  # other results roots searched for a pool-free run's finished twin

    @classmethod
    def create(cls, results_root: str | Path, *, device: str = "auto", data_root: str | Path | None = None,
               cache_dir: str | Path | None = None, loggers: Sequence[str] = (), reporter: Reporter | None = None,
               pool_dir: str | Path | None = None, workers: int = 2,
               reuse_roots: Sequence[str | Path] = ()) -> Environment:
        """An Environment from settings as the CLI and jobs hold them (paths as strings, None: unset)."""
        def path(value: str | Path | None) -> Path | None:
            return Path(value) if value else None

        return cls(results_root=Path(results_root), device=device, data_root=path(data_root),
                   cache_dir=path(cache_dir), loggers=tuple(loggers), reporter=reporter or Reporter(False),
                   pool_dir=path(pool_dir), workers=workers, reuse_roots=tuple(Path(p) for p in reuse_roots))

    def resolved_cache_dir(self) -> Path:
        """The data cache (:func:`dfml_bench.store.cache_dir`)."""
        return store.cache_dir(self.cache_dir)

    def resolved_pool_dir(self) -> Path:
        """The pool cache (:func:`dfml_bench.store.pool_dir`)."""
        return store.pool_dir(self.pool_dir, self.cache_dir)


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; an unavailable explicit device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' was requested but no CUDA GPU is available; use --device cpu.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' was requested but is not available; use --device cpu.")
    return device


def run_path(env: Environment, resolved: Mapping[str, Any]) -> Path:
    """The run's directory under the results root."""
    return store.run_dir(env.results_root, run_label(resolved), run_id(resolved))


def build_scenario(registry: Registry, resolved: Mapping[str, Any], env: Environment) -> ScenarioData:
    """Build the datasets of a resolved run's scenario."""
    comp = registry.get("scenario", resolved["scenario"]["name"])
    return build_scenario_by_name(registry, comp.name, _params(comp, resolved["scenario"]["params"]), env,
                                  int(resolved["seed"]))


def build_scenario_by_name(registry: Registry, name: str, params: Any, env: Environment, seed: int) -> ScenarioData:
    """Build a scenario's datasets (its pool is opened separately, on demand)."""
    ctx = ScenarioContext(registry, env.data_root, env.resolved_cache_dir(), seed)
    return registry.get("scenario", name).build(params, ctx)


def _params(comp: Any, values: Mapping[str, Any]) -> Any:
    from dfml_bench.params import build_params

    return build_params(comp.params, values, f"{comp.kind} '{comp.name}'")


class RunEvents:
    """Calls a run's lifecycle hooks: every plugin's implementations and, for this run only, those
    of the logger components it selected (``loggers``), in one pluggy hook call per event."""

    def __init__(self, registry: Registry, info: RunInfo, loggers: Sequence[tuple[str, Any]] = ()):
        self.hook, self.info = registry.pm.hook, info
        self.extra: dict[str, list[Any]] = {event: [] for event in LIFECYCLE_HOOKS}
        for name, logger in loggers:
            for event in LIFECYCLE_HOOKS:
                method = getattr(logger, event)
                expected = getattr(self.hook, event).spec.argnames
                taken = tuple(inspect.signature(method).parameters)
                if not set(taken) <= set(expected):
                    raise PluginError(f"logger '{name}' takes {event}({', '.join(taken)}), but the hook passes "
                                      f"{', '.join(expected)} by name; rename its arguments.")
                self.extra[event].append(method)

    def emit(self, event: str, **kwargs: Any) -> None:
        """Call hook `event` with ``run=`` this run's RunInfo and `kwargs`."""
        caller, extra = getattr(self.hook, event), self.extra[event]
        if extra:
            caller.call_extra(extra, {"run": self.info, **kwargs})
        else:
            caller(run=self.info, **kwargs)


def execute_run(resolved: Mapping[str, Any], registry: Registry, env: Environment) -> dict[str, Any]:
    """Run one resolved config to completion (or return its stored result if already done).

    The run directory is locked while the run executes: another process given the same
    config waits for it, then returns its stored result (the work is done once).
    """
    spec = RunSpec.from_resolved(resolved)
    path = run_path(env, resolved)
    done = store.read_result(path)
    if done is not None:
        done["skipped"] = True
        return done
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create run directory '{path}' ({exc.strerror}); make the results directory "
                         "writable or pass another --results.") from None
    waiting = lambda: env.reporter.log(f"waiting for another process that is running {path.name}")  # noqa: E731
    shared = not spec.reads_pool
    # a run shared by scenarios (its method reads no pool) is locked by its id, whatever the directory
    lock = path.parent.parent / ".locks" / f"{spec.run_id}.lock" if shared else path / store.LOCK_FILE
    with store.exclusive_lock(lock, on_wait=waiting):
        done = store.read_result(path)  # finished by the process we waited for
        if done is not None:
            done["skipped"] = True
            return done
        if shared:
            reused = _reuse_shared(spec, path, env.reuse_roots)
            if reused is not None:
                return reused
        device = resolve_device(env.device)
        with deterministic_cpu(device), exact_float32(device):
            return _run(spec, registry, env, path)


@contextlib.contextmanager
def deterministic_cpu(device: torch.device) -> Iterator[None]:
    """On CPU, run with torch's deterministic algorithms (warn, never fail, for an op without one;
    no NaN-filling of fresh buffers, which costs time and changes nothing here). With the thread
    count fixed, a CPU run is then bit-reproducible (docs/statistics.md). Other devices are left
    as they are: deterministic GPU kernels can be much slower."""
    if device.type != "cpu":
        yield
        return
    import torch.utils.deterministic as det

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              det.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    det.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        det.fill_uninitialized_memory = before[2]


@contextlib.contextmanager
def exact_float32(device: torch.device) -> Iterator[None]:
    """On CUDA, run float32 convolutions and matrix products in full IEEE precision, not
    TensorFloat-32 (cuDNN convolutions default to TF32 on Ampere and later GPUs). A TF32 product
    keeps 10 mantissa bits, a relative error of ~1e-3 in the APIs' logits, as large as the loss
    differences f(x + mu u) - f(x) that the zero-order estimator divides by mu
    (docs/protocol.md section 6): with TF32 the estimates are mostly rounding noise. Restored on exit."""
    if device.type != "cuda":
        yield
        return
    flags = store.float32_flags()
    before = [getattr(owner, name) for owner, name, _ in flags]
    for owner, name, value in flags:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for (owner, name, _), value in zip(flags, before):
            setattr(owner, name, value)


def finished_twin(resolved: Mapping[str, Any], env: Environment) -> dict[str, Any] | None:
    """For a method that reads no pool: the result of its finished twin (the same run under another
    scenario's name, beside it or under ``env.reuse_roots``), recorded in the run's own directory,
    so a grid need not dispatch it; None when there is none or the method reads the pool."""
    spec = RunSpec.from_resolved(resolved)
    return None if spec.reads_pool else _reuse_shared(spec, run_path(env, resolved), env.reuse_roots)


def _reuse_shared(spec: RunSpec, path: Path, roots: Sequence[Path] = ()) -> dict[str, Any] | None:
    """The result of the same run finished under another scenario's name (same id: the method
    reads only the data, which the scenarios share), recorded in this scenario's directory too so
    that every table shows it in this scenario's cells; None when there is none.

    A twin beside `path` lends its logs by name (``reused_from``). One under another results root
    of `roots` (e.g. another cell's `tune` study) has its logs copied here, so that this root
    stands alone, and is named by ``copied_from``."""
    beside = [p for p in sorted(path.parent.glob(f"*-{spec.run_id}")) if p != path]
    others = [p for root in roots for p in sorted((Path(root) / store.RUNS_DIR).glob(f"*-{spec.run_id}"))
              if p.parent != path.parent]
    for other in beside + others:
        try:
            done = store.read_result(other)
        except StoreError:
            continue  # a malformed copy: run it (again) here
        if done is None:
            continue
        logs = store.log_dir({**done, "run_dir": str(other)}) or other  # the twin's, or the run it reused
        done = {k: v for k, v in done.items() if k not in ("skipped", "run_dir", "reused_from", "copied_from")}
        done["scenario"] = spec.scenario_label
        if other.parent == path.parent:
            done["reused_from"] = logs.name
        else:
            done["copied_from"] = str(other)
            store.copy_logs(logs, path)
        store.write_config(path / store.CONFIG_FILE, spec.resolved)
        store.atomic_write_json(path / store.RESULT_FILE, done)
        done["skipped"] = True
        return done
    return None


class RunParts:
    """What a run builds from its spec, on demand: episode samplers, the method's components (all
    through one factory, seeded alike) and the API pool. A method reaches them through its
    :class:`~dfml_bench.interfaces.MethodContext`."""

    def __init__(self, spec: RunSpec, registry: Registry, env: Environment, scenario: ScenarioData,
                 device: torch.device):
        self.spec, self.registry, self.env, self.scenario, self.device = spec, registry, env, scenario, device
        self.normalizers = [Normalizer(d.mean, d.std, device) for d in scenario.datasets]
        self._pool: Any = None

    def sampler(self, index: int, split: str, seed: int) -> EpisodeSampler:
        """Episodes of dataset `index`'s meta-`split`, drawn from `seed`."""
        d, spec = self.scenario.datasets[index], self.spec
        try:
            return EpisodeSampler(d.split(split), spec.ways, spec.shots, spec.queries, seed, self.normalizers[index])
        except DataError as exc:  # say which dataset and split cannot hold an episode
            raise DataError(f"dataset '{d.name}', meta-{split} split: {exc}") from None

    def train_sampler(self, index: int) -> EpisodeSampler:
        """Episodes of dataset `index`'s real meta-train images (oracle methods only)."""
        return self.sampler(index, "train", derive_seed("train", self.spec.seed, self.scenario.datasets[index].name))

    def eval_sampler(self, index: int, split: str) -> EpisodeSampler:
        """The meta-val or meta-test episodes every method is scored on (the ``eval.seed``)."""
        return self.sampler(index, split, derive_seed(split, self.spec.eval.seed, self.scenario.datasets[index].name))

    def meta_learner(self) -> Any:
        """The meta-learner selected in the config."""
        if self.spec.meta_learner is None:
            raise ConfigError(f"method '{self.spec.method.name}' did not declare uses=('meta_learner',).")
        ml = self.spec.meta_learner
        return self._build("meta_learner", ml.name, ml.params)

    def component(self, kind: str, name: str | None = None, overrides: Mapping[str, Any] | None = None) -> Any:
        """A component the method declared (``param(..., component=kind)``), with its config params
        and `overrides`; without a name, the selected meta-learner."""
        if name is None and not overrides:
            if kind != "meta_learner":
                raise ConfigError(f"building a {kind} needs its name.")
            return self.meta_learner()
        values = self.spec.components.get(kind, {}).get(name)  # type: ignore[arg-type]
        if values is not None and overrides:
            values = {**values, **overrides}
        if values is None:
            raise ConfigError(f"{kind} '{name}' was not declared by method '{self.spec.method.name}'; "
                              f"declare it with param(..., component='{kind}') in the method's params.")
        return self._build(kind, str(name), values)

    def _build(self, kind: str, selection: str, values: Mapping[str, Any]) -> Any:
        """``factory(params)`` of any kind; a component with random draws is then seeded from the run's
        seed, its kind and its selection (``name[key=value,...]``: values resolved with them)."""
        comp = self.registry.get(kind, parse_selection(selection)[0])
        built = comp.build(_params(comp, values))
        if isinstance(built, Seedable):
            built.reseed(derive_seed(kind, self.spec.seed, selection))
        if isinstance(built, Noting):
            built.log = self.env.reporter.log  # type: ignore[method-assign]
        return built

    def load_pool(self) -> Any:
        """The scenario's API pool, built and opened on first use."""
        if not self.spec.reads_pool:  # its run id leaves the pool's settings out
            raise AccessError(f"method '{self.spec.method.name}' declares reads={self.spec.reads} "
                              "but opened the API pool; add \"pool\" to its reads.")
        if self._pool is None:
            self._pool = open_pool(self.scenario, self.registry, self.env, self.device)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


def _run(spec: RunSpec, registry: Registry, env: Environment, path: Path) -> dict[str, Any]:
    """The body of :func:`execute_run`, run while holding the run directory's lock: build the run,
    meta-train it (:class:`~dfml_bench.trainer.Trainer`), evaluate it on meta-test, store its result."""
    store.write_config(path / store.CONFIG_FILE, spec.resolved)
    device = resolve_device(env.device)
    ckpt = load_checkpoint(path / store.CHECKPOINT_FILE, device, spec.run_id)
    # before any logger opens its files: logs written after the checkpoint (or by an attempt that
    # never checkpointed) are cut off, so a resumed run's logs equal an uninterrupted run's
    if ckpt is None or "logs" in ckpt:
        store.rewind_logs(path, ckpt["logs"] if ckpt is not None else {})
    info = RunInfo(spec.run_id, path, spec.resolved)
    events = RunEvents(registry, info, [(name, registry.build("logger", name, None, path)) for name in env.loggers])
    clock = Clock()
    events.emit("on_run_start")

    scenario = build_scenario(registry, spec.resolved, env)
    if spec.val_only:  # a tuning trial: the meta-test split is dropped, never read
        scenario = without_test_splits(scenario)
    parts = RunParts(spec, registry, env, scenario, device)
    torch.manual_seed(derive_seed("init", spec.seed))
    arch = spec.architecture
    if arch is None:
        raise ConfigError(f"method '{spec.method.name}' did not declare uses=('architecture', ...); the runner "
                          "needs the meta model's architecture.")
    model = registry.build("architecture", arch.name, _params(registry.get("architecture", arch.name), arch.params),
                           spec.ways, scenario.image_size).to(device)
    ledger = QueryLedger(spec.budget)
    m_comp = registry.get("method", spec.method.name)
    access = m_comp.meta.get("access", "black")
    if access not in ACCESS_LEVELS:
        raise ConfigError(f"method '{m_comp.name}' declares access '{access}'; use one of {ACCESS_LEVELS}.")
    ctx = MethodContext(model=model, device=device, ways=spec.ways, shots=spec.shots, queries=spec.queries,
                        seed=spec.seed, train=spec.train, scenario=scenario, access=access, method_name=m_comp.name,
                        build_meta_learner=parts.meta_learner, make_train_sampler=parts.train_sampler,
                        load_pool=parts.load_pool, ledger=ledger, build_component=parts.component,
                        normalizers=parts.normalizers, log=env.reporter.log)
    method = m_comp.build(_params(m_comp, spec.method.params), ctx)
    rule_name = str(spec.eval_rule or m_comp.meta.get("evaluation", "finetune"))
    rule_comp = registry.get("evaluation_rule", rule_name)
    rule = rule_comp.build(_params(rule_comp, spec.eval_rule_params or {}))  # None for a rule without params
    ev = spec.eval

    def validate() -> Validation:
        found = {d.name: evaluate(model, parts.eval_sampler(i, "val"), spec.train.val_episodes, ev.steps, ev.lr,
                                  rule=rule) for i, d in enumerate(scenario.datasets)}
        return Validation(sum(r.accuracy for r in found.values()) / len(found),
                          {name: r.episode_accuracies for name, r in found.items()})

    trainer = Trainer(model=model, method=method, settings=spec.train, ledger=ledger, validate=validate,
                      run_dir=path, run_id=spec.run_id, device=device, emit=events.emit, reporter=env.reporter,
                      clock=clock, name=m_comp.name)
    if method.trains and ckpt is not None:
        trainer.resume(ckpt)
    trained = trainer.fit()

    per_dataset: dict[str, dict[str, Any]] = {}
    for i, d in enumerate([] if spec.val_only else scenario.datasets):  # trials never reach meta-test
        test_sampler = parts.eval_sampler(i, "test")
        with env.reporter.task(f"test {d.name}", ev.episodes) as advance:
            res = evaluate(model, test_sampler, ev.episodes, ev.steps, ev.lr, on_episode=advance, rule=rule)
        # every episode's accuracy: runs of one eval seed share their episodes, so they pair (compare --against)
        per_dataset[d.name] = {**res.as_dict(), "episode_accuracies": res.episode_accuracies}
        events.emit("on_evaluation", split="test", result={"dataset": d.name, **res.as_dict()})
    accs = [r["accuracy"] for r in per_dataset.values()]
    cis = [r["ci95"] for r in per_dataset.values()]
    if spec.val_only:  # a trial's score is its best meta-val accuracy (no CI: the selection statistic)
        accs, cis = [trained.best_val], [0.0]
    result = {
        "run_id": spec.run_id,
        "method": m_comp.name,
        "scenario": scenario.name,
        "instance": getattr(scenario, "instance", "dev"),
        "shots": spec.shots,
        "seed": spec.seed,
        "profile": spec.profile,
        "access": access,
        "data_free": bool(m_comp.meta.get("data_free", access != "real_data")),
        "evaluation": rule_name,
        "eval_seed": ev.seed,
        "accuracy": sum(accs) / len(accs),
        # CI of a mean of independent per-dataset estimates.
        "ci95": (sum(c * c for c in cis) ** 0.5) / len(cis),
        "per_dataset": per_dataset,
        "best_val_accuracy": None if trained.best_val == float("-inf") else trained.best_val,
        # the selected validation's episodes, per dataset: runs of one eval seed pair on them (compare --split val)
        "best_val_per_dataset": per_dataset_summary(trained.best_val_episodes) if trained.best_val_episodes else None,
        "best_iteration": trained.best_iteration,
        "meta_iterations": trained.iterations,
        "queries": ledger.total,
        "queries_spent": trainer.queries_spent(),  # >= queries: also what attempts lost to crashes asked
        "apis_queried": len(ledger.per_api),
        "budget": spec.budget,
        "stopped_early": trained.stopped,
        "wall_time_s": clock.elapsed(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        **environment_record(device),
    }
    if spec.val_only:  # a trial result, never a table result (it lives under RESULTS/tune/, and is marked)
        result.update(kind="trial", selection_split="val")
    method.save_artifacts(path)
    store.atomic_write_json(path / store.RESULT_FILE, result)
    trainer.checkpoint_path.unlink(missing_ok=True)
    parts.close()
    events.emit("on_run_end", result=result)
    return result


def without_test_splits(scenario: ScenarioData) -> ScenarioData:
    """The scenario with each dataset's meta-test split removed (tuning trials): asking for it fails."""
    datasets = [dataclasses.replace(d, splits={k: v for k, v in d.splits.items() if k != "test"})
                for d in scenario.datasets]
    return dataclasses.replace(scenario, datasets=datasets)


def open_pool(scenario: ScenarioData, registry: Registry, env: Environment, device: torch.device) -> Any:
    """Build the scenario's API pool if it is not cached yet (progress bar), then open it."""
    from dfml_bench.pool import APIPool, PoolSource, build_pool, plan_size

    if scenario.pool_spec is None:
        return None
    if isinstance(scenario.pool_spec, PoolSource):  # served elsewhere: opened by a `pool` plugin
        return registry.build("pool", scenario.pool_spec.kind, scenario.pool_spec.params, scenario, device)
    with env.reporter.task(f"build API pool ({scenario.name})", plan_size(scenario.pool_spec, scenario.datasets)) as advance:
        root = build_pool(scenario.pool_spec, scenario.datasets, registry, env.resolved_pool_dir(),
                          workers=env.workers, progress=advance)
    return APIPool(root, registry, device)
