"""Real few-shot datasets read from a directory the user prepared (nothing is ever downloaded).

* ``cifar_fs``: the extracted CIFAR-100 python archive (``cifar-100-python/{train,test,meta}``);
  train and test images of a class are pooled (600 per class) and the 100 classes are split
  64/16/20 by name with the standard split of Bertinetto et al. 2019 (``cifar_fs_split.py``).
* ``mini_imagenet``: ``mini-imagenet/{train,val,test}.csv`` (``filename,label``; the Ravi &
  Larochelle split) and ``mini-imagenet/images/<filename>``.
* ``cub``: ``CUB_200_2011/images/<NNN.Class_Name>/*.jpg``; class ``i`` of the 200 sorted folders
  goes to meta-train if ``i % 2 == 0``, meta-val if ``i % 4 == 1``, meta-test if ``i % 4 == 3``.

``data_root`` may be the directory that holds the dataset directory or the dataset directory
itself. Images are converted to RGB, squashed (never cropped) to ``image_size`` with PIL's
antialiased bilinear filter and kept as uint8 tensors. Within a split, classes are in sorted
order (CIFAR-100 fine label names, ImageNet wnids, CUB folder names) and the images of a class
in sorted file order (CIFAR-FS: the class's images of the ``train`` pickle, then of ``test``,
in pickle order); ``max_per_class`` keeps the first M of that order.

Decoded splits are cached in ``cache_dir / "real" / "<name>-<hash>.pt"``; the hash covers the
dataset, the parameters and a fingerprint of the source (names, sizes and mtimes of the files
read, plus the csv contents for MiniImageNet), so editing the data invalidates the cache.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dfml_bench.data import SPLITS, FewShotDataset, ImageSplit
from dfml_bench.errors import ConfigError, DataError
from dfml_bench.store import tree_fingerprint
from dfml_plugins.datasets.real import CifarFSParams, CUBParams, MiniImageNetParams
from dfml_plugins.datasets.real.cifar_fs_split import CIFAR_FS_SPLIT

CIFAR_FS_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR_FS_STD = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Bump when the decoding changes so that old cache files are rebuilt.
CACHE_VERSION = 1
#: A class needs at least one support and one query image to be usable at all.
MIN_IMAGES_PER_CLASS = 2
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
RESAMPLE = Image.Resampling.BILINEAR  # antialiased when shrinking (PIL scales the filter support)
#: Decoding uses threads (PIL releases the GIL while decoding and resizing) from this many images.
PARALLEL_MIN_IMAGES = 256
DECODE_CHUNK = 512
#: Environment variable overriding the number of decoding threads (1: decode in this thread).
DECODE_WORKERS_ENV = "DFML_BENCH_DECODE_WORKERS"

MINI_EXPECTED_CLASSES = {"train": 64, "val": 16, "test": 20}
CUB_NUM_CLASSES = 200

CIFAR_LAYOUT = "cifar-100-python/{train,test,meta} (the extracted CIFAR-100 python archive)"
MINI_LAYOUT = "mini-imagenet/{train,val,test}.csv and mini-imagenet/images/"
CUB_LAYOUT = "CUB_200_2011/images/<NNN.Class_Name>/*.jpg (the extracted CUB-200-2011 archive)"


# --------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------


def build_cifar_fs(params: CifarFSParams, data_root: Path | None, cache_dir: Path) -> FewShotDataset:
    """CIFAR-FS: CIFAR-100 with the Bertinetto et al. 64/16/20 class split, 600 images per class."""
    name = "cifar_fs"
    size, max_per_class = _check_params(name, params)
    root = _check_root(name, data_root, CIFAR_LAYOUT)
    base = _find_cifar_dir(root)
    names = _cifar_label_names(base / "meta")
    fingerprint = [_stat_entry(base / f, base) for f in ("meta", "train", "test")]
    key = _cache_key(name, size, max_per_class, fingerprint)
    path = _cache_path(cache_dir, name, key)
    splits = _load_cache(path, key, size)
    if splits is None:
        images, labels = _load_cifar_batches(base, len(names))
        splits = {}
        for split in SPLITS:
            classes = sorted(CIFAR_FS_SPLIT[split])
            picked: list[np.ndarray] = []
            for cls in classes:
                idx = np.flatnonzero(labels == names.index(cls))
                if len(idx) < MIN_IMAGES_PER_CLASS:
                    raise DataError(
                        f"cifar_fs: class '{cls}' has {len(idx)} image(s) in {base}/train+test, fewer than "
                        f"{MIN_IMAGES_PER_CLASS}; re-extract the complete CIFAR-100 python archive there.")
                picked.append(idx[:max_per_class] if max_per_class else idx)
            counts = [len(p) for p in picked]
            chosen = images[np.concatenate(picked)]
            splits[split] = ImageSplit(_resize_array_batch(chosen, size), _labels_from_counts(counts),
                                       list(classes))
        _save_cache(path, key, splits)
    return FewShotDataset(name, splits, size, CIFAR_FS_MEAN, CIFAR_FS_STD)


def build_mini_imagenet(params: MiniImageNetParams, data_root: Path | None, cache_dir: Path) -> FewShotDataset:
    """MiniImageNet (Ravi & Larochelle split): classes are the csv's wnids in sorted order."""
    name = "mini_imagenet"
    size, max_per_class = _check_params(name, params)
    root = _check_root(name, data_root, MINI_LAYOUT)
    base = _find_mini_dir(root)
    images_dir = base / "images"
    if not images_dir.is_dir():
        raise DataError(f"mini_imagenet: {images_dir} is missing; extract the MiniImageNet images there so that "
                        f"--data-root holds {MINI_LAYOUT}.")
    try:
        listing = set(os.listdir(images_dir))
    except OSError as exc:
        raise DataError(f"mini_imagenet: cannot list {images_dir} ({exc}); make it a readable directory.") from None
    plan: dict[str, list[tuple[str, list[Path]]]] = {}
    csv_digest = hashlib.sha256()
    owner: dict[str, str] = {}
    for split in SPLITS:
        csv_path = base / f"{split}.csv"
        raw = _read_bytes(csv_path, name)
        csv_digest.update(split.encode() + b"\0" + raw + b"\0")
        rows = _parse_mini_csv(csv_path, raw)
        by_class: dict[str, set[str]] = {}
        for fname, wnid in rows:
            by_class.setdefault(wnid, set()).add(fname)
        expected = MINI_EXPECTED_CLASSES[split]
        if len(by_class) != expected:
            raise DataError(f"mini_imagenet: {csv_path} lists {len(by_class)} classes but the Ravi & Larochelle "
                            f"{split} split has {expected}; use the standard {split}.csv.")
        for wnid in by_class:
            if wnid in owner:
                raise DataError(f"mini_imagenet: class {wnid} appears in both {owner[wnid]}.csv and {split}.csv; "
                                "use the standard Ravi & Larochelle csv files, whose classes are disjoint.")
            owner[wnid] = split
        resolved: dict[tuple[str, str], Path] = {}
        for fname, wnid in rows:  # csv order, so the first missing file is named
            if (fname, wnid) in resolved:
                continue
            found = _resolve_mini_file(images_dir, listing, fname, wnid)
            if found is None:
                raise DataError(f"mini_imagenet: {csv_path} names '{fname}', which is missing from {images_dir}; "
                                "re-extract the images so that every file listed in the csv exists.")
            resolved[(fname, wnid)] = found
        classes = []
        for wnid in sorted(by_class):
            files = sorted(by_class[wnid])
            if len(files) < MIN_IMAGES_PER_CLASS:
                raise DataError(f"mini_imagenet: class {wnid} has {len(files)} image(s) in {csv_path}, fewer than "
                                f"{MIN_IMAGES_PER_CLASS}; use the standard csv (600 images per class).")
            kept = files[:max_per_class] if max_per_class else files
            classes.append((wnid, [resolved[(f, wnid)] for f in kept]))
        plan[split] = classes
    return _build_from_files(name, plan, base, size, max_per_class, cache_dir, IMAGENET_MEAN, IMAGENET_STD,
                             extra=csv_digest.hexdigest())


