"""The `api_tasks` replay strategy: parameters and registration (light: no torch import).
Implementation: `replay.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param


@dataclass
class ApiTasksParams:
    keep: int = param(32, "the most recent API tasks kept for replay", min=1)
    keep_agreement: float = param(80.0, "keep an API task only if the API labels at least this % of its recovered "
                                  "support images as their targets (0: keep all; uses the outputs already queried)",
                                  min=0, max=100)
    replay_support: str = param("shots", "support images a replayed task adapts on: shots (the run's K per class, "
                                "drawn afresh per replay, so replayed tasks have the test tasks' support size) or all",
                                choices=("shots", "all"))


@hookimpl
def register_replay_strategies(register: Any) -> None:
    register("api_tasks", "dfml_plugins.replay.api_tasks.replay:ApiTasks", params=ApiTasksParams,
             help="the most recent API tasks with their cached API outputs, replayed by bi-level KD again "
                  "(only tasks whose support set the API recognises; K support shots per class)")
