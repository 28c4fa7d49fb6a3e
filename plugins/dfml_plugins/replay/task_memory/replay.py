"""Task-memory replay (docs/protocol.md section 8): recovered images by global class, in memory.

Each global class keeps a ring of its most recent `capacity_per_class` images as uint8 (the
reference wrote PNGs to disk and re-read them for every task). A replay task draws `ways`
classes among all recovered ones, so classes from different APIs, and in MH from different
datasets, mix ("interpolated tasks"); it is trained on the recovery labels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from dfml_bench.images import to_uint8
from dfml_bench.interfaces import ApiTask, RecoveredSet, ReplayDraw, ReplayStrategy
from dfml_plugins.replay.task_memory import NoReplayParams, TaskMemoryParams


class TaskMemory(ReplayStrategy):
    def __init__(self, params: TaskMemoryParams):
        self.p = params
        self.images: dict[int, torch.Tensor] = {}
        self.domain: dict[int, int] = {}

    def observe(self, task: ApiTask) -> None:
        """Store the support and then the query set under global class ids (filtered by `remember`)."""
        for found in (task.support, task.query):
            self._remember(found, task.classes, task.domain)

    def _remember(self, found: RecoveredSet, classes: tuple[int, ...], domain: int) -> None:
        glob = torch.tensor(classes)[found.labels.cpu()]
        keep = torch.ones(len(glob), dtype=torch.bool) if self.p.remember == "all" else found.agreed().cpu()
        if keep.any():
            self.add(found.images[keep.to(found.images.device)], glob[keep], domain)

    def add(self, images: torch.Tensor, classes: torch.Tensor, domain: int) -> None:
        """Store [0,1] images with their global class ids; `domain` indexes the scenario's datasets."""
        data = to_uint8(images).cpu()
        for c in classes.unique().tolist():
            new = data[(classes == c).cpu()]
            old = self.images.get(c)
            merged = new if old is None or old.shape[-1] != new.shape[-1] else torch.cat([old, new])
            self.images[c] = merged[-self.p.capacity_per_class:].contiguous()
            self.domain[c] = domain

    def num_classes(self) -> int:
        return len(self.images)

    def ready(self, ways: int) -> bool:
        return len(self.images) >= ways

    def draw(self, ways: int, shots: int, queries: int, generator: torch.Generator,
             class_order: Callable[[], torch.Tensor]) -> ReplayDraw:
        return self.sample(ways, shots, queries, generator)  # random classes: their order is random already

    def sample(self, ways: int, shots: int, queries: int, generator: torch.Generator) -> ReplayDraw:
        """Draw `ways` stored classes with `shots` + `queries` images each."""
        classes = sorted(self.images)
        pick = torch.randperm(len(classes), generator=generator)[:ways].tolist()
        support, query, domains = [], [], []
        for c in (classes[i] for i in pick):
            imgs = self.images[c]
            # sample with replacement when a class holds fewer images than the task needs
            if len(imgs) >= shots + queries:
                idx = torch.randperm(len(imgs), generator=generator)[: shots + queries]
            else:
                idx = torch.randint(len(imgs), (shots + queries,), generator=generator)
            support.append(imgs[idx[:shots]])
            query.append(imgs[idx[shots:]])
            domains.append(self.domain[c])
        return ReplayDraw(support, query, domains)

    def state_dict(self) -> dict[str, Any]:
        return {"images": dict(self.images), "domain": dict(self.domain)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.images = {int(k): v for k, v in state["images"].items()}
        self.domain = {int(k): int(v) for k, v in state["domain"].items()}


class NoReplay(ReplayStrategy):
    """Keeps nothing: every meta-iteration is an API task."""

    def __init__(self, params: NoReplayParams | None = None):
        self.params = params

    def observe(self, task: ApiTask) -> None:
        return None

    def ready(self, ways: int) -> bool:
        return False

    def draw(self, ways: int, shots: int, queries: int, generator: torch.Generator,
             class_order: Callable[[], torch.Tensor]) -> ReplayDraw:
        raise RuntimeError("the `none` replay strategy holds no tasks")
