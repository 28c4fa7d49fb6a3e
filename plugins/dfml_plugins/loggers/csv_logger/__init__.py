"""The `csv` run logger: registration (light: no torch import). Implementation: `logger.py`."""

from __future__ import annotations

from typing import Any

from dfml_bench import hookimpl


@hookimpl
def register_loggers(register: Any) -> None:
    register("csv", "dfml_plugins.loggers.csv_logger.logger:CsvLogger", params=None,
             help="writes metrics.csv beside metrics.jsonl in each run directory")
