"""Test-time evaluation: fine-tuning episodes in channels-last vs the default (contiguous) layout.

One process, side by side (warm-up, interleaved rounds, median): `dfml_bench.evaluation.evaluate`
over the same episodes with ``layout="contiguous"`` and ``layout="channels_last"`` on a conv4
meta model (quick profile: width 32, 32 px, 5-way, 15 queries, 10 SGD steps). Prints seconds per
episode, the contiguous / channels-last ratio, and how many episodes' accuracies differ (float
rounding can flip a near-tied query prediction).

    python benchmarks/evaluation.py [--device cpu] [--threads 1] [--shots 1,5] [--episodes 10]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from bench_util import set_threads, side_by_side
from dfml_bench.data import EpisodeSampler, ImageSplit, Normalizer
from dfml_bench.evaluation import evaluate
from dfml_plugins.models.conv4 import Conv4Params
from dfml_plugins.models.conv4.model import build_conv4


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--size", type=int, default=32, help="image size (glyphs: 32)")
    ap.add_argument("--width", type=int, default=32, help="conv4 width (quick and paper: 32)")
    ap.add_argument("--shots", default="1,5")
    ap.add_argument("--queries", type=int, default=15)
    ap.add_argument("--steps", type=int, default=10, help="fine-tuning steps (eval.steps)")
    ap.add_argument("--episodes", type=int, default=10, help="episodes per timed evaluation")
    ap.add_argument("--repeats", type=int, default=3)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, float]]:
    a = parse(argv)
    device = torch.device(a.device)
    set_threads(a.threads, device)
    torch.manual_seed(0)
    model = build_conv4(Conv4Params(width=a.width), 5, a.size).to(device)
    g = torch.Generator().manual_seed(0)
    per_class, classes = 40, 10
    images = torch.randint(0, 256, (classes * per_class, 3, a.size, a.size), dtype=torch.uint8, generator=g)
    split = ImageSplit(images, torch.arange(classes).repeat_interleave(per_class), [str(c) for c in range(classes)])
    norm = Normalizer((0.5,) * 3, (0.5,) * 3, device)
    print(f"device={device} threads={torch.get_num_threads()} conv4 width={a.width} {a.size}px 5-way "
          f"queries={a.queries} steps={a.steps} episodes={a.episodes} repeats={a.repeats}")
    print(f"{'shots':>5} {'contig s/ep':>12} {'cl s/ep':>9} {'contig/cl':>10} {'episodes differing':>19}")
    rows = []
    for shots in (int(s) for s in a.shots.split(",")):
        sampler = EpisodeSampler(split, 5, shots, a.queries, 0, norm)
        results = {}

        def run(layout: str):
            return lambda: results.__setitem__(layout, evaluate(model, sampler, a.episodes, a.steps, 0.01,
                                                                  layout=layout))

        t = side_by_side({"contiguous": run("contiguous"), "channels_last": run("channels_last")}, device, a.repeats)
        differ = sum(x != y for x, y in zip(results["contiguous"].episode_accuracies,
                                            results["channels_last"].episode_accuracies))
        row = {"shots": shots, "contiguous": t["contiguous"] / a.episodes, "channels_last": t["channels_last"] / a.episodes,
               "ratio": t["contiguous"] / t["channels_last"], "differ": differ}
        print(f"{shots:>5} {row['contiguous']:>12.4f} {row['channels_last']:>9.4f} {row['ratio']:>9.2f}x "
              f"{differ:>12} of {a.episodes}")
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
