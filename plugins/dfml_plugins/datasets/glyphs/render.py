"""Download-free few-shot glyph dataset rendered from matplotlib's bundled fonts.

A *class* is one Unicode character; an *instance* is that character drawn in
one of the font faces that really contain it, with a random stroke width,
affine jitter, colours/background that depend on the domain, and pixel noise.

Everything is deterministic and independent of rendering order: instance ``i``
of character ``cp`` draws its randomness from
``numpy.random.SeedSequence([seed, domain_id, cp, i])``, the order in which a
class cycles through its font faces from ``[seed, domain_id, _FACE_STREAM + cp]``
and the class split from ``[seed, domain_id, _SPLIT_STREAM]`` (the stream tags
lie above the last Unicode code point, so no two streams share a key).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import numbers
import os
import tempfile
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageFont

from .charsets import CANDIDATES, DOMAIN_ORDER, HAND_EXCLUDED

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "DOMAINS",
    "RENDER_VERSION",
    "DEDUPE_THRESHOLD",
    "GlyphSpec",
    "GlyphDomain",
    "native_size",
    "domain_classes",
    "domain_faces",
    "char_faces",
    "FACES",
    "render_domain",
    "load_domain",
    "glyph_signature",
    "glyph_similarity",
    "similarity_matrix",
    "dedupe_report",
]

DOMAINS: tuple[str, ...] = DOMAIN_ORDER
RENDER_VERSION: int = 2

_NATIVE_SIZE: dict[str, int] = {"letters": 32, "symbols": 32, "scripts": 48}
_DOMAIN_ID: dict[str, int] = {name: i for i, name in enumerate(DOMAINS)}
_FACE_STREAM = 0x110000  # > max code point: keys never collide with instances
_SPLIT_STREAM = 0x220000
_SPLIT_FRACTIONS = (0.64, 0.16, 0.20)

# --------------------------------------------------------------------------
# Fonts
# --------------------------------------------------------------------------

# Faces whose cmap is trusted as is.
_TRUSTED_FACES: tuple[str, ...] = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSansDisplay.ttf",
    "DejaVuSerifDisplay.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "STIXNonUni.ttf",
    "STIXNonUniBol.ttf",
    "STIXNonUniIta.ttf",
    "STIXNonUniBolIta.ttf",
)
# BaKoMa Computer Modern faces: their cmaps map code points to TeX glyphs
# (e.g. cmr10 maps U+00A1 to "Gamma"), so an entry is only accepted when the
# glyph *name* agrees with the code point (Adobe Glyph List).  cmsy10 and
# cmex10 are left out: the only entries that pass are cmsy10's calligraphic
# capitals, which look like other classes (script Y reads as y, U as u).
# LastResortHE (a .notdef-like box for every code point) and the STIXSiz*
# size variants are never used either.
_LEGACY_FACES: tuple[str, ...] = (
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmmi10.ttf",
    "cmti10.ttf",
)
FACES: tuple[str, ...] = _TRUSTED_FACES + _LEGACY_FACES
# Reference faces for the de-duplication bitmaps, in order of preference.
_REFERENCE_FACES: tuple[str, ...] = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "STIXGeneral.ttf")


def _font_dir() -> Path:
    import matplotlib  # only for the data path; never pyplot

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.lru_cache(maxsize=None)
def _all_candidate_codepoints() -> frozenset[int]:
    return frozenset(ord(ch) for text in CANDIDATES.values() for ch in text)


@functools.lru_cache(maxsize=None)
def _face_coverage(face: str) -> frozenset[int]:
    """Candidate code points that ``face`` really draws (cached per process).

    A code point counts when the cmap maps it to a glyph that is not
    ``.notdef`` and has an outline; for the Computer Modern faces the glyph
    name must also decode to that code point.
    """
    from fontTools import agl
    from fontTools.ttLib import TTFont

    path = _font_dir() / face
    if not path.is_file():
        return frozenset()
    # Some bundled fonts carry odd 'head' timestamps that fontTools warns
    # about; keep the log quiet while reading them.
    ft_log = logging.getLogger("fontTools")
    old_level = ft_log.level
    ft_log.setLevel(logging.ERROR)
    tt = TTFont(str(path), lazy=True)
    try:
        cmap = tt.getBestCmap() or {}
        glyf = tt["glyf"] if "glyf" in tt else None
        legacy = face in _LEGACY_FACES
        ok: set[int] = set()
        for cp in _all_candidate_codepoints():
            name = cmap.get(cp)
            if name is None or name == ".notdef":
                continue
            if legacy and agl.toUnicode(name) != chr(cp):
                continue
            if glyf is not None:
                glyph = glyf[name]
                if glyph.numberOfContours == 0:
                    continue
            ok.add(cp)
        return frozenset(ok)
    finally:
        tt.close()
        ft_log.setLevel(old_level)


@functools.lru_cache(maxsize=None)
def _faces_for(cp: int) -> tuple[str, ...]:
    return tuple(face for face in FACES if cp in _face_coverage(face))


@functools.lru_cache(maxsize=256)
def _font(face: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(
        str(_font_dir() / face), size, layout_engine=ImageFont.Layout.BASIC
    )


def _glyph_image(face: str, ch: str, size: int, stroke: int) -> Image.Image | None:
    """Grayscale image of ``ch`` cropped to its ink box (None if no ink)."""
    font = _font(face, size)
    left, top, right, bottom = font.getbbox(ch, stroke_width=stroke)
    pad = 2 + stroke
    img = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(img).text(
        (pad - left, pad - top), ch, font=font, fill=255, stroke_width=stroke, stroke_fill=255
    )
    box = img.getbbox()
    if box is None:
        return None
    return img.crop(box)


# --------------------------------------------------------------------------
# Class selection (automatic near-duplicate removal)
# --------------------------------------------------------------------------

_SIG_SIZE = 32
_SIG_RENDER = 128
_SIG_RADIUS = 2
#: Near-duplicate threshold on :func:`glyph_similarity`: a candidate is
#: dropped when, in one of the two normalised 32x32 views, at least 96% of
#: each glyph's ink lies within 2 px (1/16 of the side) of the other's ink.
#: Calibrated on hand-labelled pairs: look-alikes score >= 0.96 (K/kappa
#: 0.967, u/U 0.992, rho/p 0.997; c/C, o/O, 0/O and cross-script homoglyphs
#: 1.0) while clearly distinct pairs that share most of their outline score
#: <= 0.956 (E/F 0.86, O/Q 0.93, D/O 0.94, double arrows 0.956).  Between 0.96
#: and 0.97 true look-alikes (Latin K vs Cyrillic K, Cyrillic ye vs open E)
#: and merely similar pairs (8/B, 5/S, psi/phi) mix, so the threshold errs on
#: the side of dropping.
DEDUPE_THRESHOLD: float = 0.96


def _disk_offsets(radius: int) -> list[tuple[int, int]]:
    return [
        (dy, dx)
        for dy in range(-radius, radius + 1)
        for dx in range(-radius, radius + 1)
        if dy * dy + dx * dx <= radius * radius + radius
    ]


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a 2-D bool mask by a digital disk of ``radius``."""
    h, w = mask.shape
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    for dy, dx in _disk_offsets(radius):
        out |= padded[radius + dy : radius + dy + h, radius + dx : radius + dx + w]
    return out


