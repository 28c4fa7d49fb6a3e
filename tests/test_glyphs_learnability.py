"""The embedded data is learnable but not trivial, seen through the dataset plugin."""

from __future__ import annotations

from pathlib import Path

import torch

from dfml_bench.data import EpisodeSampler, Normalizer
from dfml_plugins.datasets.glyphs import GlyphsParams
from dfml_plugins.datasets.glyphs.dataset import build_glyphs
from dfml_plugins.models.conv4.model import Conv4


def test_dataset_plugin_splits_classes_and_relabels(glyph_cache: Path) -> None:
    data = build_glyphs(GlyphsParams(domain="letters", instances_per_class=20), None, glyph_cache)
    names = [set(data.split(s).class_names) for s in ("train", "val", "test")]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    for s in ("train", "val", "test"):
        split = data.split(s)
        assert split.labels.min() == 0 and split.labels.max() == split.num_classes - 1
        assert torch.bincount(split.labels).eq(20).all()
    assert data.image_size == 32 and all(0.01 < m < 0.99 for m in data.mean)


def test_conv4_prototype_baseline_is_well_below_perfect(glyph_cache: Path) -> None:
    """Nearest-prototype on random conv4 features, 5-way 1-shot: above chance, well below 100%."""
    data = build_glyphs(GlyphsParams(domain="letters", instances_per_class=20), None, glyph_cache)
    sampler = EpisodeSampler(data.split("test"), 5, 1, 5, 0, Normalizer(data.mean, data.std, torch.device("cpu")))
    torch.manual_seed(0)
    net = Conv4(5, width=32, image_size=32)
    net.eval()
    correct = total = 0
    with torch.no_grad():
        for i in range(100):
            task = sampler.episode(i)
            feats_s = net.features(task.support_x).flatten(1)
            feats_q = net.features(task.query_x).flatten(1)
            pred = torch.cdist(feats_q, feats_s).argmin(1)  # 1-shot: the support image is the prototype
            correct += (pred == task.query_y).sum().item()
            total += len(pred)
    acc = 100 * correct / total
    assert 25 < acc < 80, acc
