"""`local`: run every job in this process, one after another."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from dfml_bench.interfaces import Launcher


class LocalLauncher(Launcher):
    def __init__(self, params: Any = None):
        self.params = params

    def run_all(self, jobs: Iterable[Any], execute: Callable[[Any], Any]) -> list[Any]:
        return [execute(job) for job in jobs]
