"""Shared helpers of the benchmarks: side-by-side timing and peak memory of a piece of work.

Timing: one warm-up per function, then rounds in rotating order, median per function, so that
a shared machine's load hits every candidate alike (ratios are what count, not seconds).
Memory: on CUDA, torch's allocator peak; on CPU, the process's peak RSS above its RSS before
the work (Linux: the VmHWM high-water mark, reset just before; each measured piece runs in a
fresh subprocess so that nothing else it did counts).
Threads: `--threads` (default 1 on CPU). On this shared 2-core machine, two OpenMP threads
competing with other processes made a conv4 inner loop 5-15x SLOWER than one thread (spinning
barriers), so single-threaded figures are the stable ones; ratios are what count.
Precision: on CUDA, IEEE float32 (TensorFloat-32 off), as every run computes.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def side_by_side(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int) -> dict[str, float]:
    """Median seconds per function: one warm-up each, then `repeats` rounds in rotating order.

    Timed with the allocator settings of a `dfml-bench` process (freed memory kept for reuse,
    dfml_bench.allocator; `DFML_BENCH_MALLOC=default` for glibc's own).
    """
    from dfml_bench.allocator import keep_freed_memory

    keep_freed_memory(children=False)
    def once(fn: Callable[[], object]) -> float:
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - t0

    for fn in fns.values():
        once(fn)
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            times[n].append(once(fns[n]))
    return {n: statistics.median(t) for n, t in times.items()}


def current_rss_mb() -> float:
    """Resident set size of this process now, MB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def _peak_rss_mb() -> float:
    """The process's RSS high-water mark (VmHWM, MB); ru_maxrss where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> None:
    try:  # Linux >= 4.0: writing 5 resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_above_now(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory (MB) that `fn` needs above what is held before it: CUDA allocator peak or RSS."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    _reset_peak_rss()
    before = current_rss_mb()
    fn()
    return _peak_rss_mb() - before


_PRECISION = contextlib.ExitStack()  # held for the process's life: benchmarks are short-lived processes


def set_threads(n: int, device: torch.device) -> None:
    """torch's CPU threads: `n` if > 0, else torch's default; on CUDA also a run's IEEE float32."""
    if n > 0:
        torch.set_num_threads(n)
    if device.type == "cuda":
        from dfml_bench.runner import exact_float32

        _PRECISION.enter_context(exact_float32(device))


def in_subprocess(script: str, child_args: dict[str, object], timeout: float = 300,
                  faithful_rss: bool = True) -> dict[str, object]:
    """Run `script --child JSON` in a fresh interpreter and return the JSON it prints last.

    `faithful_rss`: glibc serves every allocation over 128 KB by mmap and gives it back on free,
    so that RSS follows the live tensors instead of a heap that keeps freed memory for reuse
    (slower: page faults on every allocation, so not for timing).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    if faithful_rss:
        env.update(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072", DFML_BENCH_MALLOC="default")
    out = subprocess.run([sys.executable, script, "--child", json.dumps(child_args)], capture_output=True,
                         text=True, timeout=timeout, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{script} child failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_args(argv: Sequence[str] | None) -> dict[str, object] | None:
    """The JSON argument of a `--child` invocation, or None for a normal run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 2 and argv[0] == "--child":
        return json.loads(argv[1])
    return None
