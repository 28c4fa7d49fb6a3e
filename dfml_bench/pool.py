"""API pools: build (train), cache, verify and load collections of pre-trained classifiers.

docs/protocol.md section 2. Each API is a K-way classifier on K distinct meta-train classes of
one dataset, drawn with a seeded RNG (independently per API, so APIs overlap in classes).
Per class the first 80% of its meta-train images train and the last 20% select the best
epoch, whose weights are saved as a copy (the reference saved the last epoch by mistake).

A pool lives in ``<pool_dir>/<pool hash>/``: one ``.pt`` state dict per API, loaded with
``weights_only=True``, and ``manifest.json`` (written last, atomically: the done marker)
listing each API's architecture, dataset, global class ids and names, held-out accuracy
and the file's sha256. The hash covers everything that determines the weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import multiprocessing
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dfml_bench import store
from dfml_bench.apis import APIInfo, BlackBoxAPI, QueryLedger, make_api, release
from dfml_bench.data import FewShotDataset, class_offsets
from dfml_bench.errors import DfmlError
from dfml_bench.params import build_params
from dfml_bench.seeding import derive_seed
from dfml_bench.selection import parse_selection

POOL_FORMAT = 1
MANIFEST = "manifest.json"


class PoolError(DfmlError):
    """A pool is missing, corrupt or inconsistent."""


@dataclasses.dataclass(frozen=True)
class TrainRecipe:
    """How each API is trained (docs/protocol.md section 2)."""

    epochs: int = 60
    batch_size: int = 128
    lr: float = 0.01
    clip_norm: float = 50.0
    optimizer: str = "auto"  # auto: Adam for conv4, SGD (momentum 0.9, wd 5e-4, x0.2 at 30/50/80) otherwise
    milestones: tuple[int, ...] = (30, 50, 80)
    shift: int = 0  # random translation of up to `shift` px per training image; 0 = none (docs/protocol.md)


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    """Everything that determines a pool's weights (its hash)."""

    architectures: tuple[str, ...]    # selections, e.g. "conv4[width=32]"
    apis_per_cell: int
    classes_per_api: int
    seed: int
    recipe: TrainRecipe


@dataclasses.dataclass(frozen=True)
class PoolSource:
    """A pool served elsewhere, opened by the `pool` component `kind` with its `params`.

    A scenario gives one as its ``pool_spec`` instead of a :class:`PoolSpec` (e.g. ``kind="http"``).
    """

    kind: str
    params: Any


@dataclasses.dataclass(frozen=True)
class _Job:
    index: int
    api_id: str
    dataset: str
    arch: str
    arch_params: dict[str, Any]
    classes: tuple[int, ...]            # local meta-train class ids (output order)
    train_x: torch.Tensor
    train_y: torch.Tensor
    held_x: torch.Tensor
    held_y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    recipe: TrainRecipe
    seed: int
    path: str


def dataset_fingerprint(dataset: FewShotDataset) -> str:
    """sha256 of the meta-train images, labels and normalisation of a dataset."""
    h = hashlib.sha256()
    split = dataset.split("train")
    h.update(split.images.numpy().tobytes())
    h.update(split.labels.numpy().tobytes())
    h.update(json.dumps([dataset.name, dataset.mean, dataset.std, split.class_names]).encode())
    return h.hexdigest()


