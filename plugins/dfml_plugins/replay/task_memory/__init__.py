"""The `task_memory` and `none` replay strategies: parameters and registration (light: no torch
import). Implementation: `replay.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param


@dataclass
class TaskMemoryParams:
    capacity_per_class: int = param(600, "images kept per global class (a ring: 20 batches of 30 in the paper)", min=1)
    remember: str = param("all", "recovered images that enter the memory: all (docs/protocol.md) or agreed (those the "
                          "API labels as their target, from the outputs already queried)", choices=("all", "agreed"))


@dataclass
class NoReplayParams:
    pass


@hookimpl
def register_replay_strategies(register: Any) -> None:
    register("task_memory", "dfml_plugins.replay.task_memory.replay:TaskMemory", params=TaskMemoryParams,
             help="per-class ring buffer of recovered uint8 images in memory; tasks mix APIs and datasets")
    register("none", "dfml_plugins.replay.task_memory.replay:NoReplay", params=NoReplayParams,
             help="no replay: every meta-iteration queries APIs")
