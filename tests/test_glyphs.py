"""Tests of the embedded `glyphs` dataset renderer (dfml_plugins.datasets.glyphs.render)."""

from __future__ import annotations

import dataclasses
import itertools
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

from dfml_plugins.datasets.glyphs import render
from dfml_plugins.datasets.glyphs.charsets import HAND_EXCLUDED
from dfml_plugins.datasets.glyphs.render import (
    DEDUPE_THRESHOLD,
    DOMAINS,
    GlyphDomain,
    GlyphSpec,
    domain_classes,
    load_domain,
    native_size,
    render_domain,
)

SMALL = 3  # instances per class for the rendering tests


@pytest.fixture(scope="module")
def small_domains() -> dict[str, GlyphDomain]:
    return {d: render_domain(GlyphSpec(d, instances_per_class=SMALL)) for d in DOMAINS}


# ---------------------------------------------------------------- classes ---


def test_unknown_domain_is_a_clear_value_error() -> None:
    for call in (lambda: GlyphSpec("runes"), lambda: native_size("runes"),
                 lambda: domain_classes("runes")):
        with pytest.raises(ValueError, match="letters, symbols, scripts"):
            call()


def test_invalid_spec_fields_are_rejected() -> None:
    with pytest.raises(ValueError):
        GlyphSpec("letters", seed=-1)
    with pytest.raises(ValueError):
        GlyphSpec("letters", instances_per_class=0)
    with pytest.raises(ValueError):
        GlyphSpec("letters", image_size=4)
    assert GlyphSpec("letters", seed=np.int64(2)).seed == 2


def test_domains_are_large_disjoint_and_deterministic() -> None:
    seen: set[str] = set()
    for domain in DOMAINS:
        chars = domain_classes(domain)
        assert len(chars) >= 100, domain
        assert len(set(chars)) == len(chars)
        assert not seen & set(chars), f"{domain} shares characters with another domain"
        seen |= set(chars)
        assert domain_classes(domain) == chars
        for ch in chars:
            assert len(ch) == 1
            assert unicodedata.decomposition(ch) == "", f"{ch!r} is a decomposable variant"
            assert ch not in HAND_EXCLUDED


def test_every_class_is_drawn_by_at_least_two_real_faces() -> None:
    for domain in DOMAINS:
        for ch in domain_classes(domain):
            faces = render.char_faces(ch)
            assert len(faces) >= 2, ch
            assert not any(f.startswith(("LastResort", "STIXSiz")) for f in faces)
    # Computer Modern cmaps are only trusted where the glyph name matches.
    assert "cmr10.ttf" in render.char_faces("A")
    assert "cmmi10.ttf" not in render.char_faces("2")  # old-style figure glyph
    assert "cmr10.ttf" not in render.char_faces("Γ")  # mapped to U+00A1 there
    assert len(render.char_faces("A")) >= 15


def test_no_near_duplicate_classes() -> None:
    chars = [ch for d in DOMAINS for ch in domain_classes(d)]
    sims = render.similarity_matrix(chars)
    np.fill_diagonal(sims, 0.0)
    i, j = np.unravel_index(np.argmax(sims), sims.shape)
    assert sims[i, j] < DEDUPE_THRESHOLD, (chars[i], chars[j], sims[i, j])
    # The matrix agrees with the pairwise function.
    for a, b in [(chars[0], chars[1]), (chars[5], chars[-3])]:
        k, m = chars.index(a), chars.index(b)
        assert sims[k, m] == pytest.approx(render.glyph_similarity(a, b))


def test_similarity_flags_classic_look_alikes() -> None:
    for a, b in ["AΑ", "AА", "ГΓ", "cC", "oO", "sS", "xX", "zZ", "lI", "ρp", "кК", "0O"]:
        assert render.glyph_similarity(a, b) >= DEDUPE_THRESHOLD, (a, b)
    for a, b in ["EF", "OQ", "PR", "bd", "AΛ", "⊂⊃", "≤≥"]:
        assert render.glyph_similarity(a, b) < DEDUPE_THRESHOLD, (a, b)
    assert render.glyph_similarity("Ж", "Ж") == 1.0
    letters = set(domain_classes("letters"))
    for dropped in "cosvwxz01lΑАΓΟοрΡ":
        assert dropped not in letters
    # exactly one representative of each Latin/Greek/Cyrillic homoglyph group
    assert sum(ch in letters for ch in "AΑА") == 1
    assert sum(ch in letters for ch in "ГΓ") <= 1


# ----------------------------------------------------------------- splits ---


def test_splits_are_disjoint_covering_and_large_enough(small_domains) -> None:
    for domain, dom in small_domains.items():
        splits = dom.splits
        n = len(dom.class_names)
        assert set(splits) == {"train", "val", "test"}
        parts = [set(splits[k]) for k in ("train", "val", "test")]
        assert sum(len(p) for p in parts) == n
        assert set().union(*parts) == set(range(n))
        assert len(splits["train"]) >= 64 and len(splits["val"]) >= 16
        assert len(splits["test"]) >= 20, domain