def pool_hash(spec: PoolSpec, datasets: Sequence[FewShotDataset]) -> str:
    spec_dict = dataclasses.asdict(spec)
    if not spec.recipe.shift:  # pools built before the option existed keep their hash
        del spec_dict["recipe"]["shift"]
    blob = json.dumps({"format": POOL_FORMAT, "spec": spec_dict,
                       "datasets": [dataset_fingerprint(d) for d in datasets]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _resolve_arch(registry: Any, selection: str) -> tuple[str, dict[str, Any]]:
    name, values = parse_selection(selection)
    comp = registry.get("architecture", name)
    params = build_params(comp.params, values, f"architecture '{name}'")
    return name, dataclasses.asdict(params) if params is not None else {}


def _build_module(registry: Any, arch: str, arch_params: Mapping[str, Any], num_classes: int,
                  image_size: int) -> torch.nn.Module:
    comp = registry.get("architecture", arch)
    return comp.build(build_params(comp.params, dict(arch_params), arch), num_classes, image_size,
                       running_stats=True)


def plan_size(spec: PoolSpec, datasets: Sequence[FewShotDataset]) -> int:
    """Number of APIs in a pool."""
    return len(datasets) * len(spec.architectures) * spec.apis_per_cell


def plan_jobs(spec: PoolSpec, datasets: Sequence[FewShotDataset], registry: Any, root: Path) -> list[_Job]:
    """One training job per API: class draws and data, deterministic from the spec's seed."""
    jobs = []
    for d in datasets:
        split = d.split("train")
        if split.num_classes < spec.classes_per_api:
            raise PoolError(f"dataset '{d.name}' has {split.num_classes} meta-train classes, fewer than "
                            f"classes_per_api={spec.classes_per_api}.")
        by_class = [torch.nonzero(split.labels == c).flatten() for c in range(split.num_classes)]
        for sel in spec.architectures:
            arch, arch_params = _resolve_arch(registry, sel)
            for i in range(spec.apis_per_cell):
                g = torch.Generator().manual_seed(derive_seed("pool-classes", spec.seed, d.name, sel, i))
                classes = tuple(torch.randperm(split.num_classes, generator=g)[: spec.classes_per_api].tolist())
                tx, ty, hx, hy = [], [], [], []
                for k, c in enumerate(classes):
                    idx = by_class[c]
                    cut = int(round(0.8 * len(idx)))
                    if cut < 1 or cut >= len(idx):
                        raise PoolError(f"class '{split.class_names[c]}' of '{d.name}' has {len(idx)} images; "
                                        "an API needs at least 2 (80% train / 20% held out).")
                    tx.append(split.images[idx[:cut]])
                    hx.append(split.images[idx[cut:]])
                    ty.append(torch.full((cut,), k))
                    hy.append(torch.full((len(idx) - cut,), k))
                api_id = f"{d.name}-{arch}-{i:03d}"
                jobs.append(_Job(len(jobs), api_id, d.name, arch, arch_params, classes, torch.cat(tx), torch.cat(ty),
                                 torch.cat(hx), torch.cat(hy), tuple(d.mean), tuple(d.std), spec.recipe,
                                 derive_seed("pool-train", spec.seed, api_id), str(root / f"{api_id}.pt")))
    return jobs


_WORKER_REGISTRY: Any = None


def _worker_init() -> None:
    global _WORKER_REGISTRY
    torch.set_num_threads(1)
    from dfml_bench.plugins import load_registry

    _WORKER_REGISTRY = load_registry()


def _normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - mean) / std


def random_shift(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own random offset in [-shift, shift] px, zero-filled."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)).view(n, 1, h, 1).expand(n, c, h, w + 2 * shift)
    cols = (dx[:, None] + torch.arange(w)).view(n, 1, 1, w).expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


def train_api(job: _Job, registry: Any = None) -> tuple[int, float, int]:
    """Train one API on one thread (so weights are bitwise reproducible whatever the worker count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_api(job, registry or _WORKER_REGISTRY)
    finally:
        torch.set_num_threads(threads)


def _train_api(job: _Job, registry: Any) -> tuple[int, float, int]:
    """Train one API; save the best held-out epoch's weights. Returns (index, accuracy, epoch)."""
    torch.manual_seed(job.seed)
    g = torch.Generator().manual_seed(job.seed)
    size = job.train_x.shape[-1]
    model = _build_module(registry, job.arch, job.arch_params, len(job.classes), size)
    r = job.recipe
    use_adam = r.optimizer == "adam" or (r.optimizer == "auto" and job.arch == "conv4")
    if use_adam:
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=r.lr)
        sched = None
    else:
        opt = torch.optim.SGD(model.parameters(), lr=r.lr, momentum=0.9, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(r.milestones), gamma=0.2)
    mean = torch.tensor(job.mean).view(1, -1, 1, 1)
    std = torch.tensor(job.std).view(1, -1, 1, 1)
    held_x = _normalise(job.held_x, mean, std)
    best_acc, best_epoch, best_state = -1.0, -1, None
    n = len(job.train_y)
    for epoch in range(r.epochs):
        model.train()
        order = torch.randperm(n, generator=g)
        for start in range(0, n, r.batch_size):
            idx = order[start:start + r.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs more than one image
            x = job.train_x[idx]
            if r.shift:
                x = random_shift(x, r.shift, g)
            loss = F.cross_entropy(model(_normalise(x, mean, std)), job.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), r.clip_norm)
            opt.step()
        if sched is not None:
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(held_x).argmax(1) == job.held_y).float().mean().item() * 100
        if acc > best_acc:
            best_acc, best_epoch = acc, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}  # a COPY
    buf = io.BytesIO()
    torch.save(best_state, buf)
    store.atomic_write_bytes(Path(job.path), buf.getvalue())
    return job.index, best_acc, best_epoch