def build_cub(params: CUBParams, data_root: Path | None, cache_dir: Path) -> FewShotDataset:
    """CUB-200-2011: 200 sorted class folders split 100/50/50 by index (i%2==0 / i%4==1 / i%4==3)."""
    name = "cub"
    size, max_per_class = _check_params(name, params)
    root = _check_root(name, data_root, CUB_LAYOUT)
    images_dir = _find_cub_images(root)
    try:
        folders = sorted(e.name for e in os.scandir(images_dir) if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        raise DataError(f"cub: cannot list {images_dir} ({exc}); make it a readable directory.") from None
    if len(folders) != CUB_NUM_CLASSES:
        raise DataError(f"cub: {images_dir} holds {len(folders)} class folders but CUB-200-2011 has "
                        f"{CUB_NUM_CLASSES}; re-extract the complete archive so that it holds {CUB_LAYOUT}.")
    plan: dict[str, list[tuple[str, list[Path]]]] = {split: [] for split in SPLITS}
    for i, folder in enumerate(folders):
        files = _list_images(images_dir / folder)
        if len(files) < MIN_IMAGES_PER_CLASS:
            raise DataError(f"cub: class folder {images_dir / folder} holds {len(files)} image(s), fewer than "
                            f"{MIN_IMAGES_PER_CLASS}; re-extract the complete CUB-200-2011 archive.")
        kept = files[:max_per_class] if max_per_class else files
        plan[cub_split_of(i)].append((folder, [images_dir / folder / f for f in kept]))
    return _build_from_files(name, plan, images_dir, size, max_per_class, cache_dir, IMAGENET_MEAN, IMAGENET_STD)


def cub_split_of(index: int) -> str:
    """The meta-split of CUB class ``index`` (0-based, in sorted folder order)."""
    if index % 2 == 0:
        return "train"
    return "val" if index % 4 == 1 else "test"


# --------------------------------------------------------------------------
# Layout checks
# --------------------------------------------------------------------------


def _check_params(name: str, params: Any) -> tuple[int, int | None]:
    size, max_per_class = params.image_size, params.max_per_class
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"{name}: image_size must be a positive integer, got {size!r}.")
    if max_per_class is not None and (isinstance(max_per_class, bool) or not isinstance(max_per_class, int)
                                      or max_per_class < 1):
        raise ConfigError(f"{name}: max_per_class must be a positive integer or null, got {max_per_class!r}.")
    return size, max_per_class


