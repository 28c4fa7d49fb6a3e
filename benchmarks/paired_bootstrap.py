"""Calibration of the paired bootstrap of `compare --against` (dfml_bench.stats.paired_bootstrap).

Simulates per-episode differences with no true difference, d[s][i] = a_s + b_i + e_si (a: a
training seed's offset, b: an episode's difficulty shared by every seed, e: noise), and prints
how often the 95 % CI excludes 0 (the false-positive rate; 0.05 is calibrated) and its mean
width, for a few seed counts and seed-offset sizes. Also prints the seconds per bootstrap of
3 seeds x 600 episodes.

    python benchmarks/paired_bootstrap.py [--trials 200] [--episodes 600] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np

from dfml_bench.stats import paired_bootstrap


def main(argv: Sequence[str] | None = None) -> list[dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seeds", default="1,3,5")
    ap.add_argument("--seed-sd", default="0,1,2", help="SDs (points) of the seeds' offsets a_s")
    ap.add_argument("--episode-sd", type=float, default=3.0)
    ap.add_argument("--noise-sd", type=float, default=15.0)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    d = rng.normal(0, a.noise_sd, (3, 600))
    paired_bootstrap(d, [0, 0, 0])
    t0 = time.perf_counter()
    paired_bootstrap(d, [0, 0, 0])
    print(f"one bootstrap of 3 seeds x 600 episodes, 4000 resamples: {time.perf_counter() - t0:.3f} s")
    print(f"no true difference; episode sd {a.episode_sd}, noise sd {a.noise_sd}, {a.episodes} episodes, "
          f"{a.trials} trials, {a.resamples} resamples")
    print(f"{'seeds':>5} {'seed sd':>8} {'false pos.':>10} {'mean CI width':>14}")
    rows = []
    for seeds in (int(s) for s in a.seeds.split(",")):
        for sd in (float(s) for s in a.seed_sd.split(",")):
            hits, width = 0, 0.0
            for t in range(a.trials):
                diffs = (rng.normal(0, sd, (seeds, 1)) + rng.normal(0, a.episode_sd, (1, a.episodes))
                         + rng.normal(0, a.noise_sd, (seeds, a.episodes)))
                res = paired_bootstrap(diffs, [0] * seeds, resamples=a.resamples, seed=t)
                hits += res.significant
                width += res.high - res.low
            row = {"seeds": seeds, "seed_sd": sd, "false_positive": hits / a.trials, "width": width / a.trials}
            print(f"{seeds:>5} {sd:>8.1f} {row['false_positive']:>10.3f} {row['width']:>14.2f}")
            rows.append(row)
    return rows


if __name__ == "__main__":
    main()
