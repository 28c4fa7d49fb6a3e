"""End to end: a BiDf-MKD run's wall time against its API-forward floor, and where the time goes.

Runs `dfml-bench run -m bidf_mkd -s SS --shots 1 -p quick` (a fresh run in a temporary results
directory; the pool from the cache, built first if missing) in this process, exactly as the CLI
does (same allocator settings, same code path), with timers around its parts, then measures the
API's forward rate on the same machine in the same process:

* floor:  images sent to the APIs x the measured time of one image's API forward (`api.query`
          of B(q + 1) random images, the size of one ZO call of the run; median of interleaved
          repetitions taken before and after the run): what the run cannot go below without
          sending fewer images or making the API itself faster
* shares: exclusive time in the API forward (`api.query`), the boundary term's student
          forward, the ZO estimator's own algebra (directions, differences), the rest of a
          recovery (generator forward/backward, augmentation, losses), the rest of an API
          meta-iteration (inner KD, outer loss, its backward and the optimizer step), whole replay
          meta-iterations (task draws, second-order inner loops, backward, optimizer step),
          evaluation (validation and the final meta-test), and everything else (start-up,
          data, logging)

`--meta-iterations` cuts the run (and the boundary term starts at meta-iteration 0 unless
`--set method.bidf_mkd.boundary_start=...` says otherwise) for a shorter measurement; the
full quick run is `--meta-iterations 0` (the profile's 300).

    python benchmarks/end_to_end.py --meta-iterations 10 [--profile quick] [--pool-dir DIR] [--device cuda]
    DFML_BENCH_MALLOC=default python benchmarks/end_to_end.py ...   # glibc's default allocator
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dfml_bench.allocator import keep_freed_memory

SHARES = ("api forward", "boundary student", "zo algebra", "generator", "kd inner/outer", "replay", "evaluation")


class Timers:
    """Exclusive seconds per part: a part's time excludes the time of the parts it calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[float] = []

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            self._stack.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                inner = self._stack.pop()
                dt = time.perf_counter() - t0
                self.seconds[name] += dt - inner
                if self._stack:
                    self._stack[-1] += dt
        return timed


@contextmanager
def instrumented(timers: Timers) -> Iterator[dict[str, list[str]]]:
    """Wrap the run's parts with `timers`, and restore them afterwards. Yields {"missing": parts
    that could not be found (their time counts as 'other'), "pools": the pools the run opened}."""
    import dfml_bench.runner as runner
    from dfml_bench.apis import BlackBoxAPI
    from dfml_plugins.estimators.zeroth_order import estimator as zeroth_order
    from dfml_plugins.methods.bidf_mkd import method as bidf_mkd
    from dfml_plugins.recoverers.generator import recoverer as generator

    patched: list[tuple[Any, str, Any]] = []
    missing: list[str] = []
    pools: list[str] = []

    def patch(owner: Any, attr: str, part: str) -> None:
        original = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
        if original is None:
            missing.append(f"{getattr(owner, '__name__', owner)}.{attr}")
            return
        patched.append((owner, attr, original))
        setattr(owner, attr, timers.wrap(part, original))

    recover = generator.GeneratorRecoverer.recover

    def recover_with_timed_student(self: Any, api: Any, estimator: Any, per_class: int, image_size: int,
                                   gen: Any, student: Any = None) -> Any:
        if student is not None:
            student = timers.wrap("boundary student", student)
        return recover(self, api, estimator, per_class, image_size, gen, student)

    patch(BlackBoxAPI, "query", "api forward")
    patch(zeroth_order._ZeroOrder, "estimate", "zo algebra")
    patched.append((generator.GeneratorRecoverer, "recover", recover))
    generator.GeneratorRecoverer.recover = timers.wrap("generator", recover_with_timed_student)
    train_step = bidf_mkd.BidfMkd.train_step

    def train_step_timed(self: Any, iteration: int) -> Any:
        # the whole meta-iteration, backward and optimizer step included; its recovery has its own parts
        part = "kd inner/outer" if self._is_api_iteration(iteration) else "replay"
        return timers.wrap(part, train_step)(self, iteration)

    patched.append((bidf_mkd.BidfMkd, "train_step", train_step))
    bidf_mkd.BidfMkd.train_step = train_step_timed  # every replay strategy's meta-iterations
    patch(runner, "evaluate", "evaluation")
    open_pool = runner.open_pool

    def open_and_note(*args: Any, **kwargs: Any) -> Any:
        pool = open_pool(*args, **kwargs)
        pools.append(str(getattr(pool, "root", "")))
        return pool

    patched.append((runner, "open_pool", open_pool))
    runner.open_pool = open_and_note
    try:
        yield {"missing": missing, "pools": pools}
    finally:
        for owner, attr, original in reversed(patched):
            setattr(owner, attr, original)


