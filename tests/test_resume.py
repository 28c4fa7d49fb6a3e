"""Kill-and-resume: a BiDf-MKD run SIGKILLed between two checkpoints and re-run with the same
command ends with exactly the uninterrupted run's result, metrics and recovered images (CPU)."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

# 8 meta-iterations with checkpoints after iterations 0 and 6. The kill comes once iteration 1 is
# logged, while iteration 3 (an API iteration, about a second) runs: between the two checkpoints.
ARGS = ["run", "-m", "bidf_mkd", "--profile", "smoke", "--device", "cpu", "--no-progress",
        "--set", "train.meta_iterations=8", "--set", "train.val_every=6", "--set", "eval.episodes=4",
        "--set", "scenario.SS.apis_per_cell=1", "--set", "scenario.SS.api_epochs=1",
        "--set", "loggers=[csv]", "--set", "launcher.threads=1"]
CLI = [sys.executable, "-c", "from dfml_bench.cli import main; main()"]
VOLATILE = {"wall_time", "wall_time_s", "peak_rss_mb", "peak_gpu_mb"}  # timings, not results


def command(results: Path, pools: Path) -> list[str]:
    return [*CLI, *ARGS, "--results", str(results), "--pool-dir", str(pools)]


def run_dir(results: Path) -> Path:
    (path,) = (results / "runs").iterdir()
    return path


def jsonl(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE} for line in path.read_text().splitlines()]


def csv_rows(path: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in csv.DictReader(io.StringIO(path.read_text()))]


def logged_iterations(path: Path) -> list[int]:
    """Iterations of the complete records of a metrics file that is being written."""
    if not path.exists():
        return []
    lines = path.read_text().split("\n")[:-1]  # the last element is "" or a line being written
    return [json.loads(line)["iteration"] for line in lines]


# "10": checkpoints after validations only (this run is far shorter than 10 minutes); "0": a checkpoint
# after every meta-iteration too, so the kill lands after one taken between validations.
@pytest.mark.parametrize("minutes", ["10", "0"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path, minutes: str) -> None:
    env = {**os.environ, "DFML_BENCH_CHECKPOINT_MINUTES": minutes}
    pools = tmp_path / "pools"
    full = subprocess.run(command(tmp_path / "full", pools), capture_output=True, text=True, timeout=180, env=env)
    assert full.returncode == 0, full.stderr
    wait_for = 1 if minutes == "10" else 3  # a record logged after the checkpoint to resume from

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed, pools), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            runs = killed / "runs"
            path = next(runs.iterdir(), None) if runs.exists() else None
            # the first checkpoint is written after iteration 0; wait for records logged after it
            if path is not None and (path / "checkpoint.pt").exists() and \
                    max(logged_iterations(path / "metrics.jsonl"), default=-1) >= wait_for:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-way: {proc.stderr.read()}"
    path = run_dir(killed)
    assert not (path / "result.json").exists()
    ckpt = torch.load(path / "checkpoint.pt", weights_only=True)
    # queries the servers answered after the checkpoint: lost with the kill, but spent
    lost = max(r["queries"] for r in jsonl(path / "metrics.jsonl")) - ckpt["ledger"]["total"]
    # the kill landed between checkpoints: records of iterations after the checkpoint exist. With a
    # checkpoint after every meta-iteration ("0") the kill may also land just after the checkpoint
    # that follows the last logged iteration; the resume must be exact either way
    logged = max(logged_iterations(path / "metrics.jsonl"))
    assert logged >= ckpt["iteration"] - (minutes == "0")
    assert ckpt["method"]["estimator"] and "rng" in ckpt  # estimator's generator and global RNGs saved
    # validations at iterations 0 and 6 checkpoint for iterations 1 and 7; "0" also checkpoints in between
    assert (ckpt["iteration"] in (1, 7)) == (minutes == "10"), ckpt["iteration"]

    resumed = subprocess.run(command(killed, pools), capture_output=True, text=True, timeout=180, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {path.name} at meta-iteration {ckpt['iteration']}" in resumed.stderr

    ref = run_dir(tmp_path / "full")
    got, want = (json.loads((d / "result.json").read_text()) for d in (path, ref))
    for key in VOLATILE:
        got.pop(key, None), want.pop(key, None)
    # every attempt's queries are recorded beside the counted ones
    assert want.pop("queries_spent") == want["queries"] and got.pop("queries_spent") >= got["queries"] + lost
    assert got == want  # accuracies, CIs, query counts, best iteration: exactly equal
    assert got["queries"] > 0 and got["meta_iterations"] == 8
    assert jsonl(path / "metrics.jsonl") == jsonl(ref / "metrics.jsonl")  # no record logged twice
    assert jsonl(path / "val_episodes.jsonl") == jsonl(ref / "val_episodes.jsonl")
    assert [r["iteration"] for r in jsonl(path / "val_episodes.jsonl")] == [0, 6, 8]
    assert [r["iteration"] for r in jsonl(path / "metrics.jsonl")] == list(range(9))
    assert csv_rows(path / "metrics.csv") == csv_rows(ref / "metrics.csv")
    assert (path / "recovered.png").read_bytes() == (ref / "recovered.png").read_bytes()
    assert not (path / "checkpoint.pt").exists()


def test_queries_spent_add_up_across_attempts(tmp_path: Path) -> None:
    from dfml_bench import store

    first = store.QuerySpend(tmp_path, 0)  # a fresh run
    assert [first.update(n) for n in (0, 40, 120)] == [0, 40, 120]  # then killed: its checkpoint had 40
    again = store.QuerySpend(tmp_path, 40)  # resumed from that checkpoint
    assert again.update(40) == 120 and again.update(200) == 280  # 80 lost + 160 counted since
    assert store.QuerySpend(tmp_path, 0).update(10) == 290  # a restart from scratch keeps counting
    assert sorted(p.name for p in tmp_path.iterdir()) == [store.SPENT_FILE]  # hidden: never rewound


def test_a_run_killed_before_its_first_checkpoint_restarts_with_clean_logs(tmp_path: Path) -> None:
    from dfml_bench import store

    path = tmp_path / "run"
    path.mkdir()
    (path / "config.yaml").write_text("x: 1\n")
    (path / "metrics.jsonl").write_text('{"iteration": 0}\n{"iteration": 1}\n{"itera')
    (path / "metrics.csv").write_text("iteration\n0\n1\n")
    (path / "stale.png").write_bytes(b"png")
    sizes = {"metrics.jsonl": len('{"iteration": 0}\n'), "metrics.csv": len("iteration\n0\n")}
    store.rewind_logs(path, sizes)  # resuming from a checkpoint taken after iteration 0
    assert (path / "metrics.jsonl").read_text() == '{"iteration": 0}\n'
    assert (path / "metrics.csv").read_text() == "iteration\n0\n"
    assert not (path / "stale.png").exists() and (path / "config.yaml").exists()
    store.rewind_logs(path, {})  # no checkpoint: a restart from scratch keeps only the store's files
    assert sorted(p.name for p in path.iterdir()) == ["config.yaml"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
