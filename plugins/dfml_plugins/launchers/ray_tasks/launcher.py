"""`ray`: one Ray task per run, with declared CPU / GPU resources; Ray is imported only here."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from dfml_bench.errors import ConfigError
from dfml_bench.interfaces import Launcher
from dfml_bench.launch import missing_extra, run_job
from dfml_plugins.launchers.ray_tasks import RayLauncherParams


def import_ray() -> Any:
    """The `ray` module, or a ConfigError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise missing_extra("ray", "ray", "ray") from None
    return ray


class RayLauncher(Launcher):
    """Joins the cluster at ``address`` (or starts a local Ray instance for the grid) and runs
    every job as a task declaring ``num_cpus`` / ``num_gpus``; Ray schedules them."""

    remote = True

    def __init__(self, params: RayLauncherParams | None = None):
        self.params = params or RayLauncherParams()
        if self.params.num_cpus <= 0 or self.params.num_gpus < 0:
            raise ConfigError("launcher.ray.num_cpus must be > 0 and num_gpus >= 0 "
                              f"(got {self.params.num_cpus} and {self.params.num_gpus}).")
        self.ray = import_ray()

    def _init(self) -> bool:
        """Connect to Ray unless already connected; True when this call started the connection."""
        ray, p = self.ray, self.params
        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
        if p.address:
            kwargs["address"] = p.address
        elif p.local_cpus:
            kwargs["num_cpus"] = p.local_cpus
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"join the Ray cluster at '{p.address}'" if p.address else "start a local Ray instance"
            raise ConfigError(f"cannot {where} ({exc}); check --ray-address (or drop it to run on "
                              "this machine).") from None
        return True

    def run_all(self, jobs: Iterable[Any], execute: Callable[[Any], Any]) -> list[Any]:
        """Execute every job as a Ray task; a task Ray lost yields its exception in its place."""
        jobs = list(jobs)
        if not jobs:
            return []
        ray, p = self.ray, self.params
        started = self._init()
        try:
            task = ray.remote(num_cpus=p.num_cpus, num_gpus=p.num_gpus, max_retries=0)(run_job)
            threads = max(1, int(p.num_cpus))
            refs = [task.remote(execute, job, threads) for job in jobs]
            results: list[Any] = []
            for ref in refs:
                try:
                    results.append(ray.get(ref))
                except Exception as exc:  # RayTaskError, WorkerCrashedError, ...: that run failed
                    results.append(exc)
            return results
        finally:
            if started:
                ray.shutdown()
