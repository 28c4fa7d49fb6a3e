"""What launchers dispatch: picklable run jobs, the worker-side `execute`, and run outcomes.

`dfml-bench run` turns each unfinished run of a grid into a :class:`Job` (plain data) and
hands the list to a launcher with a :class:`RunJob` as ``execute``. Both pickle, so a
launcher may call ``execute(job)`` in this process, in worker processes, in Ray tasks or in
Slurm jobs; a worker loads its own plugin registry. ``execute`` never raises for a failed
run: it writes the run's ``error.json`` and returns a failed :class:`Outcome`, so one bad run
never stops a grid. This module imports torch only when a job executes.

This is the public module for launcher plugins (``register_launchers``); everything in
``__all__`` is stable API:

* :class:`Job` and :class:`Outcome`: what a launcher receives and what ``execute`` returns;
* :func:`run_job`: the entry point to run in a worker (process, Ray task, Slurm job): it pins
  torch to a thread count, then calls ``execute(job)``;
* :func:`set_threads`: the same pinning, e.g. as a process pool's initializer;
* :func:`cpu_count`: the cores this process may use, to share them between workers;
* :func:`missing_extra`: the error for a launcher whose optional package is not installed.

The CLI uses the rest (:func:`make_jobs`, :class:`RunJob`, :func:`as_outcome`,
:func:`failure_record`) to dispatch a grid and record its outcomes.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
from pathlib import Path
from typing import Any

from dfml_bench import store
from dfml_bench.errors import ConfigError, DfmlError, bounded

__all__ = ["Job", "Outcome", "RunJob", "as_outcome", "cpu_count", "failure_record", "make_jobs", "missing_extra",
           "run_job", "set_threads"]

_WORKER_REGISTRY: Any = None


@dataclasses.dataclass(frozen=True)
class Job:
    """One run of a grid, as sent to a worker: its resolved config and where to execute it.

    Paths are absolute so a worker with another working directory writes to the same place.
    """

    index: int
    config: dict[str, Any]
    results_root: str
    device: str = "auto"
    data_root: str | None = None
    cache_dir: str | None = None
    pool_dir: str | None = None
    loggers: tuple[str, ...] = ()
    pool_workers: int = 2
    progress: bool | None = None
    reuse_roots: tuple[str, ...] = ()  # other results roots whose finished run of the same id a pool-free run may take

    @property
    def label(self) -> str:
        """'method / scenario / K-shot / seed S', for messages."""
        from dfml_bench.config import scenario_label

        c = self.config
        return f"{c['method']['name']} / {scenario_label(c)} / {c['shots']}-shot / seed {c['seed']}"

    @property
    def run_dir(self) -> Path:
        """The run's content-hash directory."""
        from dfml_bench.config import run_id, run_label

        return store.run_dir(Path(self.results_root), run_label(self.config), run_id(self.config))

    def environment(self, progress: bool | None) -> Any:
        """The runner's Environment for this job (progress bars as asked)."""
        from dfml_bench.progress import Reporter
        from dfml_bench.runner import Environment

        return Environment.create(self.results_root, device=self.device, data_root=self.data_root,
                                  cache_dir=self.cache_dir, loggers=self.loggers, reporter=Reporter(progress),
                                  pool_dir=self.pool_dir, workers=self.pool_workers, reuse_roots=self.reuse_roots)


@dataclasses.dataclass
class Outcome:
    """What executing a job gave: status ``done`` with the result, or ``failed`` with the error."""

    index: int
    run_dir: str
    status: str
    result: dict[str, Any] | None = None
    error: str | None = None


def make_jobs(runs: list[dict[str, Any]], env: Any, progress: bool | None) -> list[Job]:
    """Jobs for resolved runs, executing in (a picklable copy of) the runner Environment `env`.

    Runs with the same resolved config (e.g. ``--seeds 0,0``) share a run directory: one job.
    """
    def absolute(path: Path | None) -> str | None:
        return str(Path(path).expanduser().resolve()) if path is not None else None

    jobs: dict[Path, Job] = {}
    for run in runs:
        job = Job(index=len(jobs), config=run, results_root=absolute(env.results_root) or "", device=env.device,
                  data_root=absolute(env.data_root), cache_dir=absolute(env.resolved_cache_dir()),
                  pool_dir=absolute(env.resolved_pool_dir()), loggers=tuple(env.loggers),
                  pool_workers=env.workers, progress=progress,
                  reuse_roots=tuple(str(absolute(p)) for p in env.reuse_roots))
        jobs.setdefault(job.run_dir, job)
    return list(jobs.values())