def _check_root(name: str, data_root: Path | str | None, layout: str) -> Path:
    if data_root is None:
        raise DataError(f"{name} reads real images that are never downloaded: pass --data-root DIR holding {layout}.")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DataError(f"{name}: the data root {root} is not a directory; pass --data-root DIR holding {layout}.")
    return root


def _dataset_dir(root: Path, subdir: str, markers: Sequence[str]) -> Path:
    """``root/subdir`` when it exists, else ``root`` itself if it looks like the dataset dir."""
    if (root / subdir).is_dir():
        return root / subdir
    if any((root / m).exists() for m in markers):
        return root
    return root / subdir


def _find_cifar_dir(root: Path) -> Path:
    files = ("train", "test", "meta")
    base = _dataset_dir(root, "cifar-100-python", files)
    if not base.is_dir():
        raise DataError(f"cifar_fs: no cifar-100-python/ directory under {root}; extract cifar-100-python.tar.gz "
                        f"so that --data-root holds {CIFAR_LAYOUT}.")
    missing = [f for f in files if not (base / f).is_file()]
    if missing:
        raise DataError(f"cifar_fs: {base} lacks {', '.join(missing)}; extract cifar-100-python.tar.gz so that "
                        f"--data-root holds {CIFAR_LAYOUT}.")
    return base


