"""The `ray` launcher: parameters and registration (light: no ray or torch import).
Implementation: `launcher.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param


@dataclass
class RayLauncherParams:
    address: str | None = param(None, "Ray cluster to join (e.g. auto or ray://head:10001); None starts a local "
                                "Ray instance for the grid")
    num_cpus: float = param(1.0, "CPUs each run's task declares (its torch threads: at least 1)", min=0,
                            exclusive_min=True)
    num_gpus: float = param(0.0, "GPUs each run's task declares (e.g. 1, or 0.5 to share one)", min=0)
    local_cpus: int | None = param(None, "CPUs of a local Ray instance (None: all of this machine's)", min=1)


@hookimpl
def register_launchers(register: Any) -> None:
    register("ray", "dfml_plugins.launchers.ray_tasks.launcher:RayLauncher", params=RayLauncherParams,
             help="Ray tasks with declared CPUs / GPUs on a cluster (`address`) or a local Ray instance; "
                  "needs dfml-bench[ray]")