def api_forward_seconds(pool_root: Path, images: int, repeats: int, device: str = "cpu") -> float:
    """Median seconds of one API's forward per image, on `images`-image calls of random inputs."""
    import torch

    from bench_util import side_by_side
    from dfml_bench.apis import QueryLedger
    from dfml_bench.plugins import load_registry
    from dfml_bench.pool import APIPool

    dev = torch.device(device)
    pool = APIPool(pool_root, load_registry(), dev)
    apis = [pool.api(i, QueryLedger()) for i in range(min(2, len(pool)))]
    x = torch.rand(images, 3, apis[0].info.input_size, apis[0].info.input_size, device=dev)
    times = side_by_side({str(i): (lambda a=a: a.query(x)) for i, a in enumerate(apis)}, dev, repeats)
    pool.close()
    return statistics.median(times.values()) / images


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--scenario", default="SS")
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--meta-iterations", type=int, default=10,
                    help="cut the run to this many meta-iterations (0: the profile's own)")
    ap.add_argument("--set", action="append", default=[], help="extra KEY=VALUE setting of the run")
    ap.add_argument("--pool-dir", default=None, help="pool cache (default: dfml-bench's)")
    ap.add_argument("--repeats", type=int, default=5, help="timed API forwards before and after the run")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default); see bench_util")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    keep_freed_memory()  # as the CLI does at start-up
    args = parse(argv)
    import torch

    from dfml_bench.cli import main as cli

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    sets = list(args.set)
    if args.meta_iterations > 0:
        sets.append(f"train.meta_iterations={args.meta_iterations}")
        if not any(s.startswith("method.bidf_mkd.boundary_start=") for s in sets):
            sets.append("method.bidf_mkd.boundary_start=0")
    timers = Timers()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["run", "-m", "bidf_mkd", "-s", args.scenario, "--shots", str(args.shots), "-p", args.profile,
               "--device", args.device, "--results", tmp, "--no-progress"]
        if args.pool_dir:
            cmd += ["--pool-dir", args.pool_dir]
        for s in sets:
            cmd += ["--set", s]
        # the pool first (built if missing, outside the timed run), so that the floor can be measured
        build = ["pool", "build", "-s", args.scenario, "-p", args.profile] + (
            ["--pool-dir", args.pool_dir] if args.pool_dir else [])
        cli(build, standalone_mode=False)
        with instrumented(timers) as notes:
            t0, c0 = time.perf_counter(), _cpu_seconds()
            cli(cmd, standalone_mode=False)
            wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        (found,) = Path(tmp).glob("runs/*/result.json")
        result = json.loads(found.read_text())
        import yaml

        resolved = yaml.safe_load((found.parent / "config.yaml").read_text())
    method = resolved["method"]["params"]
    q = int(resolved["components"]["estimator"][method["estimator"]]["q"])
    call = int(method["per_class"]) * int(resolved["ways"]) * (q + 1)  # one ZO call: B(q + 1) images
    pool_root = Path(notes["pools"][-1])
    per_image = api_forward_seconds(pool_root, call, args.repeats, args.device)
    queries = int(result["queries"])
    floor = queries * per_image
    other = wall - sum(timers.seconds[p] for p in SHARES)
    print(f"bidf_mkd {args.scenario} {args.shots}-shot, profile {args.profile}, "
          f"{args.meta_iterations or 'all'} meta-iterations, threads={torch.get_num_threads()}, "
          f"accuracy {result['accuracy']:.2f}")
    print(f"images sent {queries:,}; API forward {per_image * 1e6:.0f} us/image ({call}-image calls) -> floor "
          f"{floor:.1f} s; wall {wall:.1f} s = {wall / floor:.2f}x the floor; CPU {cpu:.1f} s (user + sys: "
          f"what a shared machine's load does not inflate)" if floor > 0 else
          f"no images sent; wall {wall:.1f} s")
    print(f"{'part':18s} {'s':>8s} {'share':>7s}")
    for part in (*SHARES, "other"):
        s = other if part == "other" else timers.seconds[part]
        print(f"{part:18s} {s:8.1f} {100 * s / wall:6.1f}%")
    in_run_api = timers.seconds["api forward"] / queries if queries else 0.0
    print(f"API forward inside the run: {in_run_api * 1e6:.0f} us/image (wall / that floor: "
          f"{wall / max(queries * in_run_api, 1e-9):.2f}x); peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if notes["missing"]:
        print(f"not found (counted as other): {', '.join(notes['missing'])}", file=sys.stderr)
    return {"wall_s": wall, "cpu_s": cpu, "queries": queries, "floor_s": floor, "api_s_per_image": per_image,
            "accuracy": result["accuracy"], "shares": {p: timers.seconds[p] for p in SHARES} | {"other": other}}


if __name__ == "__main__":
    main()