def _find_mini_dir(root: Path) -> Path:
    base = _dataset_dir(root, "mini-imagenet", [f"{s}.csv" for s in SPLITS] + ["images"])
    if not base.is_dir():
        raise DataError(f"mini_imagenet: no mini-imagenet/ directory under {root}; pass --data-root DIR holding "
                        f"{MINI_LAYOUT}.")
    missing = [f"{s}.csv" for s in SPLITS if not (base / f"{s}.csv").is_file()]
    if missing:
        raise DataError(f"mini_imagenet: {base} lacks {', '.join(missing)}; add the Ravi & Larochelle split files "
                        f"so that --data-root holds {MINI_LAYOUT}.")
    return base


def _find_cub_images(root: Path) -> Path:
    base = _dataset_dir(root, "CUB_200_2011", ["images"])
    if not (base / "images").is_dir():
        raise DataError(f"cub: {base / 'images'} is not a directory; extract CUB_200_2011.tgz so that --data-root "
                        f"holds {CUB_LAYOUT}.")
    return base / "images"


def _list_images(folder: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(folder)
                      if not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file())
    except OSError as exc:
        raise DataError(f"cannot list the image folder {folder} ({exc}); make it a readable directory.") from None


def _read_bytes(path: Path, name: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{name}: cannot read {path} ({exc.strerror or exc}); check the file's permissions.") from None


def _parse_mini_csv(path: Path, raw: bytes) -> list[tuple[str, str]]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"mini_imagenet: {path} is not a UTF-8 text csv; use the standard split csv "
                        "(header 'filename,label').") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header[:2]] != ["filename", "label"]:
        raise DataError(f"mini_imagenet: {path} does not start with the header 'filename,label'; use the standard "
                        "Ravi & Larochelle split csv.")
    rows = []
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"mini_imagenet: line {lineno} of {path} is not 'filename,label'; fix or replace the csv.")
        rows.append((row[0].strip(), row[1].strip()))
    return rows


def _resolve_mini_file(images_dir: Path, listing: set[str], fname: str, wnid: str) -> Path | None:
    """images/<filename> (the standard layout), else images/<wnid>/<filename>."""
    if fname in listing:
        return images_dir / fname
    for cand in (images_dir / fname, images_dir / wnid / fname):
        if cand.is_file():
            return cand
    return None


def _cifar_label_names(meta: Path) -> list[str]:
    d = _read_pickle(meta)
    names = d.get("fine_label_names")
    if not isinstance(names, (list, tuple)):
        raise DataError(f"cifar_fs: {meta} has no 'fine_label_names'; it must be the CIFAR-100 (not CIFAR-10) "
                        "python archive's meta file.")
    names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
    expected = {c for split in SPLITS for c in CIFAR_FS_SPLIT[split]}
    missing, unexpected = sorted(expected - set(names)), sorted(set(names) - expected)
    if missing or unexpected or len(names) != len(expected):
        detail = "; ".join(part for part in (
            f"missing {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}" if missing else "",
            f"unexpected {', '.join(unexpected[:5])}{', ...' if len(unexpected) > 5 else ''}" if unexpected else "",
            "duplicate names" if not (missing or unexpected) else "") if part)
        raise DataError(f"cifar_fs: the fine label names in {meta} do not match the CIFAR-FS split ({detail}); "
                        "point --data-root at the original CIFAR-100 python archive.")
    return names


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: any other global (a code-execution payload) is refused."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}'")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            d = _SafeUnpickler(fh, encoding="latin1").load()  # as torchvision reads it, minus code execution
    except Exception as exc:  # truncated, not a pickle, unreadable, ...
        raise DataError(f"cifar_fs: cannot read {path} as a CIFAR-100 pickle ({type(exc).__name__}: {exc}); "
                        "re-extract cifar-100-python.tar.gz.") from None
    if not isinstance(d, dict):
        raise DataError(f"cifar_fs: {path} is not a CIFAR-100 pickle (no dictionary inside); "
                        "re-extract cifar-100-python.tar.gz.")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}


