"""The embedded `glyphs` dataset: characters rendered from matplotlib's fonts (no download)."""

from __future__ import annotations

from pathlib import Path

import torch

from dfml_bench.data import SPLITS, FewShotDataset, ImageSplit
from dfml_plugins.datasets.glyphs import GlyphsParams
from dfml_plugins.datasets.glyphs.render import GlyphSpec, load_domain


#: Render seed offset of each instance: `dev` renders with the `seed` parameter itself (the data every
#: run used before instances existed), `sealed` with seed + 1000000 (other images and class split).
INSTANCE_SEED_OFFSET = {"dev": 0, "sealed": 1_000_000}


def render_seed(params: GlyphsParams) -> int:
    """The seed the domain is rendered and split with: the instance's offset plus `seed`."""
    return INSTANCE_SEED_OFFSET[params.instance] + params.seed


def build_glyphs(params: GlyphsParams, data_root: Path | None, cache_dir: Path) -> FewShotDataset:
    """Render (or load from the cache) one glyph domain, split into meta-train/val/test classes.

    Normalisation statistics are the per-channel mean/std of the meta-train images.
    """
    spec = GlyphSpec(domain=params.domain, seed=render_seed(params), instances_per_class=params.instances_per_class,
                     image_size=params.image_size)
    domain = load_domain(spec, Path(cache_dir) / "glyphs")
    splits = {}
    for split in SPLITS:
        classes = domain.splits[split]
        remap = torch.full((len(domain.class_names),), -1, dtype=torch.long)
        remap[torch.tensor(classes)] = torch.arange(len(classes))
        keep = remap[domain.labels] >= 0
        splits[split] = ImageSplit(domain.images[keep].contiguous(), remap[domain.labels[keep]],
                                   [domain.class_names[c] for c in classes])
    train = splits["train"].images.float().div_(255)
    mean = tuple(train.mean(dim=(0, 2, 3)).tolist())
    std = tuple(train.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    return FewShotDataset(f"glyphs-{params.domain}", splits, domain.images.shape[-1], mean, std)  # type: ignore[arg-type]
