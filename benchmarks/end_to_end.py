"""End to end: wall time and peak RSS of whole `dfml-bench run` processes.

Each run is a fresh `dfml-bench run ...` subprocess (results and, unless
--pool-dir is given, the pool cache in a temporary directory, so the pool build is included);
its peak RSS comes from the kernel's accounting of that child (os.wait4). Runs, side by side:

* smoke:       bidf_mkd, the smoke profile (seconds; what the tests run)
* quick-short: bidf_mkd with the quick profile's method settings (q=20, 30 generator steps,
               6 images/class, KD and MAML 5 inner steps) for 1 meta-iteration of 2 API tasks,
               on the smoke pool and evaluation (a quick pool takes minutes to build; use
               --set to run longer)

    python benchmarks/end_to_end.py [--device cpu] [--runs smoke,quick-short] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

RUNS: dict[str, tuple[str, list[str]]] = {
    "smoke": ("smoke", []),
    # the smoke pool and evaluation, with the quick profile's BiDf-MKD settings
    "quick-short": ("smoke", ["train.meta_iterations=1", "train.meta_batch_size=2", "queries=15",
                              "method.per_class=6", "method.patience=20", "method.boundary_start=100",
                              "estimator.zo_forward.q=20", "recoverer.generator.iterations=30",
                              "recoverer.generator.z_dim=256", "meta_learner.kd.inner_steps=5",
                              "meta_learner.maml.inner_steps=5"]),
}


def run_once(profile: str, sets: list[str], device: str, threads: int, results: Path, pools: Path) -> dict:
    """Wall time (s) and peak RSS (MB) of one `dfml-bench run` child process."""
    cmd = [sys.executable, "-c", "from dfml_bench.cli import main; main()",
           "run", "-m", "bidf_mkd", "-s", "SS", "--shots", "1",
           "-p", profile, "--device", device, "--results", str(results), "--pool-dir", str(pools), "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ)
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = proc.stdout.read().decode() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    found = sorted(results.glob("runs/*/result.json"))
    if os.waitstatus_to_exitcode(status) != 0 or not found:
        raise RuntimeError(f"run failed:\n{out[-2000:]}")
    result = json.loads(found[0].read_text())
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "queries": result["queries"],
            "accuracy": result["accuracy"], "run_wall_s": result["wall_time_s"]}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", default="smoke,quick-short", help=f"comma-separated, of {sorted(RUNS)}")
    ap.add_argument("--set", action="append", default=[], help="extra setting for every run")
    ap.add_argument("--pool-dir", default=None, help="pool cache (default: a temporary directory)")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the runs (0: torch's default)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse(argv)
    rows = []
    print(f"device={args.device} threads={args.threads} method=bidf_mkd SS 1-shot (pool build included "
          f"unless cached in --pool-dir)")
    print(f"{'run':12s} {'wall s':>7s} {'in-run s':>8s} {'peak RSS MB':>11s} {'queries':>10s} {'acc %':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        pools = Path(args.pool_dir) if args.pool_dir else Path(tmp) / "pools"
        for name in args.runs.split(","):
            profile, sets = RUNS[name]
            r = run_once(profile, sets + args.set, args.device, args.threads, Path(tmp) / name, pools)
            print(f"{name:12s} {r['wall_s']:7.1f} {r['run_wall_s']:8.1f} {r['peak_rss_mb']:11.0f} "
                  f"{r['queries']:10,d} {r['accuracy']:6.1f}", flush=True)
            rows.append({"run": name, **r})
    return rows


if __name__ == "__main__":
    main()
