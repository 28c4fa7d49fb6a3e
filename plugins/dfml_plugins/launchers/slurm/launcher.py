"""`slurm`: a submitit job array, one array task per run; submitit is imported only here."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from dfml_bench.errors import ConfigError
from dfml_bench.interfaces import Launcher
from dfml_bench.launch import missing_extra, run_job
from dfml_plugins.launchers.slurm import SlurmLauncherParams

POLL_S = 0.5  # how often the local executor's window checks for finished jobs


def import_submitit() -> Any:
    """The `submitit` module, or a ConfigError naming the extra to install."""
    try:
        import submitit
    except ImportError:
        raise missing_extra("submitit", "slurm", "slurm") from None
    return submitit


class SlurmLauncher(Launcher):
    """Submits the grid as one Slurm job array (``array_parallelism`` tasks at once, each with
    ``cpus`` / ``gpus`` / ``time`` / ``partition``) and waits for it. ``executor=local`` runs
    the same jobs through submitit's LocalExecutor, at most ``array_parallelism`` at once."""

    def __init__(self, params: SlurmLauncherParams | None = None):
        self.params = params or SlurmLauncherParams()
        p = self.params
        if p.cpus < 1 or p.gpus < 0 or p.time < 1 or p.array_parallelism < 1:
            raise ConfigError("launcher.slurm needs cpus >= 1, gpus >= 0, time >= 1 (minutes) and "
                              f"array_parallelism >= 1 (got {p.cpus}, {p.gpus}, {p.time}, {p.array_parallelism}).")
        self.submitit = import_submitit()
        self.remote = p.executor == "slurm"
        if p.executor == "slurm" and shutil.which("sbatch") is None:
            raise ConfigError("the slurm launcher found no `sbatch` on PATH; run on a Slurm login node, or set "
                              "launcher.slurm.executor=local to try it on this machine.")

    def executor(self, folder: Path) -> Any:
        """A submitit executor configured from the params."""
        p = self.params
        ex = self.submitit.AutoExecutor(folder=folder, cluster=p.executor)
        options: dict[str, Any] = {"name": "dfml-bench", "timeout_min": p.time, "cpus_per_task": p.cpus,
                                   "gpus_per_node": p.gpus, "mem_gb": p.mem_gb,
                                   "slurm_array_parallelism": p.array_parallelism}
        if p.partition:
            options["slurm_partition"] = p.partition
        ex.update_parameters(**options)
        return ex

    def run_all(self, jobs: Iterable[Any], execute: Callable[[Any], Any]) -> list[Any]:
        """Execute every job as an array task; a job Slurm failed or killed yields its exception."""
        jobs = list(jobs)
        if not jobs:
            return []
        p = self.params
        root = getattr(jobs[0], "results_root", None)
        folder = Path(p.folder or (Path(root) / "slurm" if root else "slurm")).expanduser() / "%j"
        ex = self.executor(folder)
        n = len(jobs)
        submitted: list[Any] = []
        try:
            if p.executor == "slurm":
                submitted = ex.map_array(run_job, [execute] * n, jobs, [p.cpus] * n)
                return [_result(job) for job in submitted]
            # LocalExecutor starts every job at once: keep a window of `array_parallelism` instead.
            results: list[Any] = [None] * n
            waiting, running = list(range(n)), {}
            while waiting or running:
                while waiting and len(running) < p.array_parallelism:
                    i = waiting.pop(0)
                    running[i] = ex.submit(run_job, execute, jobs[i], p.cpus)
                    submitted.append(running[i])
                time.sleep(POLL_S)
                for i, job in list(running.items()):
                    if job.done():
                        results[i] = _result(job)
                        del running[i]
            return results
        except KeyboardInterrupt:  # Ctrl-C cancels what is still queued or running
            for job in submitted:
                if not job.done():
                    job.cancel(check=False)
            raise


def _result(job: Any) -> Any:
    try:
        return job.result()
    except Exception as exc:  # FailedJobError, UncompletedJobError (timeout, preemption): that run failed
        return exc
