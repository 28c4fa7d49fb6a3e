"""Grid progress: state read from run directories, counts and ETA (no clocks), plain-line output."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

from click.testing import CliRunner
from rich.console import Console

from dfml_bench.cli import main
from dfml_bench.progress import GridMonitor, GridState, RunProgress


def run(tmp_path: Path, name: str, status: str = "pending", total: int = 10, iteration: int | None = None) -> RunProgress:
    return RunProgress(name, tmp_path / name, total, status=status, iteration=iteration)


def test_counts_fraction_and_eta(tmp_path: Path) -> None:
    state = GridState([run(tmp_path, "a", "done"), run(tmp_path, "b", "failed"),
                       run(tmp_path, "c", "running", iteration=5), run(tmp_path, "d")])
    assert state.counts() == {"pending": 1, "running": 1, "done": 1, "failed": 1}
    assert state.fraction() == (1 + 1 + 0.5 + 0) / 4
    # 2.5 of 4 runs' work in 100 s: 1.5 runs left take 60 s
    assert state.eta(100.0) == 60.0
    assert "1/4 done, 1 running, 1 failed, 1 pending" in state.summary(100.0)
    assert "ETA 1:00" in state.summary(100.0)
    assert GridState([run(tmp_path, "x")]).eta(5.0) is None  # no progress yet: unknown, not 0
    assert GridState([run(tmp_path, "x", "done")]).eta(5.0) == 0.0
    assert run(tmp_path, "y", "running", total=0, iteration=0).fraction == 0.0  # nothing to train


def test_run_progress_reads_its_run_directory(tmp_path: Path) -> None:
    since = time.time() - 5
    r = run(tmp_path, "r", total=8)
    r.run_dir.mkdir()
    (r.run_dir / "error.json").write_text(json.dumps({"error": "an earlier attempt"}))
    os.utime(r.run_dir / "error.json", (since - 100, since - 100))  # before this grid: not a failure now
    r.read(since)
    assert r.status == "pending"
    (r.run_dir / "config.yaml").write_text("x: 1\n")
    (r.run_dir / "metrics.jsonl").write_text('{"iteration": 0, "queries": 440, "val_acc": 21.5}\n'
                                            '{"iteration": 1, "queries": 440}\n{"iteration": 2, "que')
    r.read(since)
    assert (r.status, r.iteration, r.queries, r.val_acc) == ("running", 1, 440, 21.5)  # the cut line waits
    assert r.describe() == "meta-iteration 1/8, 440 queries, val 21.5% at 0" and r.fraction == 1 / 8
    (r.run_dir / "metrics.jsonl").write_text('{"iteration": 0, "queries": 440, "val_acc": 20.0}\n')  # rewound
    r.read(since)
    assert (r.iteration, r.val_acc) == (0, 20.0)
    (r.run_dir / "result.json").write_text(json.dumps({"accuracy": 40.0, "ci95": 2.0, "queries": 880}))
    r.read(since)
    assert (r.status, r.accuracy, r.queries, r.fraction) == ("done", 40.0, 880, 1.0)

    f = run(tmp_path, "f")
    f.run_dir.mkdir()
    (f.run_dir / "error.json").write_text(json.dumps({"error": "boom"}))
    f.read(since)
    assert (f.status, f.error) == ("failed", "boom")


def test_plain_lines_on_changes_and_periodic_progress(tmp_path: Path) -> None:
    runs = [run(tmp_path, "a"), run(tmp_path, "b")]
    buf = io.StringIO()
    monitor = GridMonitor(GridState(runs), live=False, plain_every=30, console=Console(file=buf), clock=lambda: 0.0)
    monitor.start = 0.0
    runs[0].status, runs[0].iteration = "running", 3
    assert monitor.lines([(runs[0], "pending")], now=1.0) == ["[grid] started a"]
    assert monitor.lines([], now=20.0) == []  # not yet `plain_every` since the last line about it
    assert monitor.lines([], now=31.0) == ["[grid] a: meta-iteration 3/10"]
    assert monitor.lines([], now=62.0) == []  # nothing moved: no repeated line
    runs[0].queries = 440
    assert monitor.lines([], now=63.0) == ["[grid] a: meta-iteration 3/10, 440 queries"]
    assert monitor.lines([], now=80.0) == []  # moved, but within `plain_every` of the last line
    runs[0].status, runs[0].accuracy, runs[0].ci95 = "done", 50.0, 1.0
    lines = monitor.lines([(runs[0], "running")], now=40.0)
    # the launcher prints the outcome in plain mode; the monitor adds the counts and ETA
    assert lines == ["[grid] 1/2 done, 0 running, 0 failed, 1 pending; elapsed 0:40, ETA 0:40"]
    live = GridMonitor(GridState(runs), live=True, console=Console(file=io.StringIO()), clock=lambda: 0.0)
    assert live.lines([(runs[0], "running")], now=40.0) == [f"  a: 50.00 ± 1.00 -> {runs[0].run_dir}"]


def test_a_grid_prints_plain_lines_when_not_a_terminal(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["run", "-m", "random", "--seeds", "0,1", "--profile", "smoke", "--device", "cpu",
                                    "--set", "eval.episodes=2", "--results", str(tmp_path)], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "[grid] 2/2 done, 0 running, 0 failed, 0 pending" in out.output
    assert "\x1b[" not in out.output  # no cursor movement or colour codes in a log


def test_the_live_display_renders_counts_and_running_runs(tmp_path: Path) -> None:
    runs = [run(tmp_path, "maml / SS / 1-shot / seed 0", "running", iteration=4), run(tmp_path, "b", "done")]
    runs[0].queries, runs[0].val_acc = 1234, 33.3
    monitor = GridMonitor(GridState(runs), live=True, console=Console(file=io.StringIO()), clock=lambda: 0.0)
    buf = io.StringIO()
    Console(file=buf, width=120).print(monitor.render(now=10.0))
    text = buf.getvalue()
    assert "1/2 done, 1 running, 0 failed, 0 pending" in text
    assert "maml / SS / 1-shot / seed 0" in text and "meta-iteration 4/10, 1,234 queries, val 33.3%" in text