def _load_cifar_batches(base: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The train then test images (uint8 [N, 3, 32, 32]) and fine labels (int64 [N]) of the archive."""
    images, labels = [], []
    for part in ("train", "test"):
        path = base / part
        d = _read_pickle(path)
        try:
            data = np.asarray(d["data"], dtype=np.uint8)
            fine = np.asarray(d["fine_labels"], dtype=np.int64)
            data = data.reshape(-1, 3, 32, 32)
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"cifar_fs: {path} lacks valid 'data' (N x 3072 uint8) and 'fine_labels' ({exc}); "
                            "re-extract cifar-100-python.tar.gz.") from None
        if fine.shape != (data.shape[0],) or (fine.size and (fine.min() < 0 or fine.max() >= num_classes)):
            raise DataError(f"cifar_fs: {path} has {data.shape[0]} images but {fine.size} fine labels or labels "
                            f"outside 0..{num_classes - 1}; re-extract cifar-100-python.tar.gz.")
        images.append(data)
        labels.append(fine)
    return np.concatenate(images), np.concatenate(labels)


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


def _labels_from_counts(counts: Sequence[int]) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(counts), dtype=torch.int64),
                                   torch.tensor(list(counts), dtype=torch.int64))


def _resize_array_batch(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [N, 3, H, W] numpy -> uint8 [N, 3, size, size] tensor (PIL antialiased resize if needed)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return torch.from_numpy(np.ascontiguousarray(images))
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8)
    for i, chw in enumerate(images):
        im = Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0)), "RGB").resize((size, size), RESAMPLE)
        out[i] = torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1)
    return out


def _load_image(path: Path, size: int) -> np.ndarray:
    """One image file -> uint8 [size, size, 3] RGB (squashed, never cropped)."""
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), RESAMPLE)
        return np.array(rgb, dtype=np.uint8)  # a writable copy (torch warns on read-only arrays)
    except Exception as exc:  # PIL raises OSError, ValueError, DecompressionBombError, SyntaxError, ...
        raise DataError(f"cannot read the image {path} ({type(exc).__name__}: {exc}); replace or re-extract "
                        "that file.") from None


def _decode_workers(n: int) -> int:
    env = os.environ.get(DECODE_WORKERS_ENV, "").strip()
    if env:
        try:
            workers = int(env)
        except ValueError:
            workers = 0
        if workers < 1:
            raise ConfigError(f"{DECODE_WORKERS_ENV} must be a positive integer, got {env!r}.")
        return workers
    if n < PARALLEL_MIN_IMAGES:
        return 1
    return max(1, min(2, os.cpu_count() or 1))


def _decode_files(paths: Sequence[Path], size: int) -> torch.Tensor:
    """Decode image files in order into uint8 [N, 3, size, size] (threads keep the order)."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    load = functools.partial(_load_image, size=size)
    workers = _decode_workers(len(paths))
    if workers <= 1:
        for i, p in enumerate(paths):
            out[i] = torch.from_numpy(load(p)).permute(2, 0, 1)
        return out
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dfml-decode") as pool:
        for start in range(0, len(paths), DECODE_CHUNK):  # chunks: an error stops the work early
            for i, arr in enumerate(pool.map(load, paths[start:start + DECODE_CHUNK]), start=start):
                out[i] = torch.from_numpy(arr).permute(2, 0, 1)
    return out


def _build_from_files(name: str, plan: dict[str, list[tuple[str, list[Path]]]], base: Path, size: int,
                      max_per_class: int | None, cache_dir: Path, mean: tuple[float, float, float],
                      std: tuple[float, float, float], extra: str = "") -> FewShotDataset:
    fingerprint: list[Any] = [extra]
    for split in SPLITS:
        for cls, files in plan[split]:
            fingerprint.append([split, cls, [_stat_entry(p, base) for p in files]])
    key = _cache_key(name, size, max_per_class, fingerprint)
    path = _cache_path(cache_dir, name, key)
    splits = _load_cache(path, key, size)
    if splits is None:
        splits = {}
        for split in SPLITS:
            classes = plan[split]
            files = [p for _, fs in classes for p in fs]
            splits[split] = ImageSplit(_decode_files(files, size), _labels_from_counts([len(fs) for _, fs in classes]),
                                       [cls for cls, _ in classes])
        _save_cache(path, key, splits)
    return FewShotDataset(name, splits, size, mean, std)


# --------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------


def _stat_entry(path: Path, base: Path) -> list[Any]:
    try:
        st = path.stat()
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror or exc}); check that the file exists and is readable.") \
            from None
    try:
        rel = path.relative_to(base).as_posix()
    except ValueError:
        rel = path.as_posix()
    return [rel, st.st_size, st.st_mtime_ns]


