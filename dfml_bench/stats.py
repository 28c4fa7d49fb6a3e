"""Confidence intervals: the per-run CI over episodes, the across-seed CI, and the paired bootstrap
of `dfml-bench compare --against` (docs/statistics.md). Torch-free: numpy only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Sequence

# Student's t, 97.5 % quantile, for 1..30 degrees of freedom
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    """Student's t 97.5 % quantile: tabulated to 30 degrees of freedom, then the Cornish-Fisher
    expansion around 1.96 (within 1e-3 of the exact value)."""
    if df < 1:
        raise ValueError("t975 needs at least one degree of freedom")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def mean_ci95(values: Sequence[float], *, student_t: bool = False) -> tuple[float, float]:
    """Mean and half-width of the 95% CI, q * sample std / sqrt(n) (0 for n < 2), with q = 1.96
    (normal: the protocol's CI over hundreds of episodes) or, with `student_t`, Student's t
    quantile for n - 1 degrees of freedom (a handful of seeds: 12.71 for 2, 4.30 for 3)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci95 needs at least one value")
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, (t975(n - 1) if student_t else 1.96) * math.sqrt(var) / math.sqrt(n)


def per_dataset_summary(episodes: dict[str, list[float]]) -> dict[str, dict[str, object]]:
    """Per dataset: accuracy, 95% CI, episode count and the episode accuracies, as a result records
    an evaluation (``per_dataset``, ``best_val_per_dataset``)."""
    out: dict[str, dict[str, object]] = {}
    for name, accs in episodes.items():
        mean, ci = mean_ci95(accs)
        out[name] = {"accuracy": mean, "ci95": ci, "episodes": len(accs), "episode_accuracies": list(accs)}
    return out


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """A paired difference (percentage points) with its 95% bootstrap percentile interval."""

    diff: float
    low: float
    high: float
    seeds: int
    episodes: int

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0."""
        return self.low > 0 or self.high < 0

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def paired_bootstrap(diffs: Sequence[Sequence[float]], episode_sets: Sequence[Hashable] | None = None, *,
                     resamples: int = 4000, seed: int = 0) -> PairedDifference:
    """Mean paired difference and its 95% CI from a two-level bootstrap over seeds and episodes.

    ``diffs[s][i]`` is the difference on test episode i of seed s (all seeds hold the same number
    of episodes). Each resample draws the episodes with replacement, then the seeds with
    replacement; seeds evaluated on the same episodes (equal ``episode_sets`` keys: the same
    eval seed) share one episode draw, since a fixed episode set is one sample of episodes
    (crossed design), while seeds with their own episodes draw theirs independently (nested).
    The bootstrap variance splits into an episode part (episodes resampled, all seeds kept) and
    a seed part (the seed draw's deviation from it, scaled by sqrt(S / (S - 1)) so that it is
    unbiased). The interval is mean +- t * sqrt(episode part + seed part), with Student's t for
    the Satterthwaite degrees of freedom of the two parts (the seed part has S - 1): with a few
    seeds a plain percentile interval is too narrow (benchmarks/paired_bootstrap.py measures
    both). With one seed only the episode part remains. The generator is seeded, so the same
    records give the same interval.
    """
    import numpy as np

    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] < 1 or d.shape[1] < 1:
        raise ValueError("paired_bootstrap needs a [seeds, episodes] array of differences")
    n_seeds, n_eps = d.shape
    keys = list(episode_sets) if episode_sets is not None else list(range(n_seeds))
    if len(keys) != n_seeds:
        raise ValueError("paired_bootstrap needs one episode-set key per seed")
    rng = np.random.default_rng(seed)
    # an episode draw as counts: how often each episode is picked in each resample [resamples, episodes]
    offsets = (np.arange(resamples) * n_eps)[:, None]
    counts = {k: np.bincount((rng.integers(0, n_eps, size=(resamples, n_eps)) + offsets).ravel(),
                             minlength=resamples * n_eps).reshape(resamples, n_eps).astype(np.float64)
              for k in dict.fromkeys(keys)}
    # per seed: its mean over each resample's episodes -> [resamples, seeds]
    per_seed = np.stack([counts[k] @ d[s] / n_eps for s, k in enumerate(keys)], axis=1)
    picks = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    centre = per_seed.mean(axis=1)  # episodes resampled, every seed kept
    # resampling S seeds gives their mean a variance (S-1)/S of the unbiased one: rescaled to it
    scale = math.sqrt(n_seeds / (n_seeds - 1)) if n_seeds > 1 else 1.0
    seed_part = scale * (np.take_along_axis(per_seed, picks, axis=1).mean(axis=1) - centre)
    v_episodes, v_seeds = float(centre.var(ddof=1)), float(seed_part.var(ddof=1))
    # Satterthwaite: the seed part is estimated from S - 1 degrees of freedom, the episode part from n - 1
    if n_seeds > 1 and v_seeds > 0:
        df = (v_seeds + v_episodes) ** 2 / (v_seeds ** 2 / (n_seeds - 1) + v_episodes ** 2 / max(n_eps - 1, 1))
    else:
        df = float(max(n_eps - 1, 1))
    half = t975(max(1, int(df))) * math.sqrt(v_seeds + v_episodes)
    mean = float(d.mean())
    return PairedDifference(mean, mean - half, mean + half, n_seeds, n_eps)
