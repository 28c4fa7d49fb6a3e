"""Task-memory replay (PROTOCOL.md section 8): recovered images by global class, in memory.

Each global class keeps a ring of its most recent `capacity_per_class` images as uint8 (the
reference wrote PNGs to disk and re-read them for every task). A replay task draws `ways`
classes among all recovered ones, so classes from different APIs, and in MH from different
datasets, mix ("interpolated tasks").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from dfml_bench.images import to_uint8
from dfml_bench.interfaces import ReplayDraw, ReplayStrategy
from dfml_plugins.params import NoReplayParams, TaskMemoryParams


class TaskMemory(ReplayStrategy):
    def __init__(self, params: TaskMemoryParams):
        self.p = params
        self.images: dict[int, torch.Tensor] = {}
        self.domain: dict[int, int] = {}

    def add(self, images: torch.Tensor, classes: torch.Tensor, domain: int) -> None:
        data = to_uint8(images).cpu()
        for c in classes.unique().tolist():
            new = data[(classes == c).cpu()]
            old = self.images.get(c)
            merged = new if old is None or old.shape[-1] != new.shape[-1] else torch.cat([old, new])
            self.images[c] = merged[-self.p.capacity_per_class:].contiguous()
            self.domain[c] = domain

    def num_classes(self) -> int:
        return len(self.images)

    def can_sample(self, ways: int) -> bool:
        return len(self.images) >= ways

    def sample(self, ways: int, shots: int, queries: int, generator: torch.Generator) -> ReplayDraw:
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
    """No memory: every meta-iteration is an API task."""

    def __init__(self, params: NoReplayParams | None = None):
        self.params = params

    def add(self, images: torch.Tensor, classes: torch.Tensor, domain: int) -> None:
        return None

    def can_sample(self, ways: int) -> bool:
        return False

    def sample(self, ways: int, shots: int, queries: int, generator: torch.Generator) -> ReplayDraw:
        raise RuntimeError("the `none` replay strategy holds no tasks")
