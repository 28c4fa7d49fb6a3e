"""Rich progress bars on stderr that turn into no-ops when disabled (tests, CI logs)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

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
