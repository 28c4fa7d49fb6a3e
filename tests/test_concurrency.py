"""Processes sharing a results directory and a pool cache: the work is done once, nothing is torn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from dfml_bench import store

def work(go: Path, results: Path, pools: Path, seed: int, ready: Path | None = None) -> dict:
    """Touch `ready`, wait for `go`, build the smoke SS pool, run `random` (evaluation only) with `seed`."""
    from dfml_bench.config import build_raw_config, component_params, resolve_runs
    from dfml_bench.plugins import load_registry
    from dfml_bench.pool import build_pool
    from dfml_bench.runner import Environment, build_scenario_by_name, execute_run

    registry = load_registry(strict=True)
    raw = build_raw_config("smoke", sets=[f"seeds=[{seed}]", "eval.episodes=3"], flags={"method": "random"})
    env = Environment(results, device="cpu", pool_dir=pools, workers=1)
    data = build_scenario_by_name(registry, *component_params(raw, "scenario", registry), env, seed=0)
    resolved = resolve_runs(raw, registry)[0]
    if ready is not None:
        ready.touch()
    while not go.exists():
        time.sleep(0.005)
    trained: list[int] = []
    root = build_pool(data.pool_spec, data.datasets, registry, pools, workers=1,
                      progress=lambda n=1, **kw: trained.append(n))
    return {"trained": len(trained), "pool": str(root), "result": execute_run(resolved, registry, env)}


CHILD = """import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from test_concurrency import work
out = work(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]), Path(sys.argv[6] + ".ready"))
Path(sys.argv[6]).write_text(json.dumps(out))
"""


def test_processes_share_a_pool_cache_and_a_results_directory(tmp_path: Path) -> None:
    """Two processes run the same config while this one runs another; all three build the same pool."""
    go, results, pools = tmp_path / "go", tmp_path / "results", tmp_path / "pools"
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(Path(__file__).parent), str(go), str(results),
                               str(pools), "0", str(tmp_path / f"out{i}.json")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]

    def start_together() -> None:  # once both children are ready to build
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all((tmp_path / f"out{i}.json.ready").exists() for i in range(2)):
            time.sleep(0.01)
        go.touch()

    threading.Thread(target=start_together, daemon=True).start()
    other = work(go, results, pools, seed=1)
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)
    same_a, same_b = (json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2))

    # the pool was trained by exactly one process and is whole
    assert sorted(o["trained"] for o in (same_a, same_b, other)) == [0, 0, 3]
    from dfml_bench.plugins import load_registry
    from dfml_bench.pool import APIPool

    pool = APIPool(Path(same_a["pool"]), load_registry(strict=True), torch.device("cpu"))
    assert len(pool) == 3 and all(pool.verify(i).exists() for i in range(len(pool)))

    # the same config ran once: one process did the work, the other returned its stored result
    assert sorted(bool(o["result"].get("skipped")) for o in (same_a, same_b)) == [False, True]
    strip = lambda r: {k: v for k, v in r.items() if k not in ("skipped", "run_dir")}  # noqa: E731
    assert strip(same_a["result"]) == strip(same_b["result"])
    assert not other["result"].get("skipped") and other["result"]["seed"] == 1

    # two finished, untorn run directories; one metrics line per logged iteration; no temp files left
    finished = list(store.iter_results(results))
    assert sorted(r["seed"] for r in finished) == [0, 1]
    for run in (results / store.RUNS_DIR).iterdir():
        iterations = [json.loads(line)["iteration"] for line in (run / store.METRICS_FILE).read_text().splitlines()]
        assert iterations == [0]
        assert not list(run.glob(".*.tmp")) and not (run / store.CHECKPOINT_FILE).exists()
        assert json.loads((run / store.RESULT_FILE).read_text())["run_id"] in run.name


def test_a_held_lock_makes_a_second_holder_wait(tmp_path: Path) -> None:
    lock = tmp_path / "run" / store.LOCK_FILE
    order: list[str] = []
    waited = threading.Event()

    def second() -> None:
        with store.exclusive_lock(lock, on_wait=waited.set):
            order.append("second")

    with store.exclusive_lock(lock):
        thread = threading.Thread(target=second)
        thread.start()
        assert waited.wait(5)
        order.append("first")
    thread.join(5)
    assert order == ["first", "second"]


def test_a_lock_left_by_a_killed_process_is_not_stale(tmp_path: Path) -> None:
    lock = tmp_path / store.LOCK_FILE
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from dfml_bench import store\nwith store.exclusive_lock(Path(sys.argv[1])):\n"
                               "    print('held', flush=True)\n    time.sleep(60)\n", str(lock)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        waited = threading.Event()
        done = threading.Event()

        def take() -> None:
            with store.exclusive_lock(lock, on_wait=waited.set):
                done.set()

        thread = threading.Thread(target=take, daemon=True)
        thread.start()
        assert waited.wait(5) and not done.is_set()  # really held by the other process
        os.kill(holder.pid, signal.SIGKILL)  # dies holding it, lock file left behind
        assert done.wait(5) and lock.exists()
    finally:
        holder.kill()
        holder.wait()
