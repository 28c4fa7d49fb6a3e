"""Recovery agreement: how often an API labels the images inverted from it as their target class.

Runs BiDf-MKD's generator recoverer with the `zo_forward` estimator on the first `--apis` APIs
of a built pool and prints each API's agreement (the recovery's acceptance figure) and the time
per recovery, for one generator setting per call:

    dfml-bench pool build --scenario SS      # prints the pool hash
    python benchmarks/recovery_agreement.py --pool <hash> --width 32 --iterations 30 --lr 0.01 --q 20

`--peers` also asks every other API of the pool that was trained on a recovered image's class
to label it: images that carry the class convince those peers; images fitted to the source
API's quirks do not.

`--class-stats` (glyphs pools) compares the recovered images of each class with real meta-train
images of that class, in pixel space: the share of recovered images that correlate most with their
own class's real mean image (among the API's classes), and the mean and spread of their pixel
values. The same figures for held-out real images of the class and for API-labelled uniform noise
(what `bidf_mkd_noise` trains on), computed in the same run, bracket them.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from dfml_bench.apis import QueryLedger
from dfml_bench.plugins import load_registry
from dfml_bench.pool import APIPool, default_pool_dir
from dfml_plugins.datasets.glyphs import GlyphsParams
from dfml_plugins.datasets.glyphs.dataset import build_glyphs
from dfml_plugins.estimators.zeroth_order import ZOParams
from dfml_plugins.estimators.zeroth_order.estimator import WhiteBoxGradient, ZOForward
from dfml_plugins.recoverers.generator import GeneratorRecovererParams
from dfml_plugins.recoverers.generator.recoverer import GeneratorRecoverer, NoiseRecoverer


def main(argv: list[str] | None = None) -> list[float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", required=True, help="pool hash (dfml-bench pool ls)")
    ap.add_argument("--apis", type=int, default=4, help="how many APIs of the pool to invert")
    ap.add_argument("--arch", default=None, help="only APIs of this architecture (e.g. resnet18), as in `pool show`")
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--q", type=int, default=20)
    ap.add_argument("--pad", type=int, default=4, help="random-crop padding of the recovery augmentation, px")
    ap.add_argument("--no-flip", action="store_true", help="no random horizontal flips in the recovery augmentation")
    ap.add_argument("--white-box", action="store_true", help="exact input gradients instead of zo_forward")
    ap.add_argument("--peers", action="store_true",
                    help="also query every OTHER API that knows a recovered image's class and print, per (source, "
                         "peer) architecture, how often the peer labels it so (do the images carry the class, or "
                         "only the source API's quirks?)")
    ap.add_argument("--class-stats", action="store_true",
                    help="also compare each class's recovered images with real meta-train images of the class "
                         "(the real class-mean image each correlates with most, pixel mean and spread), beside held-out real images and "
                         "API-labelled noise")
    ap.add_argument("--instance", default="dev", help="glyphs instance the pool was built on (for --class-stats)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pool-dir", help="cache of built pools (default: dfml-bench's)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    pool = APIPool(Path(a.pool_dir or default_pool_dir()) / a.pool, load_registry(), torch.device("cpu"))
    recoverer = GeneratorRecoverer(GeneratorRecovererParams(iterations=a.iterations, lr=a.lr, width=a.width,
                                                                  pad=a.pad, flip=not a.no_flip))
    agreements, t0 = [], time.perf_counter()
    infos = [pool.info(i) for i in range(len(pool))]
    if a.arch is None:
        chosen = list(range(len(pool)))[:a.apis]
    else:
        chosen = [i for i in range(len(pool)) if infos[i].architecture == a.arch][:a.apis]
    if not chosen:
        raise SystemExit(f"no API of architecture '{a.arch}' in pool {a.pool}; see `dfml-bench pool show {a.pool}`.")
    cross: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])  # (source, peer) -> [agreed, asked]
    peer_ledger = QueryLedger()  # one ledger, so the pool's handle cache reuses each peer's loaded model
    train = real_train_split(infos[0].dataset, a.instance) if a.class_stats else None
    stats: dict[str, list[ClassStats]] = defaultdict(list)
    for i in chosen:
        api = pool.api(i, QueryLedger(), white_box=a.white_box)
        estimator = WhiteBoxGradient() if a.white_box else ZOForward(ZOParams(q=a.q), i)
        found = recoverer.recover(api, estimator, a.per_class, infos[i].input_size,
                                  torch.Generator().manual_seed(i))
        agreements.append(found.agreement)  # percent
        if train is not None:
            g = torch.Generator().manual_seed(10_000 + i)
            real = [train_images(train, c) for c in infos[i].classes]
            means = torch.stack([r[: len(r) // 2].mean(0) for r in real])  # the first half defines the class means
            held = [r[len(r) // 2:][: a.per_class] for r in real]
            held_labels = torch.cat([torch.full((len(h),), k) for k, h in enumerate(held)])
            noise = NoiseRecoverer().recover(api, estimator, a.per_class, infos[i].input_size, g)  # the floor's data
            stats["recovered"].append(class_stats(found.images, found.labels, means))
            stats["real, held out"].append(class_stats(torch.cat(held), held_labels, means))
            stats["API-labelled noise"].append(class_stats(noise.images, noise.labels, means))
        if a.peers:
            peer_agreement(pool, infos, i, found.images, torch.tensor(infos[i].classes)[found.labels], cross,
                           peer_ledger)
    per = (time.perf_counter() - t0) / len(agreements)
    print(("" if a.arch is None else f"arch={a.arch} ") + f"width={a.width} iterations={a.iterations} lr={a.lr} "
          + ("white_box" if a.white_box else f"q={a.q}") + f" pad={a.pad} flip={not a.no_flip} per_class={a.per_class}: agreement "
          + " / ".join(f"{x:.1f}" for x in agreements) + f" %, mean {sum(agreements) / len(agreements):.1f} %, "
          f"{per:.1f} s per recovery")
    for (src, peer), (agreed, asked) in sorted(cross.items()):
        print(f"  from {src} to {peer} peers: {100 * agreed / asked:.1f} % of {asked} images")
    if stats:
        print(f"  class statistics against real meta-train images (pixels; nearest class mean by chance: "
              f"{100 / len(infos[chosen[0]].classes):.0f} %):")
        for name, rows in stats.items():
            print(f"    {name:18s} nearest real class mean: {sum(r.nearest for r in rows) / len(rows):5.1f} %, "
                  f"pixel mean {sum(r.mean for r in rows) / len(rows):.3f}, spread {sum(r.std for r in rows) / len(rows):.3f}")
    return agreements


@dataclass(frozen=True)
class ClassStats:
    """Pixel statistics of labelled images against real images of their classes."""

    nearest: float  # % of images most correlated with their label's real class-mean image
    mean: float     # mean pixel value of the images
    std: float      # mean over classes of the pixel spread (per-pixel std) within the class's images


def class_stats(images: torch.Tensor, labels: torch.Tensor, means: torch.Tensor) -> ClassStats:
    """`images` [N,3,H,W] in [0,1] with labels (positions in the API's classes) against the real
    class-mean images `means` [K,3,H',W'] (nearest = highest Pearson correlation of pixels); images
    are resized to the real resolution first."""
    labels = labels.to(images.device)
    if images.shape[-1] != means.shape[-1]:
        images = F.interpolate(images, size=means.shape[-2:], mode="bilinear", align_corners=False)
    centred = [(v - v.mean(1, keepdim=True)) / (v - v.mean(1, keepdim=True)).norm(dim=1, keepdim=True).clamp_min(1e-8)
               for v in (images.flatten(1), means.flatten(1))]
    nearest = (centred[0] @ centred[1].T).argmax(1)  # highest pixel correlation: blind to brightness and contrast
    spread = [images[labels == k].std(0).mean() for k in labels.unique() if int((labels == k).sum()) > 1]
    return ClassStats(100 * (nearest == labels).float().mean().item(), images.mean().item(),
                      torch.stack(spread).mean().item() if spread else float("nan"))


def real_train_split(dataset: str, instance: str) -> object:
    """The meta-train split of the glyphs domain a pool was trained on."""
    if not dataset.startswith("glyphs-"):
        raise SystemExit(f"--class-stats reads glyphs pools; this pool is on {dataset}.")
    params = GlyphsParams(domain=dataset.removeprefix("glyphs-"), instance=instance)
    return build_glyphs(params, None, default_pool_dir().parent).splits["train"]


def train_images(split: object, global_class: int) -> torch.Tensor:
    """Every meta-train image of one class, as [0,1] floats."""
    idx = torch.nonzero(split.labels == global_class).flatten()  # type: ignore[attr-defined]
    return split.images[idx].float() / 255  # type: ignore[attr-defined]


def peer_agreement(pool: APIPool, infos: list, source: int, images: torch.Tensor, classes: torch.Tensor,
                   cross: dict[tuple[str, str], list[int]], ledger: QueryLedger) -> None:
    """Ask every other API that knows some of the recovered classes to label those images."""
    for j, info in enumerate(infos):
        shared = torch.tensor([c for c in info.classes if c in infos[source].classes], dtype=torch.long)
        if j == source or not len(shared):
            continue
        mask = torch.isin(classes, shared)
        with torch.no_grad():
            pred = torch.tensor(info.classes)[pool.api(j, ledger, white_box=False).query(images[mask]).argmax(1)]
        tally = cross[(infos[source].architecture, info.architecture)]
        tally[0] += int((pred == classes[mask]).sum())
        tally[1] += int(mask.sum())


if __name__ == "__main__":
    main()
