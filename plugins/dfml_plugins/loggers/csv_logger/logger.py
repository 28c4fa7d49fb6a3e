"""`csv`: a metrics.csv per run, for spreadsheets and quick plots."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dfml_bench.interfaces import RunInfo, RunLogger


class CsvLogger(RunLogger):
    """Appends every metrics record to <run_dir>/metrics.csv (columns fixed by the first record)."""

    def __init__(self, params: Any, run_dir: Path):
        self.path = Path(run_dir) / "metrics.csv"
        self.fields: list[str] | None = None

    def on_metrics(self, run: RunInfo, record: Mapping[str, Any]) -> None:
        if self.fields is None:
            self.fields = ["iteration", "wall_time", "loss", "train_acc", "val_acc", "queries"]
            if not self.path.exists():
                with open(self.path, "w", newline="") as fh:
                    csv.writer(fh).writerow(self.fields)
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow([record.get(f, "") for f in self.fields])
