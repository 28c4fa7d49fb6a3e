"""Executes one resolved run: build, meta-train with validation, evaluate, store.

The loop, model selection on meta-VAL and the final meta-TEST evaluation belong to the
runner, so every method is measured the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import random
import resource
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from dfml_bench import store
from dfml_bench.apis import QueryBudgetExhausted, QueryLedger
from dfml_bench.config import run_id, run_label, scenario_label
from dfml_bench.data import EpisodeSampler, Normalizer
from dfml_bench.errors import AccessError, ConfigError, DataError, DfmlError, StoreError
from dfml_bench.evaluation import evaluate
from dfml_bench.interfaces import (ACCESS_LEVELS, MethodContext, RunInfo, ScenarioContext, ScenarioData,
                                   TrainSettings)
from dfml_bench.plugins import Registry
from dfml_bench.progress import Reporter
from dfml_bench.seeding import derive_seed
from dfml_bench.selection import parse_selection


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
    workers: int = 2

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            path, origin = Path(self.cache_dir), "--cache-dir"
        elif os.environ.get("DFML_BENCH_CACHE"):
            path, origin = Path(os.environ["DFML_BENCH_CACHE"]), "$DFML_BENCH_CACHE"
        else:
            base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
            path, origin = Path(base) / "dfml-bench", "$XDG_CACHE_HOME"
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{origin} points at '{path}', which is a file, not a directory; point it at a "
                              "directory (it is created if missing).")
        return path


    def resolved_pool_dir(self) -> Path:
        return Path(self.pool_dir) if self.pool_dir is not None else self.resolved_cache_dir() / "pools"


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
    return store.run_dir(env.results_root, run_label(resolved), run_id(resolved))


def build_scenario(registry: Registry, resolved: Mapping[str, Any], env: Environment) -> ScenarioData:
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


class _Events:
    """Fans lifecycle events out to pluggy hooks and the run's loggers."""

    def __init__(self, registry: Registry, info: RunInfo, loggers: list[Any]):
        self.hook, self.info, self.loggers = registry.pm.hook, info, loggers

    def emit(self, event: str, **kwargs: Any) -> None:
        getattr(self.hook, event)(run=self.info, **kwargs)
        for logger in self.loggers:
            getattr(logger, event)(self.info, *kwargs.values())


def execute_run(resolved: Mapping[str, Any], registry: Registry, env: Environment) -> dict[str, Any]:
    """Run one resolved config to completion (or return its stored result if already done).

    The run directory is locked while the run executes: another process given the same
    config waits for it, then returns its stored result (the work is done once).
    """
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
    shared = "pool" not in resolved.get("reads", ("pool",))
    # a run shared by scenarios (its method reads no pool) is locked by its id, whatever the directory
    lock = path.parent.parent / ".locks" / f"{run_id(resolved)}.lock" if shared else path / store.LOCK_FILE
    with store.exclusive_lock(lock, on_wait=waiting):
        done = store.read_result(path)  # finished by the process we waited for
        if done is not None:
            done["skipped"] = True
            return done
        if shared:
            reused = _reuse_shared(resolved, path)
            if reused is not None:
                return reused
        with deterministic_cpu(resolve_device(env.device)):
            return _execute_locked(resolved, registry, env, path)


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


def _reuse_shared(resolved: Mapping[str, Any], path: Path) -> dict[str, Any] | None:
    """The result of the same run finished under another scenario's name (same id: the method
    reads only the data, which the scenarios share), recorded in this scenario's directory too so
    that every table shows it in this scenario's cells; None when there is none."""
    for other in sorted(path.parent.glob(f"*-{run_id(resolved)}")):
        if other == path:
            continue
        try:
            done = store.read_result(other)
        except StoreError:
            continue  # a malformed copy: run it (again) here
        if done is None:
            continue
        done = {k: v for k, v in done.items() if k not in ("skipped", "run_dir")}
        done.update(scenario=scenario_label(resolved), reused_from=done.get("reused_from") or other.name)
        store.write_config(path / store.CONFIG_FILE, resolved)
        store.atomic_write_json(path / store.RESULT_FILE, done)
        done["skipped"] = True
        return done
    return None


