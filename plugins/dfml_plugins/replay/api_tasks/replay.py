"""Replay of kept API tasks (not in docs/protocol.md): bi-level KD again on a recent API task.

The strategy keeps the last `keep` API tasks whose support set the API labels as their
targets at least `keep_agreement` % of the time (from the outputs already queried), as uint8
images with their cached API outputs. A replay draws one of them uniformly; it is distilled
from those outputs (no queries) in the class order the method draws for it, and adapts on K
support shots per class drawn afresh (`replay_support=shots`) or on all of them.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import torch

from dfml_bench.images import to_uint8
from dfml_bench.interfaces import ApiTask, ReplayDraw, ReplayStrategy
from dfml_plugins.replay.api_tasks import ApiTasksParams


@dataclasses.dataclass
class KeptTask:
    """An API task kept for replay: uint8 support / query images and their cached API outputs."""

    domain: int
    support: torch.Tensor
    support_targets: torch.Tensor
    query: torch.Tensor
    query_targets: torch.Tensor
    support_labels: torch.Tensor  # target class (API output position) of each support image


class ApiTasks(ReplayStrategy):
    def __init__(self, params: ApiTasksParams):
        self.p = params
        self.kept: deque[KeptTask] = deque(maxlen=params.keep)

    def observe(self, task: ApiTask) -> None:
        if task.support.agreement >= self.p.keep_agreement:
            self.kept.append(KeptTask(task.domain, to_uint8(task.support.images), task.support_targets.detach(),
                                      to_uint8(task.query.images), task.query_targets.detach(),
                                      task.support.labels.cpu()))

    def ready(self, ways: int) -> bool:
        return bool(self.kept)

    def draw(self, ways: int, shots: int, queries: int, generator: torch.Generator,
             class_order: Callable[[], torch.Tensor]) -> ReplayDraw:
        kept = self.kept[int(torch.randint(len(self.kept), (1,), generator=generator))]
        order = class_order()
        pick = self.support_pick(kept, shots, generator)
        return ReplayDraw([kept.support[pick]], [kept.query], [kept.domain],
                          kept.support_targets[pick][:, order], kept.query_targets[:, order])

    def support_pick(self, kept: KeptTask, shots: int, generator: torch.Generator) -> torch.Tensor | slice:
        """Indices of the support images a replay adapts on: all, or `shots` per class drawn afresh."""
        if self.p.replay_support == "all":
            return slice(None)
        picks = []
        for c in kept.support_labels.unique().tolist():
            members = torch.nonzero(kept.support_labels == c).flatten()
            chosen = torch.randperm(len(members), generator=generator)[:shots]
            picks.append(members[chosen])
        return torch.cat(picks).to(kept.support.device)

    def state_dict(self) -> dict[str, Any]:
        return {"kept": [dataclasses.astuple(k) for k in self.kept]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.kept.clear()
        self.kept.extend(KeptTask(*k) for k in state["kept"])