_SIG_MAX_STRETCH = 2.0


def _square_bitmap(glyph: Image.Image, stretch: float) -> np.ndarray:
    """Glyph centred in a square, its short side first stretched by <= ``stretch``."""
    w, h = glyph.size
    if stretch > 1.0:
        if w < h:
            w = min(h, round(w * stretch))
        else:
            h = min(w, round(h * stretch))
        glyph = glyph.resize((w, h), Image.Resampling.BILINEAR)
    side = max(w, h)
    square = Image.new("L", (side, side), 0)
    square.paste(glyph, ((side - w) // 2, (side - h) // 2))
    small = np.asarray(square.resize((_SIG_SIZE, _SIG_SIZE), Image.Resampling.BOX))
    return small > 89  # >= 35% ink coverage


@functools.lru_cache(maxsize=None)
def glyph_signature(ch: str) -> tuple[np.ndarray, np.ndarray]:
    """Normalised ink bitmaps of ``ch`` and their dilations, for near-duplicate tests.

    The glyph is drawn in the first reference face (DejaVu Sans, then DejaVu
    Serif, STIX) that contains it and cropped to its ink box; like the
    instance renderer this discards the glyph's size.  Two 32x32 binary views
    are made: (0) centred in a square with the aspect ratio kept, and (1) with
    the short side first stretched by up to 2x (so that e.g. 0/O, or the same
    sign drawn wider in one block than another, are compared fairly).
    Returns ``(ink, dilated)``, each of shape [2, 1024] (bool), where
    ``dilated`` is the ink dilated by a 2 px disk.
    """
    cp = ord(ch)
    faces = [f for f in _REFERENCE_FACES if cp in _face_coverage(f)] or list(_faces_for(cp))
    if not faces:
        raise ValueError(f"no font face contains {ch!r}")
    glyph = _glyph_image(faces[0], ch, _SIG_RENDER, 0)
    if glyph is None:
        raise ValueError(f"{ch!r} has no ink")
    views = [_square_bitmap(glyph, 1.0), _square_bitmap(glyph, _SIG_MAX_STRETCH)]
    ink = np.stack([v.ravel() for v in views])
    dilated = np.stack([_dilate(v, _SIG_RADIUS).ravel() for v in views])
    ink.flags.writeable = False
    dilated.flags.writeable = False
    return ink, dilated


def _similarities(ink: np.ndarray, dil: np.ndarray, inks: np.ndarray, dils: np.ndarray) -> np.ndarray:
    """Vectorised :func:`glyph_similarity` of one signature ([2, P]) against many ([n, 2, P])."""
    best = np.zeros(inks.shape[0])
    for v in range(ink.shape[0]):
        x = ink[v].astype(np.float64)
        out_x = (~dils[:, v]).astype(np.float64) @ x / max(x.sum(), 1.0)
        out_k = (inks[:, v] & ~dil[v]).sum(axis=1) / np.maximum(inks[:, v].sum(axis=1), 1)
        best = np.maximum(best, 1.0 - np.maximum(out_x, out_k))
    return best


def similarity_matrix(chars: Sequence[str]) -> np.ndarray:
    """Pairwise :func:`glyph_similarity` of ``chars`` as an [n, n] float array."""
    sigs = [glyph_signature(ch) for ch in chars]
    if not sigs:
        return np.zeros((0, 0))
    inks = np.stack([s[0] for s in sigs])
    dils = np.stack([s[1] for s in sigs])
    return np.stack([_similarities(i, d, inks, dils) for i, d in sigs])


def glyph_similarity(a: str, b: str) -> float:
    """Tolerant ink overlap of two characters in [0, 1] (1.0 = same shape).

    ``1 - max(fraction of a's ink farther than 2 px from b's ink, and vice
    versa)`` on the normalised 32x32 bitmaps of :func:`glyph_signature`,
    maximised over the two views (aspect kept / short side stretched).
    """
    ink_a, dil_a = glyph_signature(a)
    ink_b, dil_b = glyph_signature(b)
    return float(_similarities(ink_a, dil_a, ink_b[None], dil_b[None])[0])


def _is_decomposable(ch: str) -> bool:
    return unicodedata.decomposition(ch) != ""


@functools.lru_cache(maxsize=None)
def _selection() -> tuple[dict[str, tuple[str, ...]], dict[str, Any]]:
    """Kept classes per domain and a report of what was dropped and why."""
    kept: dict[str, list[str]] = {d: [] for d in DOMAINS}
    kept_inks: list[np.ndarray] = []
    kept_dils: list[np.ndarray] = []
    kept_chars: list[str] = []
    seen: set[str] = set()
    report: dict[str, Any] = {
        d: {"candidates": 0, "repeated": [], "hand": [], "decomposable": [],
            "few_faces": [], "similar": []}
        for d in DOMAINS
    }
    for domain in DOMAINS:
        rep = report[domain]
        for ch in CANDIDATES[domain]:
            rep["candidates"] += 1
            if ch in seen:
                rep["repeated"].append(ch)
                continue
            seen.add(ch)
            if ch in HAND_EXCLUDED:
                rep["hand"].append(ch)
                continue
            if _is_decomposable(ch):
                rep["decomposable"].append(ch)
                continue
            if len(_faces_for(ord(ch))) < 2:
                rep["few_faces"].append(ch)
                continue
            ink, dil = glyph_signature(ch)
            if kept_inks:
                sims = _similarities(ink, dil, np.stack(kept_inks), np.stack(kept_dils))
                j = int(np.argmax(sims))
                if sims[j] >= DEDUPE_THRESHOLD:
                    rep["similar"].append((ch, kept_chars[j], float(sims[j])))
                    continue
            kept_inks.append(ink)
            kept_dils.append(dil)
            kept_chars.append(ch)
            kept[domain].append(ch)
    return {d: tuple(v) for d, v in kept.items()}, report


def dedupe_report() -> dict[str, Any]:
    """What the class selection dropped per domain (for documentation/tests)."""
    return _selection()[1]


# --------------------------------------------------------------------------
# Public helpers
# --------------------------------------------------------------------------


def _check_domain(domain: str) -> None:
    if domain not in _DOMAIN_ID:
        raise ValueError(
            f"unknown glyphs domain {domain!r}; valid domains are: {', '.join(DOMAINS)}."
        )


def native_size(domain: str) -> int:
    """Native image side length of ``domain`` in pixels."""
    _check_domain(domain)
    return _NATIVE_SIZE[domain]


def domain_classes(domain: str) -> list[str]:
    """Characters of ``domain`` after de-duplication, in deterministic order."""
    _check_domain(domain)
    return list(_selection()[0][domain])


def char_faces(ch: str) -> list[str]:
    """Font files (in :data:`FACES` order) that really draw candidate ``ch``.

    Only candidate characters (see :mod:`.charsets`) are indexed; any other
    character gets an empty list.
    """
    return list(_faces_for(ord(ch)))


def domain_faces(domain: str) -> list[str]:
    """Font files used by at least one class of ``domain`` (in FACES order)."""
    used = {f for ch in domain_classes(domain) for f in _faces_for(ord(ch))}
    return [f for f in FACES if f in used]


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _class_name(ch: str) -> str:
    return f"U+{ord(ch):04X} {ch}"


@dataclass(frozen=True)
class GlyphSpec:
    """Everything that determines a rendered glyph domain."""

    domain: str
    seed: int = 0
    instances_per_class: int = 60
    image_size: int | None = None

    def __post_init__(self) -> None:
        _check_domain(self.domain)
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}.")
        if not _is_int(self.instances_per_class) or self.instances_per_class < 1:
            raise ValueError(
                f"instances_per_class must be a positive int, got {self.instances_per_class!r}."
            )
        if self.image_size is not None and (
            not _is_int(self.image_size) or not 8 <= self.image_size <= 256
        ):
            raise ValueError(f"image_size must be None or an int in [8, 256], got {self.image_size!r}.")
        # Normalise numpy integers etc. to plain ints (hashing, JSON cache key).
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "instances_per_class", int(self.instances_per_class))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", int(self.image_size))

    @property
    def size(self) -> int:
        """Effective image size (native size when ``image_size`` is None)."""
        return self.image_size if self.image_size is not None else native_size(self.domain)

    def cache_key(self) -> str:
        """First 16 hex chars of a sha256 over every input of the renderer.

        Only cheap inputs: the font files' contents (every face the class selection may use),
        the candidate characters and selection settings, and the render parameters; not the
        selection itself, which renders every candidate (seconds on every start).
        """
        payload = {
            "domain": self.domain,
            "seed": self.seed,
            "instances_per_class": self.instances_per_class,
            "image_size": self.image_size,
            "render_version": RENDER_VERSION,
            "pillow": PIL.__version__,
            "numpy": np.__version__,
            "selection": _selection_inputs(),
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _selection_inputs() -> dict[str, Any]:
    """What the class selection (:func:`_selection`) and the face lists depend on: each face's
    content hash (or None when missing), the candidates, the exclusions, the de-duplication
    threshold and the fontTools version that reads the cmaps. ~0.1 s, once per process."""
    import fontTools

    fonts = {}
    for face in FACES:
        path = _font_dir() / face
        fonts[face] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return {"fonts": fonts, "candidates": {d: CANDIDATES[d] for d in DOMAINS},
            "hand_excluded": sorted(HAND_EXCLUDED), "dedupe_threshold": DEDUPE_THRESHOLD,
            "fonttools": fontTools.version}


@dataclass
class GlyphDomain:
    """A rendered domain: images grouped by class, labels and class splits."""

    images: "torch.Tensor"  # uint8 [N, 3, H, W]
    labels: "torch.Tensor"  # int64 [N]
    class_names: list[str]
    splits: dict[str, list[int]]
    native_size: int


# --------------------------------------------------------------------------
# Instance rendering
# --------------------------------------------------------------------------

_SUPERSAMPLE = 4  # draw at 4x the target size, then box-downsample
_MARGIN = 0.06  # free border (fraction of the side) at scale 1.0


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(key)))