def _execute_locked(resolved: Mapping[str, Any], registry: Registry, env: Environment, path: Path) -> dict[str, Any]:
    """The body of :func:`execute_run`, run while holding the run directory's lock."""
    store.write_config(path / store.CONFIG_FILE, resolved)
    device = resolve_device(env.device)
    ckpt_path = path / store.CHECKPOINT_FILE
    ckpt = _load_checkpoint(ckpt_path, device, run_id(resolved))
    # before any logger opens its files: logs written after the checkpoint (or by an attempt that
    # never checkpointed) are cut off, so a resumed run's logs equal an uninterrupted run's
    if ckpt is None or "logs" in ckpt:
        store.rewind_logs(path, ckpt["logs"] if ckpt is not None else {})
    info = RunInfo(run_id(resolved), path, resolved)
    loggers = [registry.build("logger", name, None, path) for name in env.loggers]
    events = _Events(registry, info, loggers)
    reporter = env.reporter
    t0 = time.perf_counter()
    events.emit("on_run_start")

    scenario = build_scenario(registry, resolved, env)
    val_only = bool(resolved.get("val_only"))  # a tuning trial: the meta-test split is dropped, never read
    if val_only:
        scenario = without_test_splits(scenario)
    ways, shots, queries, seed = (int(resolved[k]) for k in ("ways", "shots", "queries", "seed"))
    normalizers = [Normalizer(d.mean, d.std, device) for d in scenario.datasets]
    torch.manual_seed(derive_seed("init", seed))
    arch = resolved["architecture"]
    model = registry.build("architecture", arch["name"], _params(registry.get("architecture", arch["name"]), arch["params"]),
                           ways, scenario.image_size).to(device)

    def sampler(d: Any, split: str, seed_: int, norm: Normalizer) -> EpisodeSampler:
        try:
            return EpisodeSampler(d.split(split), ways, shots, queries, seed_, norm)
        except DataError as exc:  # say which dataset and split cannot hold an episode
            raise DataError(f"dataset '{d.name}', meta-{split} split: {exc}") from None

    def make_train_sampler(i: int) -> EpisodeSampler:
        d = scenario.datasets[i]
        return sampler(d, "train", derive_seed("train", seed, d.name), normalizers[i])

    def build_meta_learner() -> Any:
        if "meta_learner" not in resolved:
            raise ConfigError(f"method '{resolved['method']['name']}' did not declare uses=('meta_learner',).")
        ml = resolved["meta_learner"]
        return registry.build("meta_learner", ml["name"], _params(registry.get("meta_learner", ml["name"]), ml["params"]))

    ledger = QueryLedger(resolved.get("budget"))
    pools: list[Any] = []

    def load_pool() -> Any:
        if "pool" not in resolved.get("reads", ("pool",)):  # its run id leaves the pool's settings out
            raise AccessError(f"method '{resolved['method']['name']}' declares reads={tuple(resolved['reads'])} "
                              "but opened the API pool; add \"pool\" to its reads.")
        if not pools:
            pools.append(open_pool(scenario, registry, env, device))
        return pools[0]

    def build_component(kind: str, name: str | None = None, overrides: Mapping[str, Any] | None = None) -> Any:
        if name is None and not overrides:
            if kind != "meta_learner":
                raise ConfigError(f"building a {kind} needs its name.")
            return build_meta_learner()
        values = resolved.get("components", {}).get(kind, {}).get(name)
        if values is not None and overrides:
            values = {**values, **overrides}
        if values is None:
            raise ConfigError(f"{kind} '{name}' was not declared by method '{resolved['method']['name']}'; "
                              f"declare it with param(..., component='{kind}') in the method's params.")
        comp = registry.get(kind, parse_selection(name)[0])  # name[key=value,...]: values resolved with them
        params = _params(comp, values)
        if kind == "estimator":
            return comp.build(params, derive_seed("estimator", seed, name))
        return comp.build(params)

    m_comp = registry.get("method", resolved["method"]["name"])
    access = m_comp.meta.get("access", "black")
    if access not in ACCESS_LEVELS:
        raise ConfigError(f"method '{m_comp.name}' declares access '{access}'; use one of {ACCESS_LEVELS}.")
    train = TrainSettings(**resolved["train"])
    ctx = MethodContext(model=model, device=device, ways=ways, shots=shots, queries=queries, seed=seed,
                        train=train, scenario=scenario, access=access, method_name=m_comp.name,
                        build_meta_learner=build_meta_learner, make_train_sampler=make_train_sampler,
                        load_pool=load_pool, ledger=ledger, build_component=build_component,
                        normalizers=normalizers, log=reporter.log)
    method = m_comp.build(_params(m_comp, resolved["method"]["params"]), ctx)
    ev = resolved["eval"]
    rule_name = str(ev.get("rule") or m_comp.meta.get("evaluation", "finetune"))
    rule_comp = registry.get("evaluation_rule", rule_name)
    rule = rule_comp.build(_params(rule_comp, {}) if rule_comp.params is not None else None)

    def validate() -> float:
        accs = []
        for d, norm in zip(scenario.datasets, normalizers):
            accs.append(evaluate(model, sampler(d, "val", derive_seed("val", ev["seed"], d.name), norm),
                                 train.val_episodes, ev["steps"], ev["lr"], rule=rule).accuracy)
        return sum(accs) / len(accs)

    best_state, best_val, best_iter = None, float("-inf"), 0
    start = 0
    metrics_path = path / store.METRICS_FILE
    if method.trains and ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
            method.load_state_dict(ckpt["method"])
            best_state, best_val, best_iter, start = ckpt["best_state"], ckpt["best_val"], ckpt["best_iter"], ckpt["iteration"]
            _set_rng_states(ckpt["rng"], device)
            ledger.load_state_dict(ckpt["ledger"])
            t0 -= float(ckpt.get("elapsed", 0.0))  # wall times count every attempt up to the checkpoint
        except Exception as exc:  # truncated, tampered, foreign objects, another version's layout, ...
            raise StoreError(f"checkpoint '{ckpt_path}' cannot be loaded ({type(exc).__name__}: it is corrupt, "
                             "tampered with or from an incompatible version); delete it to restart this run "
                             "from scratch.") from None
        reporter.log(f"resuming {path.name} at meta-iteration {start}")
    # queries answered by every attempt, work lost to a crash included (the ledger counts this trajectory)
    spent = store.QuerySpend(path, ledger.total)

    iterations = train.meta_iterations if method.trains else 0
    stopped, early = None, False
    with reporter.task(f"train {m_comp.name}", iterations - start) as advance:
        for it in range(start, iterations + 1):
            record: dict[str, Any] = {}
            if it < iterations and stopped is None:
                try:
                    record.update(method.train_step(it))
                except QueryBudgetExhausted as exc:
                    stopped = str(exc)
                    reporter.log(f"stopping at meta-iteration {it}: {exc}")
                finally:
                    spent.update(ledger.total)
                _check_finite(record, it)
            record["queries"] = ledger.total
            is_val = it % max(train.val_every, 1) == 0 or it == iterations or stopped is not None
            if is_val:
                _check_finite_model(model, it)
                val = validate()
                record["val_acc"] = val
                if val > best_val:
                    best_val, best_iter = val, it
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                events.emit("on_evaluation", split="val", result={"iteration": it, "accuracy": val})
                # validations since the best one, from the iterations alone (so a resumed run agrees)
                stale = it // max(train.val_every, 1) - best_iter // max(train.val_every, 1)
                if train.early_stop and stopped is None and it < iterations and stale >= train.early_stop:
                    stopped, early = f"early stop: no new best meta-val accuracy in {stale} validations", True
                    reporter.log(f"stopping at meta-iteration {it}: {stopped}")
            if is_val or it % max(train.log_every, 1) == 0:
                record.update(iteration=it, wall_time=time.perf_counter() - t0)
                store.append_jsonl(metrics_path, record)
                events.emit("on_metrics", record=record)
            if stopped is not None:
                iterations = it + 1 if early else it  # meta-iterations done (a budget stop fails at `it`)
                break
            if is_val and it < iterations:
                buf = io.BytesIO()  # written atomically: a crash mid-save never leaves a torn checkpoint
                torch.save({"model": model.state_dict(), "method": method.state_dict(), "best_state": best_state,
                            "best_val": best_val, "best_iter": best_iter, "iteration": it + 1,
                            "rng": _rng_states(device), "ledger": ledger.state_dict(),
                            "logs": store.log_sizes(path), "elapsed": time.perf_counter() - t0,
                            "run_id": info.run_id}, buf)
                store.atomic_write_bytes(ckpt_path, buf.getvalue())
            if it < iterations:
                advance(1, **{k: v for k, v in record.items() if k in ("loss", "train_acc", "val_acc")})

    if best_state is not None:
        model.load_state_dict(best_state)
    per_dataset: dict[str, dict[str, Any]] = {}
    tested = [] if val_only else list(zip(scenario.datasets, normalizers))  # trials never reach meta-test
    for d, norm in tested:
        test_sampler = sampler(d, "test", derive_seed("test", ev["seed"], d.name), norm)
        with reporter.task(f"test {d.name}", ev["episodes"]) as advance:
            res = evaluate(model, test_sampler, ev["episodes"], ev["steps"], ev["lr"], on_episode=advance, rule=rule)
        # every episode's accuracy: runs of one eval seed share their episodes, so they pair (compare --against)
        per_dataset[d.name] = {**res.as_dict(), "episode_accuracies": res.episode_accuracies}
        events.emit("on_evaluation", split="test", result={"dataset": d.name, **res.as_dict()})
    accs = [r["accuracy"] for r in per_dataset.values()]
    cis = [r["ci95"] for r in per_dataset.values()]
    if val_only:  # a trial's score is its best meta-val accuracy (no CI: the selection statistic)
        accs, cis = [best_val], [0.0]
    result = {
        "run_id": info.run_id,
        "method": m_comp.name,
        "scenario": scenario.name,
        "instance": getattr(scenario, "instance", "dev"),
        "shots": shots,
        "seed": seed,
        "profile": resolved.get("profile"),
        "access": access,
        "data_free": bool(m_comp.meta.get("data_free", access != "real_data")),
        "evaluation": rule_name,
        "eval_seed": ev["seed"],
        "accuracy": sum(accs) / len(accs),
        # CI of a mean of independent per-dataset estimates.
        "ci95": (sum(c * c for c in cis) ** 0.5) / len(cis),
        "per_dataset": per_dataset,
        "best_val_accuracy": None if best_val == float("-inf") else best_val,
        "best_iteration": best_iter,
        "meta_iterations": iterations,
        "queries": ledger.total,
        "queries_spent": spent.update(ledger.total),  # >= queries: also what attempts lost to crashes asked
        "apis_queried": len(ledger.per_api),
        "budget": resolved.get("budget"),
        "stopped_early": stopped,
        "wall_time_s": time.perf_counter() - t0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "device": str(device),
        "torch": torch.__version__,
        **environment_record(),
    }
    if val_only:  # a trial result, never a table result (it lives under RESULTS/tune/, and is marked)
        result.update(kind="trial", selection_split="val")
    save_artifacts = getattr(method, "save_artifacts", None)
    if save_artifacts is not None:
        save_artifacts(path)
    store.atomic_write_json(path / store.RESULT_FILE, result)
    ckpt_path.unlink(missing_ok=True)
    if pools:
        pools[0].close()
    events.emit("on_run_end", result=result)
    return result