def test_split_sizes_for_exactly_100_classes() -> None:
    sizes = {k: len(v) for k, v in render._splits(100, 0, "letters").items()}
    assert sizes == {"train": 64, "val": 16, "test": 20}


def test_splits_depend_on_seed_and_domain_only(small_domains) -> None:
    dom = small_domains["letters"]
    other_ipc = render._splits(len(dom.class_names), 0, "letters")
    assert other_ipc == dom.splits
    assert render._splits(len(dom.class_names), 1, "letters") != dom.splits


# -------------------------------------------------------------- rendering ---


def test_shapes_dtypes_and_native_sizes(small_domains) -> None:
    assert native_size("letters") == native_size("symbols") == 32
    assert native_size("scripts") == 48
    for domain, dom in small_domains.items():
        n_cls = len(dom.class_names)
        size = native_size(domain)
        assert dom.native_size == size
        assert dom.images.dtype == torch.uint8
        assert dom.images.shape == (n_cls * SMALL, 3, size, size)
        assert dom.images.is_contiguous()
        assert dom.labels.dtype == torch.int64
        assert torch.equal(dom.labels, torch.arange(n_cls).repeat_interleave(SMALL))
        assert len(set(dom.class_names)) == n_cls
        for name, ch in zip(dom.class_names, domain_classes(domain)):
            assert re.fullmatch(r"U\+[0-9A-F]{4,6} .", name) and name.endswith(ch)


def test_image_size_override() -> None:
    dom = render_domain(GlyphSpec("scripts", instances_per_class=1, image_size=24))
    assert dom.images.shape[-2:] == (24, 24)
    assert dom.native_size == 48


def test_same_spec_same_bytes_and_seed_changes_images(small_domains) -> None:
    spec = GlyphSpec("letters", instances_per_class=SMALL)
    again = render_domain(spec)
    assert torch.equal(again.images, small_domains["letters"].images)
    other = render_domain(dataclasses.replace(spec, seed=1))
    assert other.images.shape == again.images.shape
    assert not torch.equal(other.images, again.images)
    # An instance does not depend on how many instances are rendered.
    more = render_domain(GlyphSpec("letters", instances_per_class=SMALL + 2))
    n = SMALL + 2
    assert torch.equal(more.images[n : n + SMALL], again.images[SMALL : 2 * SMALL])


def test_instances_have_visible_ink_and_are_not_clipped(small_domains) -> None:
    for domain, dom in small_domains.items():
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        gray = (dom.images.float() * luma).sum(dim=1)
        spread = gray.flatten(1).quantile(0.99, dim=1) - gray.flatten(1).quantile(0.01, dim=1)
        assert spread.min() > 60, domain  # every image shows a glyph, none is blank
    # letters: white glyph on black, so the outermost ring is background
    img = small_domains["letters"].images.float().mean(dim=1)
    ring = torch.cat([img[:, 0], img[:, -1], img[:, :, 0], img[:, :, -1]], dim=1)
    assert ring.mean(dim=1).max() < 80


def _border(images: torch.Tensor, width: int = 2) -> torch.Tensor:
    mask = torch.ones(images.shape[-2:], dtype=torch.bool)
    mask[width:-width, width:-width] = False
    return images.float()[..., mask]  # [N, 3, P]


def test_image_statistics_differ_between_domains(small_domains) -> None:
    bg_mean = {d: _border(dom.images).mean().item() for d, dom in small_domains.items()}
    bg_std = {d: _border(dom.images).std(dim=-1).mean().item() for d, dom in small_domains.items()}
    assert bg_mean["letters"] < 50
    assert bg_mean["symbols"] > 90 and bg_mean["scripts"] > 90
    assert bg_std["scripts"] > 1.5 * bg_std["symbols"]  # textured vs plain background
    letters = small_domains["letters"].images
    assert torch.equal(letters[:, 0], letters[:, 1]) and torch.equal(letters[:, 1], letters[:, 2])
    symbols = small_domains["symbols"].images.float()
    assert (symbols[:, 0] - symbols[:, 1]).abs().mean() > 10  # coloured


def _nn_accuracy(dom: GlyphDomain, polarity_invariant: bool, episodes: int = 200) -> float:
    """5-way 1-shot nearest-neighbour accuracy in pixel space on the test classes."""
    rng = np.random.default_rng(0)
    classes = np.array(dom.splits["test"])
    per_class = dom.images.shape[0] // len(dom.class_names)
    x = dom.images.float().mean(dim=1).flatten(1)
    x = x - x.mean(dim=1, keepdim=True)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)
    correct = 0
    for _ in range(episodes):
        way = rng.choice(classes, 5, replace=False)
        pick = np.stack([c * per_class + rng.choice(per_class, 2, replace=False) for c in way])
        sims = x[pick[:, 1]] @ x[pick[:, 0]].T
        if polarity_invariant:
            sims = sims.abs()
        correct += int((sims.argmax(dim=1) == torch.arange(5)).sum())
    return correct / (5 * episodes)