def _cache_key(name: str, size: int, max_per_class: int | None, fingerprint: Any) -> str:
    blob = json.dumps({"dataset": name, "version": CACHE_VERSION, "image_size": size, "max_per_class": max_per_class,
                       "resample": "bilinear", "source": fingerprint}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cache_path(cache_dir: Path, name: str, key: str) -> Path:
    return Path(cache_dir) / "real" / f"{name}-{key}.pt"


def _load_cache(path: Path, key: str, size: int) -> dict[str, ImageSplit] | None:
    """The cached splits, or None when the file is absent, corrupt or stale (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("key") != key or payload.get("version") != CACHE_VERSION:
            return None
        splits = {}
        for split in SPLITS:
            entry = payload["splits"][split]
            images, labels, names = entry["images"], entry["labels"], [str(n) for n in entry["class_names"]]
            ok = (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.dim() == 4
                  and tuple(images.shape[1:]) == (3, size, size) and isinstance(labels, torch.Tensor)
                  and labels.dtype == torch.int64 and tuple(labels.shape) == (images.shape[0],) and names
                  and (labels.numel() == 0 or (int(labels.min()) >= 0 and int(labels.max()) < len(names))))
            if not ok:
                return None
            splits[split] = ImageSplit(images.contiguous(), labels.contiguous(), names)
        return splits
    except Exception:  # truncated / corrupt / foreign file: rebuild it
        return None


def _save_cache(path: Path, key: str, splits: dict[str, ImageSplit]) -> None:
    """Write atomically (temp file + os.replace); a cache that cannot be written only costs speed."""
    payload = {"key": key, "version": CACHE_VERSION,
               "splits": {s: {"images": sp.images, "labels": sp.labels, "class_names": list(sp.class_names)}
                          for s, sp in splits.items()}}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        warnings.warn(f"could not write the dataset cache {path} ({exc}); the images will be decoded again next time.",
                      RuntimeWarning, stacklevel=3)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


# -- data fingerprints: what identifies the files a dataset reads (they enter its runs' ids) --

def _fingerprint(data_root: Path | str | None, files: Callable[[Path], list[Path]]) -> str | None:
    """A fingerprint of the files under `data_root` a dataset reads, or None when they are missing
    (the build then fails with its own clear error)."""
    if data_root is None:
        return None
    root = Path(data_root).expanduser()
    try:
        return tree_fingerprint(files(root), root)
    except (DataError, OSError):
        return None


def fingerprint_cifar_fs(params: CifarFSParams, data_root: Path | str | None) -> str | None:
    """The CIFAR-100 pickles' names, sizes and modification times."""
    return _fingerprint(data_root, lambda root: [_find_cifar_dir(root) / f for f in ("train", "test", "meta")])


def fingerprint_mini_imagenet(params: MiniImageNetParams, data_root: Path | str | None) -> str | None:
    """The split csv files and every image file's name, size and modification time."""
    def files(root: Path) -> list[Path]:
        base = _find_mini_dir(root)
        return [base / f"{s}.csv" for s in SPLITS] + [base / "images"]

    return _fingerprint(data_root, files)


def fingerprint_cub(params: CUBParams, data_root: Path | str | None) -> str | None:
    """Every image file's name, size and modification time."""
    return _fingerprint(data_root, lambda root: [_find_cub_images(root)])