class NonFiniteTraining(DfmlError):
    """The training loss or the model's weights became NaN or infinite: the run stops as failed."""


def _check_finite(record: Mapping[str, Any], it: int) -> None:
    """Stop a run whose training loss is no longer finite (other records, e.g. a recoverer's loss
    that a noise recoverer reports as NaN, are the method's own business)."""
    for key in ("loss",):
        value = record.get(key)
        if isinstance(value, (int, float)) and not math.isfinite(value):
            raise NonFiniteTraining(f"training diverged: '{key}' became {value} at meta-iteration {it}; no result "
                                    "is recorded. Lower the learning rates (train.meta_lr, the method's own) or "
                                    "check the data, then delete this run directory to re-run it.")


def _check_finite_model(model: torch.nn.Module, it: int) -> None:
    """Stop a run whose weights are no longer finite (a method that reports no loss)."""
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise NonFiniteTraining(f"training diverged: the model's weights hold NaN or infinite values at "
                                f"meta-iteration {it}; no result is recorded. Lower the learning rates "
                                "(train.meta_lr, the method's own), then delete this run directory to re-run it.")


def without_test_splits(scenario: ScenarioData) -> ScenarioData:
    """The scenario with each dataset's meta-test split removed (tuning trials): asking for it fails."""
    datasets = [dataclasses.replace(d, splits={k: v for k, v in d.splits.items() if k != "test"})
                for d in scenario.datasets]
    return dataclasses.replace(scenario, datasets=datasets)


