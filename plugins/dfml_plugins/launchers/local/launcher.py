"""`local`: runs on this machine, one after another in this process or in N worker processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from dfml_bench.errors import ConfigError
from dfml_bench.interfaces import Launcher
from dfml_bench.launch import cpu_count, set_threads
from dfml_plugins.launchers.local import LocalLauncherParams


class LocalLauncher(Launcher):
    """``workers=1``: every job in this process; ``workers=N``: N spawned processes, each
    pinned (``torch.set_num_threads``) to an equal share of the cores unless ``threads`` is set."""

    def __init__(self, params: LocalLauncherParams | None = None):
        self.params = params or LocalLauncherParams()
        if self.params.workers < 1 or self.params.threads < 0:
            raise ConfigError("launcher.local.workers must be >= 1 and launcher.local.threads >= 0 "
                              f"(got {self.params.workers} and {self.params.threads}); e.g. --workers 2.")

    def threads_per_worker(self) -> int:
        """Torch threads of each worker process: `threads`, or an equal share of the cores."""
        return self.params.threads or max(1, cpu_count() // self.params.workers)

    def run_all(self, jobs: Iterable[Any], execute: Callable[[Any], Any]) -> list[Any]:
        """Execute every job; a job whose worker died yields that exception in its place."""
        jobs = list(jobs)
        if self.params.workers == 1 or len(jobs) <= 1:
            set_threads(self.params.threads)
            return [execute(job) for job in jobs]
        threads = self.threads_per_worker()
        ctx = multiprocessing.get_context("spawn")  # no forked torch / thread-pool state
        pool = ProcessPoolExecutor(max_workers=min(self.params.workers, len(jobs)), mp_context=ctx,
                                   initializer=set_threads, initargs=(threads,))
        try:
            futures: list[Future[Any]] = [pool.submit(execute, job) for job in jobs]
            results: list[Any] = []
            for future in futures:
                try:
                    results.append(future.result())
                except Exception as exc:  # e.g. BrokenProcessPool: recorded as that run's failure
                    results.append(exc)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return results