def test_nearest_neighbour_is_above_chance_but_not_perfect() -> None:
    letters = render_domain(GlyphSpec("letters", instances_per_class=5))
    acc = _nn_accuracy(letters, polarity_invariant=False)
    assert 0.3 < acc < 0.95, acc
    # random fg/bg colours make raw pixels useless, shape still carries the class
    symbols = render_domain(GlyphSpec("symbols", instances_per_class=5))
    acc = _nn_accuracy(symbols, polarity_invariant=True)
    assert 0.3 < acc < 0.95, acc


# ------------------------------------------------------------------ cache ---


def test_cache_key_changes_with_every_field() -> None:
    base = GlyphSpec("letters")
    key = base.cache_key()
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    assert GlyphSpec("letters").cache_key() == key
    variants = [
        GlyphSpec("symbols"),
        GlyphSpec("letters", seed=1),
        GlyphSpec("letters", instances_per_class=59),
        GlyphSpec("letters", image_size=28),
        GlyphSpec("letters", image_size=32),  # explicit native size is a different spec
    ]
    keys = [v.cache_key() for v in variants]
    assert key not in keys and len(set(keys)) == len(keys)


def test_cache_key_covers_render_version(monkeypatch) -> None:
    key = GlyphSpec("letters").cache_key()
    monkeypatch.setattr(render, "RENDER_VERSION", render.RENDER_VERSION + 1)
    assert GlyphSpec("letters").cache_key() != key


def test_cache_key_is_cheap_and_follows_the_font_files(tmp_path: Path, monkeypatch) -> None:
    key = GlyphSpec("letters").cache_key()
    render._selection_inputs.cache_clear()

    def no_selection() -> None:
        raise AssertionError("the cache key re-ran the class selection")

    monkeypatch.setattr(render, "_selection", no_selection)
    assert GlyphSpec("letters").cache_key() == key  # from the font files and settings alone
    fonts = tmp_path / "fonts"
    fonts.mkdir()
    for face in render.FACES:
        (fonts / face).symlink_to(render._font_dir() / face)
    monkeypatch.setattr(render, "_font_dir", lambda: fonts)
    render._selection_inputs.cache_clear()
    assert GlyphSpec("letters").cache_key() == key  # same contents elsewhere: the same key
    (fonts / "cmr10.ttf").unlink()
    (fonts / "cmr10.ttf").write_bytes(b"another font")
    render._selection_inputs.cache_clear()
    try:
        assert GlyphSpec("letters").cache_key() != key
    finally:
        render._selection_inputs.cache_clear()


def _assert_same(a: GlyphDomain, b: GlyphDomain) -> None:
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels)
    assert a.class_names == b.class_names
    assert a.splits == b.splits
    assert a.native_size == b.native_size


def test_load_domain_renders_once_then_loads(tmp_path: Path, monkeypatch) -> None:
    spec = GlyphSpec("symbols", instances_per_class=2)
    cache_dir = tmp_path / "cache"
    first = load_domain(spec, cache_dir)
    path = cache_dir / f"glyphs-symbols-{spec.cache_key()}.pt"
    assert [p.name for p in cache_dir.iterdir()] == [path.name]  # no temp file left
    _assert_same(first, render_domain(spec))

    def boom(_spec: GlyphSpec) -> GlyphDomain:
        raise AssertionError("render_domain called on a cache hit")

    monkeypatch.setattr(render, "render_domain", boom)
    second = load_domain(spec, cache_dir)
    _assert_same(first, second)
    assert second.images.is_contiguous()


def test_corrupt_cache_file_is_rerendered(tmp_path: Path) -> None:
    spec = GlyphSpec("letters", instances_per_class=1)
    path = tmp_path / f"glyphs-letters-{spec.cache_key()}.pt"
    path.write_bytes(b"definitely not a torch file")
    dom = load_domain(spec, tmp_path)
    _assert_same(dom, render_domain(spec))
    payload = torch.load(path, weights_only=True)  # replaced by a valid file
    assert torch.equal(payload["images"], dom.images)
    # a truncated file is handled the same way
    path.write_bytes(path.read_bytes()[:100])
    _assert_same(load_domain(spec, tmp_path), dom)


def test_splits_cover_every_pair_of_domains_differently() -> None:
    # different domains shuffle their classes with different streams
    a = render._splits(120, 0, "letters")
    b = render._splits(120, 0, "symbols")
    assert a != b
    for x, y in itertools.combinations(("train", "val", "test"), 2):
        assert not set(a[x]) & set(a[y])
