"""The results store: one directory per run, named by a content hash of its resolved config.

A run directory holds ``config.yaml`` (resolved config), ``metrics.jsonl`` (one record per
log step), ``checkpoint.pt`` (for resuming) and, once finished, ``result.json`` (the done
marker). A run that raised holds ``error.json`` instead (the failed marker; removed when a
re-run succeeds). Every whole-file write is atomic: written to a temporary file, then renamed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from dfml_bench.errors import DfmlError, StoreError

RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
RUNS_DIR = "runs"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _unwritable(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)  # the old file, if any, is untouched
        if isinstance(exc, OSError):
            raise _unwritable(path, exc) from None
        raise


def _unwritable(path: Path, exc: OSError) -> StoreError:
    return StoreError(f"cannot write '{path}' ({exc.strerror or exc}); make its directory writable (or free "
                      "disk space), or use another directory (--results, --pool-dir); files already written are kept.")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_config(path: Path, config: Mapping[str, Any]) -> None:
    atomic_write_text(path, yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=True))


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON record as a line (flushed; a crash loses at most the last line)."""
    try:
        with open(path, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True, default=str) + "\n")
            fh.flush()
    except OSError as exc:
        raise _unwritable(path, exc) from None


def run_dir(results_root: Path, label: str, run_hash: str) -> Path:
    return Path(results_root) / RUNS_DIR / f"{label}-{run_hash}"


def read_result(run_path: Path) -> dict[str, Any] | None:
    """The finished result of a run directory, or None if it has not finished."""
    path = run_path / RESULT_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DfmlError(f"result file '{path}' is unreadable ({exc}); delete that run directory "
                        "to re-run it.") from None


def iter_results(results_root: Path) -> Iterator[dict[str, Any]]:
    """Every finished result under a results root (or a single run directory)."""
    root = Path(results_root)
    candidates = [root] if (root / RESULT_FILE).exists() else sorted((root / RUNS_DIR).glob("*"))
    for path in candidates:
        result = read_result(path)
        if result is not None:
            result.setdefault("run_dir", str(path))
            yield result


def write_failure(run_path: Path, record: Mapping[str, Any]) -> None:
    """Mark a run as failed with its error record (atomic; a finished result always wins)."""
    atomic_write_json(run_path / ERROR_FILE, dict(record))


def clear_failure(run_path: Path) -> None:
    """Drop the failed marker of a run (after a successful retry)."""
    (run_path / ERROR_FILE).unlink(missing_ok=True)


def read_failure(run_path: Path) -> dict[str, Any] | None:
    """The error record of a failed, unfinished run, or None (finished, running or never started)."""
    path = run_path / ERROR_FILE
    if (run_path / RESULT_FILE).exists() or not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DfmlError(f"error file '{path}' is unreadable ({exc}); delete it to forget that failure.") from None


def iter_failures(results_root: Path) -> Iterator[dict[str, Any]]:
    """Every failed (and not since finished) run's error record under a results root."""
    root = Path(results_root)
    candidates = [root] if (root / ERROR_FILE).exists() else sorted((root / RUNS_DIR).glob("*"))
    for path in candidates:
        record = read_failure(path)
        if record is not None:
            record.setdefault("run_dir", str(path))
            yield record
