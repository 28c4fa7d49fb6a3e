"""The results store: one directory per run, named by a content hash of its resolved config.

A run directory holds ``config.yaml`` (resolved config), ``metrics.jsonl`` (one record per
log step), ``checkpoint.pt`` (for resuming) and, once finished, ``result.json`` (the done
marker). A run that raised holds ``error.json`` instead (the failed marker; removed when a
re-run succeeds). Every whole-file write is atomic: written to a temporary file, then renamed.
A process executing a run holds ``.lock`` (see :func:`exclusive_lock`), so two processes given
the same run never write into the same directory at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
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
LOCK_FILE = ".lock"


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


def read_config(run_path: Path) -> dict[str, Any] | None:
    """The resolved config a run directory was run with, or None if it has none (or it is unreadable)."""
    try:
        config = yaml.safe_load((Path(run_path) / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON record as a line (flushed; a crash loses at most the last line)."""
    try:
        with open(path, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True, default=str) + "\n")
            fh.flush()
    except OSError as exc:
        raise _unwritable(path, exc) from None


@contextlib.contextmanager
def exclusive_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created if needed) for the ``with`` block.

    An advisory ``flock``: a second holder waits (``on_wait`` is called once when it has to).
    The kernel drops the lock when its holder exits, even by a crash or kill, so a lock is
    never stale and the lock file is left in place. Works across machines on NFSv4 (Linux).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


_STORE_FILES = frozenset({RESULT_FILE, ERROR_FILE, CONFIG_FILE, CHECKPOINT_FILE})


def _log_files(run_path: Path) -> Iterator[Path]:
    """Files a run writes while it trains (metrics, loggers' outputs, artifacts): every plain,
    non-hidden file of its directory except the store's own (config, checkpoint, result, error)."""
    if run_path.is_dir():
        for path in sorted(run_path.iterdir()):
            if path.is_file() and not path.name.startswith(".") and path.name not in _STORE_FILES:
                yield path


def log_sizes(run_path: Path) -> dict[str, int]:
    """Sizes of a run's log files now (saved with each checkpoint, for :func:`rewind_logs`)."""
    return {path.name: path.stat().st_size for path in _log_files(run_path)}


def rewind_logs(run_path: Path, sizes: Mapping[str, int]) -> None:
    """Cut a run's log files back to `sizes` (taken with the checkpoint it resumes from).

    Appended logs lose what was written after the checkpoint (so nothing is logged twice),
    files created after it are removed; ``{}`` removes them all (a restart from scratch).
    """
    for path in _log_files(run_path):
        size = sizes.get(path.name)
        try:
            if size is None:
                path.unlink()
            elif path.stat().st_size > size:
                os.truncate(path, size)
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
    """Every finished table result under a results root (or a single run directory).

    Tuning trials (``kind: trial``, scored on meta-val only) are never table results: skipped.
    """
    root = Path(results_root)
    candidates = [root] if (root / RESULT_FILE).exists() else sorted((root / RUNS_DIR).glob("*"))
    for path in candidates:
        result = read_result(path)
        if result is not None and result.get("kind") != "trial":
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
