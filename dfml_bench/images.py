"""Image grids as PNG (Pillow; no plotting library needed)."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from dfml_bench.store import atomic_write_bytes


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0,1] float images -> uint8 on the same device (how replay memories store images)."""
    return images.detach().clamp(0, 1).mul(255).round().to(torch.uint8)


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8, pad: int = 2) -> None:
    """Save [N,3,H,W] images in [0,1] (or uint8) as one PNG grid, `nrow` images per row."""
    from PIL import Image

    x = images.detach().cpu()
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float().clamp(0, 1)
    n, c, h, w = x.shape
    nrow = max(1, min(nrow, n))
    rows = (n + nrow - 1) // nrow
    grid = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad) * 0.5
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = x[i]
    array = grid.mul(255).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    atomic_write_bytes(Path(path), buf.getvalue())
