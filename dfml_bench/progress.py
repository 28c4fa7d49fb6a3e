"""Progress on stderr: rich bars for one run (no-ops when disabled), and a grid monitor that
shows a whole grid live in a terminal, or as plain lines in tests and CI logs."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_console = Console(stderr=True)


class Reporter:
    """Creates progress bars; `enabled=False` (or a non-terminal stderr) keeps output quiet."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.console = _console

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        """A bar with `total` steps; yields `advance(n=1, **fields)`."""
        if not self.enabled or total <= 0:
            yield lambda n=1, **fields: None
            return
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=self.console, transient=True)
        with progress:
            tid = progress.add_task(description, total=total, info="")

            def advance(n: int = 1, **fields: object) -> None:
                info = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
                progress.update(tid, advance=n, **({"info": info} if fields else {}))

            yield advance

    def log(self, message: str) -> None:
        """A status line (shown even when bars are disabled, unless quiet)."""
        self.console.print(message, highlight=False)


# -- grids -------------------------------------------------------------------------------------

STATUSES = ("pending", "running", "done", "failed")


@dataclasses.dataclass
class RunProgress:
    """What is known about one run of a grid, read from its run directory."""

    label: str
    run_dir: Path
    total: int                        # meta-iterations it will train
    status: str = "pending"
    iteration: int | None = None      # latest logged meta-iteration
    queries: int | None = None        # API queries used so far
    val_acc: float | None = None      # latest meta-val accuracy
    val_iteration: int | None = None  # the meta-iteration it was logged at
    accuracy: float | None = None     # final meta-test accuracy (done)
    ci95: float | None = None
    error: str | None = None          # failed
    offset: int = 0                   # bytes of metrics.jsonl read so far
    last_line: float = 0.0            # when plain output last reported it
    last_text: str = ""               # what plain output last reported about it

    @property
    def fraction(self) -> float:
        """Share of the run's work finished: 1 when done or failed, logged iterations / total while running."""
        if self.status in ("done", "failed"):
            return 1.0
        if self.status == "running" and self.total > 0 and self.iteration is not None:
            return min(self.iteration / self.total, 0.99)
        return 0.0

    def describe(self) -> str:
        """'meta-iteration 120/300, 12,345 queries, val 45.3% at 100' (what is known so far; the
        validation's iteration is named when it is not the latest one)."""
        parts = []
        if self.iteration is not None and self.total > 0:
            parts.append(f"meta-iteration {self.iteration}/{self.total}")
        if self.queries:
            parts.append(f"{self.queries:,} queries")
        if self.val_acc is not None:
            at = "" if self.val_iteration in (None, self.iteration) else f" at {self.val_iteration}"
            parts.append(f"val {self.val_acc:.1f}%{at}")
        return ", ".join(parts) or "starting"

    def read(self, since: float) -> None:
        """Update from the run directory; files older than `since` (an earlier attempt) do not count."""
        d = self.run_dir
        if (d / "result.json").exists():
            try:
                result = json.loads((d / "result.json").read_text())
                self.accuracy, self.ci95 = float(result["accuracy"]), float(result["ci95"])
                self.queries = int(result.get("queries") or 0) or self.queries
            except (OSError, ValueError, KeyError, TypeError):
                pass
            self.status = "done"
            return
        if _newer(d / "error.json", since):
            try:
                self.error = str(json.loads((d / "error.json").read_text()).get("error", ""))
            except (OSError, ValueError):
                self.error = None
            self.status = "failed"
            return
        if self.status == "pending" and _newer(d / "config.yaml", since):
            self.status = "running"
        if self.status == "running":
            self._read_metrics(d / "metrics.jsonl")

    def _read_metrics(self, path: Path) -> None:
        """Read the records appended since the last call (from the start if the file was cut)."""
        try:
            size = path.stat().st_size
            if size < self.offset:  # rewound on resume
                self.offset = 0
            if size == self.offset:
                return
            with open(path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read(size - self.offset)
        except OSError:
            return
        end = chunk.rfind(b"\n") + 1  # complete lines only
        self.offset += end
        for line in chunk[:end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "iteration" in rec:
                self.iteration = int(rec["iteration"])
            if "queries" in rec:
                self.queries = int(rec["queries"])
            if "val_acc" in rec:
                self.val_acc = float(rec["val_acc"])
                self.val_iteration = self.iteration


def _newer(path: Path, since: float) -> bool:
    try:
        return path.stat().st_mtime >= since
    except OSError:
        return False


class GridState:
    """The runs of a grid with their status; counts, overall fraction and ETA. No I/O of its own
    beyond :meth:`refresh`, and no clock: callers pass the time, so it is testable."""

    def __init__(self, runs: Iterable[RunProgress]):
        self.runs = list(runs)

    def counts(self) -> dict[str, int]:
        """Runs per status (pending, running, done, failed)."""
        counts = dict.fromkeys(STATUSES, 0)
        for r in self.runs:
            counts[r.status] += 1
        return counts

    def fraction(self) -> float:
        """Share of the grid's work finished (running runs count by their logged iterations)."""
        return sum(r.fraction for r in self.runs) / len(self.runs) if self.runs else 1.0

    def eta(self, elapsed: float) -> float | None:
        """Seconds left, extrapolated from `elapsed` and the finished share; None before any progress."""
        f = self.fraction()
        if f >= 1.0:
            return 0.0
        return None if f <= 0 else elapsed * (1 - f) / f

    def summary(self, elapsed: float) -> str:
        """'3/8 done, 2 running, 1 failed, 2 pending; elapsed 1:23, ETA 2:10'."""
        c = self.counts()
        eta = self.eta(elapsed)
        text = f"{c['done']}/{len(self.runs)} done, {c['running']} running, {c['failed']} failed, {c['pending']} pending"
        return text + f"; elapsed {_clock(elapsed)}, ETA {_clock(eta) if eta is not None else '?'}"

    def refresh(self, since: float) -> list[tuple[RunProgress, str]]:
        """Re-read every unfinished run; return (run, previous status) for each status change."""
        changes = []
        for r in self.runs:
            if r.status in ("done", "failed"):
                continue
            before = r.status
            r.read(since)
            if r.status != before:
                changes.append((r, before))
        return changes


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def outcome_line(r: RunProgress) -> str:
    """The line printed when a run finishes (the launchers' format)."""
    if r.status == "failed":
        return f"  {r.label}: FAILED ({r.error}) -> {r.run_dir}"
    acc = f"{r.accuracy:.2f} ± {r.ci95:.2f}" if r.accuracy is not None and r.ci95 is not None else "done"
    return f"  {r.label}: {acc} -> {r.run_dir}"


class GridMonitor:
    """Live progress of a grid while a launcher runs it, read from the run directories (so it
    works for every launcher whose workers write to this file system).

    ``live=True``: one rich display (counts, ETA, a row per running run) redrawn in place, with
    a line printed above it as each run finishes. ``live=False`` (stdout or stderr is not a
    terminal: tests, CI logs): plain lines, one when a run starts, the counts and ETA when one
    finishes, and a run's progress at most every `plain_every` seconds, only when it changed. A background thread
    polls every `interval` seconds; it only stats files and reads appended metrics lines.
    """

    def __init__(self, state: GridState, live: bool | None = None, interval: float = 1.0,
                 plain_every: float = 60.0, console: Console | None = None, clock: Callable[[], float] = time.time,
                 print_outcomes: bool | None = None):
        self.state, self.interval, self.plain_every, self.clock = state, interval, plain_every, clock
        self.console = console or _console
        self.live = self.wants_live(None) if live is None else live
        # the live display prints outcomes itself (launchers are asked to stay quiet then)
        self.print_outcomes = self.live if print_outcomes is None else print_outcomes
        self.start = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Any = None

    @staticmethod
    def wants_live(progress: bool | None) -> bool:
        """``--progress`` / ``--no-progress`` as given, else live when stdout and stderr are terminals."""
        return (sys.stdout.isatty() and _console.is_terminal) if progress is None else progress

    def __enter__(self) -> GridMonitor:
        self.start = self.clock()
        if self.live:
            from rich.live import Live

            self._live = Live(self.render(), console=self.console, auto_refresh=False, transient=True)
            self._live.start()
        self._thread = threading.Thread(target=self._loop, name="dfml-grid-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            with contextlib.suppress(Exception):  # progress must never hide the grid's own outcome
                self.poll()  # the last changes
        finally:
            if self._live is not None:
                self._live.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - progress must never break a grid
                pass

    def poll(self) -> None:
        """Read the run directories once and print / redraw what changed."""
        now = self.clock()
        # file times come from a coarser clock than time.time(): allow for it
        for line in self.lines(self.state.refresh(self.start - 0.05), now):
            self.console.print(line, highlight=False, soft_wrap=True, markup=False)
        if self._live is not None:
            self._live.update(self.render(now), refresh=True)

    def lines(self, changes: list[tuple[RunProgress, str]], now: float) -> list[str]:
        """The plain lines for these status changes at time `now` (live mode: outcomes only)."""
        elapsed = now - self.start
        out: list[str] = []
        finished = False
        for r, _before in changes:
            if r.status == "running" and not self.live:
                out.append(f"[grid] started {r.label}")
                r.last_line = now
            elif r.status in ("done", "failed"):
                finished = True
                if self.print_outcomes:
                    out.append(outcome_line(r))
        if self.live:
            return out
        for r in self.state.runs:
            if r.status == "running" and now - r.last_line >= self.plain_every:
                text = r.describe()
                if text != r.last_text:  # a line only when the run moved since the last one
                    out.append(f"[grid] {r.label}: {text}")
                    r.last_line, r.last_text = now, text
        if finished:
            out.append(f"[grid] {self.state.summary(elapsed)}")
        return out

    def render(self, now: float | None = None) -> Any:
        """The live display: the summary, then one row per running run."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        elapsed = (self.clock() if now is None else now) - self.start
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column("run", no_wrap=True)
        table.add_column("progress")
        running = [r for r in self.state.runs if r.status == "running"]
        for r in running[:12]:
            table.add_row(Text(r.label, style="cyan"), Text(r.describe()))
        if len(running) > 12:
            table.add_row(f"... and {len(running) - 12} more", "")
        return Group(Text(f"grid: {self.state.summary(elapsed)}", style="bold"), table)


def grid_state(jobs: Iterable[Any]) -> GridState:
    """A GridState for launcher jobs (`dfml_bench.launch.Job`)."""
    return GridState(RunProgress(job.label, job.run_dir, int(job.config.get("train", {}).get("meta_iterations", 0)))
                     for job in jobs)
