"""Few-shot datasets held in memory as uint8 tensors, and seeded episodic task sampling."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from dfml_bench.errors import DataError
from dfml_bench.seeding import derive_seed

SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class ImageSplit:
    """The images of one meta-split: uint8 [N, 3, H, W], labels indexing `class_names`."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError("an ImageSplit holds uint8 images of shape [N, C, H, W].")
        if self.labels.shape[0] != self.images.shape[0]:
            raise DataError("an ImageSplit needs exactly one label per image.")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclasses.dataclass
class FewShotDataset:
    """A dataset split into disjoint meta-train / meta-val / meta-test classes."""

    name: str
    splits: dict[str, ImageSplit]
    image_size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def split(self, name: str) -> ImageSplit:
        if name not in self.splits:
            raise DataError(f"dataset '{self.name}' has no '{name}' split.")
        return self.splits[name]


@dataclasses.dataclass
class Task:
    """One N-way few-shot task: float inputs on the device, labels 0..ways-1.

    Distillation tasks also carry teacher probabilities (`support_t`, `query_t`, [N, ways]).
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    support_t: torch.Tensor | None = None
    query_t: torch.Tensor | None = None


class Normalizer:
    """uint8 images -> normalised float inputs (optionally resized) on a device."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
                 size: int | None = None):
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.size = size

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.from_unit(images.to(self.mean.device, non_blocking=True).float().div_(255.0))

    def from_unit(self, x: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """[0,1] float images -> normalised model inputs (resized to `size` or the normaliser's size)."""
        size = size or self.size
        if size is not None and x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std


def class_offsets(datasets: list[FewShotDataset]) -> list[int]:
    """Global class id offset of each dataset's meta-train classes (MH: CIFAR 0-63, Mini 64-127, ...)."""
    offsets, total = [], 0
    for d in datasets:
        offsets.append(total)
        total += d.split("train").num_classes
    return offsets


class ClassImages:
    """The real meta-train images of each global class id (the numbering of `APIInfo.classes`)."""

    def __init__(self, datasets: list[FewShotDataset]):
        self._splits = [d.split("train") for d in datasets]
        self._offsets = class_offsets(datasets)
        self._by_class = [[torch.nonzero(s.labels == c).flatten() for c in range(s.num_classes)]
                          for s in self._splits]

    def sample(self, global_class: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """`n` uint8 images [n, 3, H, W] of the class, without replacement while the class has enough."""
        for split, offset, by_class in zip(self._splits, self._offsets, self._by_class):
            if offset <= global_class < offset + split.num_classes:
                idx = by_class[global_class - offset]
                g = generator.device
                pick = (torch.randperm(len(idx), generator=generator, device=g)[:n] if len(idx) >= n
                        else torch.randint(len(idx), (n,), generator=generator, device=g))
                return split.images[idx[pick.cpu()]]
        raise DataError(f"global class id {global_class} is not a meta-train class of this scenario "
                        f"({self._offsets[-1] + self._splits[-1].num_classes} classes).")


class EpisodeSampler:
    """Seeded N-way K-shot Q-query episodes from one split.

    Episode ``i`` depends only on (seed, i) and the split's content, so the evaluation
    episodes of a seed are identical across runs and methods.
    """

    def __init__(self, split: ImageSplit, ways: int, shots: int, queries: int, seed: int,
                 normalizer: Normalizer):
        self.split = split
        self.ways, self.shots, self.queries, self.seed = ways, shots, queries, seed
        self.normalizer = normalizer
        labels = split.labels
        self.by_class = [torch.nonzero(labels == c).flatten() for c in range(split.num_classes)]
        need = shots + queries
        self.eligible = [c for c, idx in enumerate(self.by_class) if len(idx) >= need]
        if len(self.eligible) < ways:
            raise DataError(f"{ways}-way {shots}-shot {queries}-query episodes need {ways} classes "
                            f"with at least {need} images; this split has {len(self.eligible)}.")

    def indices(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image indices (support, query) of episode `index`, class-major order."""
        g = torch.Generator().manual_seed(derive_seed("episode", self.seed, index))
        pick = torch.randperm(len(self.eligible), generator=g)[: self.ways]
        support, query = [], []
        for c in pick.tolist():
            idx = self.by_class[self.eligible[c]]
            chosen = idx[torch.randperm(len(idx), generator=g)[: self.shots + self.queries]]
            support.append(chosen[: self.shots])
            query.append(chosen[self.shots:])
        return torch.cat(support), torch.cat(query)

    def episode(self, index: int) -> Task:
        """Episode `index` as a Task on the normaliser's device."""
        s_idx, q_idx = self.indices(index)
        device = self.normalizer.mean.device
        ys = torch.arange(self.ways, device=device).repeat_interleave(self.shots)
        yq = torch.arange(self.ways, device=device).repeat_interleave(self.queries)
        images = self.split.images
        return Task(self.normalizer(images[s_idx]), ys, self.normalizer(images[q_idx]), yq)
