"""Recovery agreement: how often an API labels the images inverted from it as their target class.

Runs BiDf-MKD's generator recoverer with the `zo_forward` estimator on the first `--apis` APIs
of a built pool and prints each API's agreement (the issue-4 acceptance figure) and the time
per recovery, for one generator setting per call:

    dfml-bench pool build --scenario SS      # prints the pool hash
    python benchmarks/recovery_agreement.py --pool <hash> --width 32 --iterations 30 --lr 0.01 --q 20

`--peers` also asks every other API of the pool that was trained on a recovered image's class
to label it: images that carry the class convince those peers; images fitted to the source
API's quirks do not.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch

from dfml_bench.apis import QueryLedger
from dfml_bench.plugins import load_registry
from dfml_bench.pool import APIPool, default_pool_dir
from dfml_plugins.estimators.zeroth_order import ZOParams
from dfml_plugins.estimators.zeroth_order.estimator import WhiteBoxGradient, ZOForward
from dfml_plugins.recoverers.generator import GeneratorRecovererParams
from dfml_plugins.recoverers.generator.recoverer import GeneratorRecoverer


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
    for i in chosen:
        api = pool.api(i, QueryLedger(), white_box=a.white_box)
        estimator = WhiteBoxGradient() if a.white_box else ZOForward(ZOParams(q=a.q), i)
        found = recoverer.recover(api, estimator, a.per_class, infos[i].input_size,
                                  torch.Generator().manual_seed(i))
        agreements.append(found.agreement)  # percent
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
    return agreements


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
