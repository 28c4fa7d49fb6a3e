"""The `slurm` launcher: parameters and registration (light: no submitit or torch import).
Implementation: `launcher.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param


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


@hookimpl
def register_launchers(register: Any) -> None:
    register("slurm", "dfml_plugins.launchers.slurm.launcher:SlurmLauncher", params=SlurmLauncherParams,
             help="a Slurm job array through submitit (`executor=local`: submitit's LocalExecutor); "
                  "needs dfml-bench[slurm]")