def _glyph_mask(ch: str, face: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Float mask in [0, 1] of shape [size, size] with the jittered glyph."""
    k = _SUPERSAMPLE
    canvas = size * k
    font_px = 3 * size
    stroke = int(rng.integers(0, max(1, round(0.03 * font_px)) + 1))
    angle = math.radians(rng.uniform(-15.0, 15.0))
    shear = rng.uniform(-0.2, 0.2)
    scale = rng.uniform(0.75, 1.05)
    tx, ty = rng.uniform(-1.0, 1.0, size=2) * 0.08 * canvas

    glyph = _glyph_image(face, ch, font_px, stroke)
    if glyph is None:  # pragma: no cover - coverage check guarantees ink
        return np.zeros((size, size), np.float32)
    w, h = glyph.size
    cos, sin = math.cos(angle), math.sin(angle)
    # Linear part: rotation after horizontal shear.
    a = np.array([[cos, cos * shear - sin], [sin, sin * shear + cos]])
    corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]], dtype=np.float64) / 2
    ext = np.abs(corners @ a.T).max(axis=0) * 2  # width, height after a
    fit = (1 - 2 * _MARGIN) * canvas / max(ext[0], ext[1], 1e-6)
    f = scale * fit
    # Keep the whole ink box on the canvas whatever the translation.
    slack = np.maximum((canvas - ext * f) / 2, 0)
    tx = float(np.clip(tx, -slack[0], slack[0]))
    ty = float(np.clip(ty, -slack[1], slack[1]))
    inv = np.linalg.inv(a * f)
    cx, cy = canvas / 2 + tx, canvas / 2 + ty
    # input = c_in + inv @ (output - c_out)
    data = (
        inv[0, 0], inv[0, 1], w / 2 - inv[0, 0] * cx - inv[0, 1] * cy,
        inv[1, 0], inv[1, 1], h / 2 - inv[1, 0] * cx - inv[1, 1] * cy,
    )
    big = glyph.transform((canvas, canvas), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR)
    small = big.reduce(k)
    return np.asarray(small, dtype=np.float32) / 255.0


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def _contrasting_colours(
    rng: np.random.Generator, min_contrast: float
) -> tuple[np.ndarray, np.ndarray]:
    """(foreground, background) RGB colours whose luma differs enough."""
    for _ in range(64):
        bg = rng.uniform(0, 255, size=3)
        fg = rng.uniform(0, 255, size=3)
        if abs(_luma(fg) - _luma(bg)) >= min_contrast:
            return fg, bg
    bg = rng.uniform(0, 255, size=3)
    fg = np.full(3, 0.0 if _luma(bg) > 127.5 else 255.0)
    return fg, bg


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Texture in [0, 1] of shape [size, size]: smooth noise, stripes or gradient."""
    kind = int(rng.integers(0, 3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == 0:  # smooth value noise
        grid = int(rng.integers(3, 7))
        coarse = rng.uniform(0, 1, size=(grid, grid)).astype(np.float32)
        img = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
        t = np.asarray(img, dtype=np.float32)
    elif kind == 1:  # stripes / waves
        phi = rng.uniform(0, math.pi)
        freq = rng.uniform(2.5, 6.0)
        phase = rng.uniform(0, 2 * math.pi)
        u = xx * math.cos(phi) + yy * math.sin(phi)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * freq * u + phase)
    else:  # gradient with a soft checker on top
        phi = rng.uniform(0, 2 * math.pi)
        u = (xx - 0.5) * math.cos(phi) + (yy - 0.5) * math.sin(phi) + 0.5
        cells = int(rng.integers(3, 7))
        checker = ((np.floor(xx * cells) + np.floor(yy * cells)) % 2).astype(np.float32)
        t = 0.6 * u + 0.4 * checker
    t = t - t.min()
    peak = float(t.max())
    return (t / peak if peak > 0 else t).astype(np.float32)


def _compose(domain: str, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour a glyph mask for ``domain``; returns float [3, H, W] in 0..255."""
    size = mask.shape[0]
    m = mask[None]
    if domain == "letters":
        bg = rng.uniform(0, 40)
        fg = rng.uniform(190, 255)
        img = np.broadcast_to(bg + (fg - bg) * m, (3, size, size))
        sigma = rng.uniform(2.0, 10.0)
        noise = rng.normal(0.0, sigma, size=(1, size, size))
        return img + noise
    if domain == "symbols":
        fg, bg = _contrasting_colours(rng, 100.0)
        img = bg[:, None, None] + (fg - bg)[:, None, None] * m
        sigma = rng.uniform(2.0, 8.0)
        return img + rng.normal(0.0, sigma, size=img.shape)
    # scripts: light textured background, dark or saturated strokes
    base = rng.uniform(140, 250, size=3)
    direction = rng.uniform(-1, 1, size=3)
    direction /= max(float(np.abs(direction).max()), 1e-6)
    other = np.clip(base + rng.uniform(50, 110) * direction, 60, 255)
    tex = _texture(rng, size)[None]
    bg = base[:, None, None] * (1 - tex) + other[:, None, None] * tex
    if rng.random() < 0.5:
        fg = rng.uniform(0, 60, size=3)  # dark ink
    else:
        fg = rng.uniform(0, 255, size=3)  # saturated ink, pushed dark enough
        fg[int(rng.integers(0, 3))] = rng.uniform(0, 40)
        fg *= min(1.0, 60.0 / max(_luma(fg), 1e-6))
    img = bg * (1 - m) + fg[:, None, None] * m
    sigma = rng.uniform(2.0, 8.0)
    return img + rng.normal(0.0, sigma, size=img.shape)


def _render_instance(
    domain: str, ch: str, face: str, size: int, rng: np.random.Generator
) -> np.ndarray:
    mask = _glyph_mask(ch, face, size, rng)
    img = _compose(domain, mask, rng)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _splits(n_classes: int, seed: int, domain: str) -> dict[str, list[int]]:
    """Seeded 64/16/20 class split (val and test rounded, train takes the rest)."""
    perm = _rng(seed, _DOMAIN_ID[domain], _SPLIT_STREAM).permutation(n_classes)
    n_val = int(math.floor(_SPLIT_FRACTIONS[1] * n_classes + 0.5))
    n_test = int(math.floor(_SPLIT_FRACTIONS[2] * n_classes + 0.5))
    n_train = n_classes - n_val - n_test
    return {
        "train": sorted(int(i) for i in perm[:n_train]),
        "val": sorted(int(i) for i in perm[n_train : n_train + n_val]),
        "test": sorted(int(i) for i in perm[n_train + n_val :]),
    }


def render_domain(spec: GlyphSpec) -> GlyphDomain:
    """Render every instance of ``spec`` (pure: no caching on disk)."""
    import torch

    domain, size, n_inst = spec.domain, spec.size, spec.instances_per_class
    classes = domain_classes(domain)
    dom_id = _DOMAIN_ID[domain]
    images = np.empty((len(classes) * n_inst, 3, size, size), dtype=np.uint8)
    for c, ch in enumerate(classes):
        cp = ord(ch)
        faces = _faces_for(cp)
        order = _rng(spec.seed, dom_id, _FACE_STREAM + cp).permutation(len(faces))
        for i in range(n_inst):
            rng = _rng(spec.seed, dom_id, cp, i)
            face = faces[int(order[i % len(faces)])]
            images[c * n_inst + i] = _render_instance(domain, ch, face, size, rng)
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), n_inst)
    return GlyphDomain(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        class_names=[_class_name(ch) for ch in classes],
        splits=_splits(len(classes), spec.seed, domain),
        native_size=native_size(domain),
    )


# --------------------------------------------------------------------------
# Disk cache
# --------------------------------------------------------------------------


def _cache_path(spec: GlyphSpec, cache_dir: Path) -> Path:
    return Path(cache_dir) / f"glyphs-{spec.domain}-{spec.cache_key()}.pt"


def _from_payload(payload: Any, spec: GlyphSpec) -> GlyphDomain:
    import torch

    if not isinstance(payload, dict) or payload.get("cache_key") != spec.cache_key():
        raise ValueError("cache payload does not match the spec")
    images, labels = payload["images"], payload["labels"]
    names = list(payload["class_names"])
    size = spec.size
    n = len(names) * spec.instances_per_class
    if (
        not isinstance(images, torch.Tensor)
        or images.dtype != torch.uint8
        or tuple(images.shape) != (n, 3, size, size)
        or not isinstance(labels, torch.Tensor)
        or labels.dtype != torch.int64
        or tuple(labels.shape) != (n,)
    ):
        raise ValueError("cache payload has unexpected tensors")
    splits = {k: [int(i) for i in payload["splits"][k]] for k in ("train", "val", "test")}
    return GlyphDomain(
        images=images.contiguous(),
        labels=labels.contiguous(),
        class_names=names,
        splits=splits,
        native_size=int(payload["native_size"]),
    )


def load_domain(spec: GlyphSpec, cache_dir: Path) -> GlyphDomain:
    """Render ``spec`` once and cache it in ``cache_dir``; later calls load it.

    The file is written atomically; an unreadable or mismatching cache file
    is re-rendered and replaced.
    """
    import torch

    cache_dir = Path(cache_dir)
    path = _cache_path(spec, cache_dir)
    if path.is_file():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            return _from_payload(payload, spec)
        except Exception:  # corrupt / truncated / stale file: render again
            pass
    dom = render_domain(spec)
    payload = {
        "images": dom.images,
        "labels": dom.labels,
        "class_names": list(dom.class_names),
        "splits": {k: list(v) for k, v in dom.splits.items()},
        "native_size": int(dom.native_size),
        "cache_key": spec.cache_key(),
        "render_version": RENDER_VERSION,
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=cache_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return dom
