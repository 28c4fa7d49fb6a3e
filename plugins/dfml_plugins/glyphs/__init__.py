"""Embedded, download-free few-shot glyph dataset (see :mod:`.render`)."""

from .render import (
    DOMAINS,
    RENDER_VERSION,
    GlyphDomain,
    GlyphSpec,
    domain_classes,
    load_domain,
    native_size,
    render_domain,
)

__all__ = [
    "DOMAINS",
    "RENDER_VERSION",
    "GlyphDomain",
    "GlyphSpec",
    "domain_classes",
    "load_domain",
    "native_size",
    "render_domain",
]