class RunJob:
    """``execute`` for launchers: run one :class:`Job`, record a failure, return an :class:`Outcome`.

    In the launching process it reuses that process's registry and shows progress bars;
    unpickled in a worker it loads the registry once per process and logs one line per run.
    """

    def __init__(self, registry: Any = None, strict: bool | None = None, quiet: bool = False):
        self._registry = registry
        self.strict = strict
        self.quiet = quiet  # no outcome lines (a live grid display prints them)

    def __getstate__(self) -> dict[str, Any]:
        return {"strict": self.strict, "quiet": self.quiet}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.strict = state["strict"]
        self.quiet = state.get("quiet", False)
        self._registry = None

    def __call__(self, job: Job) -> Outcome:
        from dfml_bench.progress import Reporter

        console = Reporter(False).console  # the progress bars' console: lines print above them

        def log(line: str) -> None:
            if not self.quiet:
                console.print(line, highlight=False, soft_wrap=True, markup=False)

        in_process = self._registry is not None
        t0 = time.perf_counter()
        registry = None
        try:
            registry = self._registry if in_process else _worker_registry(self.strict)
            from dfml_bench.runner import execute_run

            result = execute_run(job.config, registry, job.environment(job.progress if in_process else False))
        except Exception as exc:  # any run error is recorded; KeyboardInterrupt stops the grid
            record = failure_record(job, exc, registry, seconds=time.perf_counter() - t0)
            store.write_failure(job.run_dir, record)
            log(f"  {job.label}: FAILED ({record['error']}) -> {job.run_dir}")
            return Outcome(job.index, str(job.run_dir), "failed", error=record["error"])
        store.clear_failure(job.run_dir)
        state = "already done" if result.get("skipped") else f"{result['wall_time_s']:.0f}s"
        score = (f"meta-val {result['accuracy']:.2f}" if result.get("kind") == "trial"
                 else f"{result['accuracy']:.2f} ± {result['ci95']:.2f}")
        log(f"  {job.label}: {score}  ({state}) -> {job.run_dir}")
        return Outcome(job.index, str(job.run_dir), "done", result=result)


def _worker_registry(strict: bool | None) -> Any:
    global _WORKER_REGISTRY
    if _WORKER_REGISTRY is None:
        from dfml_bench.plugins import load_registry

        _WORKER_REGISTRY = load_registry(strict=strict)
    return _WORKER_REGISTRY


def set_threads(threads: int) -> None:
    """Limit this process's torch to `threads` intra-op threads (no-op for 0); in a worker process,
    also keep freed memory for reuse (dfml_bench.allocator), before it starts to compute."""
    from dfml_bench.allocator import keep_freed_memory

    keep_freed_memory()
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def run_job(execute: Any, job: Any, threads: int = 0) -> Any:
    """Worker entry point of launchers: pin torch to `threads` threads, then ``execute(job)``."""
    set_threads(threads)
    return execute(job)


def cpu_count() -> int:
    """Cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def failure_record(job: Job, exc: BaseException, registry: Any = None, seconds: float | None = None) -> dict[str, Any]:
    """The ``error.json`` record of a failed run: what failed, why, and what `compare` needs."""
    c = job.config
    error = bounded(str(exc) if isinstance(exc, DfmlError) else f"{type(exc).__name__}: {exc}")
    record: dict[str, Any] = {
        "status": "failed", "method": c["method"]["name"],
        "scenario": c["scenario"].get("params", {}).get("label") or c["scenario"]["name"],
        "shots": c["shots"], "seed": c["seed"], "profile": c.get("profile"), "error": error,
        "error_type": type(exc).__name__,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "failed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_time_s": seconds,
        "instance": str(c["scenario"].get("params", {}).get("instance") or "dev"),
    }
    if registry is not None:
        try:
            meta = registry.get("method", c["method"]["name"]).meta
            access = meta.get("access", "black")
            record.update(access=access, data_free=bool(meta.get("data_free", access != "real_data")),
                          evaluation=str(meta.get("evaluation", "finetune")))
        except DfmlError:
            pass
    return record


def as_outcome(job: Job, value: Any, registry: Any = None) -> Outcome:
    """Normalise what a launcher returned for `job`: an Outcome, a result dict, or the exception
    that lost the job (a dead worker, a failed Slurm job), which is recorded as the run's failure."""
    if isinstance(value, Outcome):
        return value
    if isinstance(value, BaseException):
        done = store.read_result(job.run_dir)
        if done is not None:  # it finished before the launcher lost track of it
            return Outcome(job.index, str(job.run_dir), "done", result=done)
        record = failure_record(job, value, registry)
        record["error"] = f"the launcher lost this run: {record['error']}"
        if not (job.run_dir / store.CONFIG_FILE).exists():
            store.write_config(job.run_dir / store.CONFIG_FILE, job.config)
        store.write_failure(job.run_dir, record)
        return Outcome(job.index, str(job.run_dir), "failed", error=record["error"])
    if isinstance(value, dict) and "accuracy" in value:
        return Outcome(job.index, str(job.run_dir), "done", result=value)
    raise DfmlError(f"the launcher returned {type(value).__name__} for run '{job.label}' instead of what "
                    "`execute(job)` returned; fix the launcher plugin.")


def missing_extra(package: str, extra: str, launcher: str) -> ConfigError:
    """The error for a launcher whose optional dependency is not installed."""
    return ConfigError(f"the {launcher} launcher needs the '{package}' package, which is not installed; "
                       f"pip install 'dfml-bench[{extra}]'.")