def build_pool(spec: PoolSpec, datasets: Sequence[FewShotDataset], registry: Any, pool_dir: Path,
               workers: int = 2, progress: Callable[..., Any] | None = None) -> Path:
    """Train every API of the pool (skipping nothing: a pool is built whole) and write its manifest.

    Builds are locked per pool (``<hash>.lock`` beside it): a second process building the same
    pool waits, then finds the manifest and trains nothing.
    """
    root = Path(pool_dir) / pool_hash(spec, datasets)
    if (root / MANIFEST).exists():
        return root
    with store.exclusive_lock(root.with_name(f"{root.name}.lock")):
        if (root / MANIFEST).exists():  # built by the process we waited for
            return root
        return _build_pool_locked(spec, datasets, registry, root, workers, progress)


def _build_pool_locked(spec: PoolSpec, datasets: Sequence[FewShotDataset], registry: Any, root: Path,
                       workers: int, progress: Callable[..., Any] | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(spec, datasets, registry, root)
    t0 = time.perf_counter()
    results: dict[int, tuple[float, int]] = {}
    advance = progress or (lambda n=1, **kw: None)
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            i, acc, ep = train_api(job, registry)
            results[i] = (acc, ep)
            advance(1, heldout=acc)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as ex:
            for i, acc, ep in ex.map(train_api, jobs):
                results[i] = (acc, ep)
                advance(1, heldout=acc)
    offsets = dict(zip((d.name for d in datasets), class_offsets(datasets)))
    names = {d.name: d.split("train").class_names for d in datasets}
    sizes = {d.name: d.image_size for d in datasets}
    apis = []
    for job in jobs:
        acc, ep = results[job.index]
        path = Path(job.path)
        apis.append({"api_id": job.api_id, "dataset": job.dataset, "architecture": job.arch,
                     "arch_params": job.arch_params, "local_classes": list(job.classes),
                     "classes": [offsets[job.dataset] + c for c in job.classes],
                     "class_names": [names[job.dataset][c] for c in job.classes],
                     "heldout_accuracy": round(acc, 4), "best_epoch": ep, "input_size": sizes[job.dataset],
                     "mean": list(job.mean), "std": list(job.std), "file": path.name,
                     "sha256": file_sha256(path)})
    manifest = {"format": POOL_FORMAT, "pool_hash": root.name, "spec": dataclasses.asdict(spec),
                "datasets": [{"name": d.name, "class_offset": offsets[d.name],
                              "meta_train_classes": d.split("train").num_classes} for d in datasets],
                "apis": apis}
    store.atomic_write_json(root / "build_info.json", {"seconds": time.perf_counter() - t0, "workers": workers,
                                                       **store.environment_record()})
    store.atomic_write_json(root / MANIFEST, manifest)
    return root


class APIPool:
    """A built pool: API metadata from its manifest; weights loaded (and checksum-verified) on demand."""

    def __init__(self, root: Path, registry: Any, device: torch.device, cache_size: int = 64):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.registry, self.device = registry, device
        self._handles: OrderedDict[tuple[int, str, bool, int], BlackBoxAPI] = OrderedDict()
        self._cache_size = cache_size

    def __len__(self) -> int:
        return len(self.manifest["apis"])

    @property
    def entries(self) -> list[dict[str, Any]]:
        return self.manifest["apis"]

    def info(self, index: int) -> APIInfo:
        e = self.entries[index]
        return APIInfo(e["api_id"], e["dataset"], e["architecture"], tuple(e["classes"]),
                       tuple(e["class_names"]), int(e["input_size"]))

    def verify(self, index: int) -> Path:
        """Check an API file against its manifest checksum; return its path."""
        return verify_file(self.root, self.entries[index])

    def load_module(self, index: int) -> torch.nn.Module:
        """Build API `index`'s network from its verified weights (for the pool's own use)."""
        e = self.entries[index]
        path = self.verify(index)
        try:  # weights_only: anything but tensors and plain data is refused, never executed
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise PoolError(f"API file '{path}' cannot be loaded as weights ({type(exc).__name__}: corrupt or "
                            f"tampered with); delete '{self.root}' to rebuild the pool.") from None
        module = _build_module(self.registry, e["architecture"], e["arch_params"], len(e["classes"]),
                               int(e["input_size"]))
        module.load_state_dict(state)
        return module.to(self.device)

    def api(self, index: int, ledger: QueryLedger, *, output: str = "logits", white_box: bool = False) -> BlackBoxAPI:
        """A query handle (black-box unless `white_box`) for API `index`, charging `ledger`.

        Handles are cached (LRU of `cache_size`); an evicted handle's model is released.
        """
        key = (index, output, white_box, id(ledger))
        handle = self._handles.get(key)
        if handle is not None:
            self._handles.move_to_end(key)
            return handle
        e = self.entries[index]
        handle = make_api(self.load_module(index), self.info(index), e["mean"], e["std"], ledger,
                          output=output, white_box=white_box)
        self._handles[key] = handle
        if len(self._handles) > self._cache_size:
            release(self._handles.popitem(last=False)[1])
        return handle

    def close(self) -> None:
        """Release every loaded model."""
        while self._handles:
            release(self._handles.popitem()[1])


def default_pool_dir() -> Path:
    """The pool cache without --pool-dir (:func:`dfml_bench.store.pool_dir`)."""
    return store.pool_dir()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (read in 1 MiB chunks), as the manifest records it."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(root: Path, entry: Mapping[str, Any]) -> Path:
    """Check one manifest entry's API file under pool directory `root` against its checksum;
    return its path, or raise PoolError saying how to rebuild the pool."""
    path = Path(root) / entry["file"]
    if not path.exists():
        raise PoolError(f"API file '{path}' is missing; delete '{root}' and run `dfml-bench pool build` "
                        "again to rebuild the pool.")
    if file_sha256(path) != entry["sha256"]:
        raise PoolError(f"API file '{path}' does not match its checksum (corrupt or modified); "
                        f"delete '{root}' and run `dfml-bench pool build` again to rebuild the pool.")
    return path


def read_manifest(root: Path) -> dict[str, Any]:
    """A built pool's manifest, or PoolError when it is missing or unreadable."""
    path = Path(root) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise PoolError(f"pool manifest '{path}' is missing or unreadable; delete '{root}' "
                        "to rebuild the pool.") from None


def verify_pool(root: Path) -> dict[str, Any]:
    """Check every API file of the pool in `root` against its manifest checksum; return the manifest."""
    manifest = read_manifest(root)
    for entry in manifest["apis"]:
        verify_file(root, entry)
    return manifest
