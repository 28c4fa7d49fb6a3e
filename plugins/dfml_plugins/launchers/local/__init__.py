"""The `local` launcher: parameters and registration (light: no torch import). Implementation: `launcher.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param


@dataclass
class LocalLauncherParams:
    workers: int = param(1, "runs executed at once, each in its own process (1: one after another, in this process)",
                        min=1)
    threads: int = param(0, "torch threads per run (0: an equal share of this machine's cores with workers > 1, "
                         "torch's default otherwise)", min=0)


@hookimpl
def register_launchers(register: Any) -> None:
    register("local", "dfml_plugins.launchers.local.launcher:LocalLauncher", params=LocalLauncherParams,
             help="this machine: runs one after another, or `workers` processes each pinned to a share of the cores")
