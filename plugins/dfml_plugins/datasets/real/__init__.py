"""The real datasets read from --data-root (`cifar_fs`, `mini_imagenet`, `cub`): parameters and
registration (light: no torch import). Implementation: `dataset.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dfml_bench import hookimpl, param


@dataclass
class CifarFSParams:
    image_size: int = param(32, "input size in px (paper: 32)", min=8)
    max_per_class: int | None = param(None, "keep at most this many images per class (None: all)", min=1)


@dataclass
class MiniImageNetParams:
    image_size: int = param(84, "input size in px (paper: 84)", min=8)
    max_per_class: int | None = param(None, "keep at most this many images per class (None: all 600)", min=1)


@dataclass
class CUBParams:
    image_size: int = param(84, "input size in px (paper: 84); images are squashed to square", min=8)
    max_per_class: int | None = param(None, "keep at most this many images per class (None: all)", min=1)


IMPL = "dfml_plugins.datasets.real.dataset"


@hookimpl
def register_datasets(register: Any) -> None:
    register("cifar_fs", f"{IMPL}:build_cifar_fs", fingerprint=f"{IMPL}:fingerprint_cifar_fs", params=CifarFSParams,
             help="CIFAR-FS from --data-root/cifar-100-python (Bertinetto et al. 64/16/20 split), 32 px")
    register("mini_imagenet", f"{IMPL}:build_mini_imagenet", fingerprint=f"{IMPL}:fingerprint_mini_imagenet",
             params=MiniImageNetParams,
             help="MiniImageNet from --data-root/mini-imagenet/{train,val,test}.csv + images/ (Ravi split), 84 px")
    register("cub", f"{IMPL}:build_cub", fingerprint=f"{IMPL}:fingerprint_cub", params=CUBParams,
             help="CUB-200-2011 from --data-root/CUB_200_2011/images (100/50/50 by index), 84 px")