def environment_record() -> dict[str, Any]:
    """What a run's numbers may depend on beyond its config (docs/statistics.md): torch's thread
    count (it sets the order of float reductions), library versions and the platform."""
    import platform

    import numpy as np

    return {"torch_threads": torch.get_num_threads(), "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "machine": platform.machine(), "deterministic": torch.are_deterministic_algorithms_enabled()}


def _load_checkpoint(path: Path, device: torch.device, expected_run: str) -> dict[str, Any] | None:
    """A run's checkpoint, or None without one; a checkpoint that cannot be loaded, or that another run
    wrote (copied here), is a StoreError."""
    if not path.exists():
        return None
    try:  # weights_only: a checkpoint holding anything but tensors and plain data is refused, never run
        ckpt = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(ckpt, dict):
            raise TypeError(type(ckpt).__name__)
    except Exception as exc:  # truncated, tampered, foreign objects, ...
        raise StoreError(f"checkpoint '{path}' cannot be loaded ({type(exc).__name__}: it is corrupt, "
                         "tampered with or from an incompatible version); delete it to restart this run "
                         "from scratch.") from None
    owner = ckpt.get("run_id")
    if owner != expected_run:
        whose = f"run {str(owner)[:40]}" if isinstance(owner, str) else "no recorded run (an older version)"
        raise StoreError(f"checkpoint '{path}' belongs to {whose}, not to this run {expected_run}; delete it to "
                         "restart this run from scratch.")
    return ckpt


def _rng_states(device: torch.device) -> dict[str, Any]:
    """Every global RNG a run may draw from: torch (CPU, and the run's CUDA device), Python, NumPy.

    Generators owned by components are saved by their ``state_dict``.
    """
    import numpy as np

    kind, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": [kind, torch.from_numpy(key.astype("int64")), pos, has_gauss, gauss]}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_states(state: Mapping[str, Any], device: torch.device) -> None:
    """Restore what :func:`_rng_states` returned."""
    import numpy as np

    torch.set_rng_state(state["torch"].cpu())  # map_location may have moved it
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, key.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


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
