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
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from dfml_bench.errors import ConfigError, StoreError, shown

RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
#: One line per validation: its iteration and every dataset's per-episode meta-val accuracies.
VAL_EPISODES_FILE = "val_episodes.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
RUNS_DIR = "runs"
LOCK_FILE = ".lock"
SPENT_FILE = ".queries.json"


ENV_CACHE = "DFML_BENCH_CACHE"
ENV_POOL_DIR = "DFML_BENCH_POOL_DIR"


def checkpoint_interval_s() -> float:
    """Seconds between checkpoints beside the ones after each validation: DFML_BENCH_CHECKPOINT_MINUTES
    (default 10). Not part of a run's configuration: where a run checkpoints never changes its result."""
    raw = os.environ.get("DFML_BENCH_CHECKPOINT_MINUTES", "10")
    try:
        minutes = float(raw)
    except ValueError:
        minutes = -1.0
    if not minutes >= 0:
        raise ConfigError(f"DFML_BENCH_CHECKPOINT_MINUTES={raw!r} is not a number of minutes >= 0; "
                          "set it to e.g. 10 (0 checkpoints after every meta-iteration), or unset it.")
    return minutes * 60.0


def cache_dir(explicit: str | Path | None = None) -> Path:
    """The cache of rendered data: `explicit` (--cache-dir), else $DFML_BENCH_CACHE, else
    $XDG_CACHE_HOME/dfml-bench (default ~/.cache/dfml-bench). A path that is a file is an error."""
    if explicit is not None:
        path, origin = Path(explicit), "--cache-dir"
    elif os.environ.get(ENV_CACHE):
        path, origin = Path(os.environ[ENV_CACHE]), f"${ENV_CACHE}"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path, origin = Path(base) / "dfml-bench", "$XDG_CACHE_HOME"
    _check_dir(path, origin)
    return path


def pool_dir(explicit: str | Path | None = None, cache: str | Path | None = None) -> Path:
    """The cache of built API pools: `explicit` (--pool-dir), else $DFML_BENCH_POOL_DIR, else
    ``pools/`` in the data cache (:func:`cache_dir` of `cache`)."""
    if explicit is not None:
        path, origin = Path(explicit), "--pool-dir"
    elif os.environ.get(ENV_POOL_DIR):
        path, origin = Path(os.environ[ENV_POOL_DIR]), f"${ENV_POOL_DIR}"
    else:
        return cache_dir(cache) / "pools"
    _check_dir(path, origin)
    return path


def _check_dir(path: Path, origin: str) -> None:
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{origin} points at '{path}', which is a file, not a directory; point it at a "
                         "directory (it is created if missing).")


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


def copy_logs(source: Path, run_path: Path) -> None:
    """Copy a finished run's log files (metrics, validation episodes, images) into `run_path`."""
    import shutil

    try:
        run_path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(run_path, exc) from None
    for path in _log_files(source):
        try:
            shutil.copyfile(path, run_path / path.name)
        except OSError as exc:
            raise _unwritable(run_path / path.name, exc) from None


def log_sizes(run_path: Path) -> dict[str, int]:
    """Sizes of a run's log files now (saved with each checkpoint, for :func:`rewind_logs`)."""
    return {path.name: path.stat().st_size for path in _log_files(run_path)}


def rewind_logs(run_path: Path, sizes: Mapping[str, int]) -> None:
    """Cut a run's log files back to `sizes` (taken with the checkpoint it resumes from).

    Appended logs lose what was written after the checkpoint (so nothing is logged twice),
    files created after it are removed; ``{}`` removes them all (a restart from scratch).
    A cut always lands on a line boundary: a size that falls inside a line (a file changed
    since) cuts back to the end of the last whole line before it.
    """
    for path in _log_files(run_path):
        size = sizes.get(path.name)
        try:
            if size is None or not isinstance(size, int) or size < 0:
                path.unlink()
            elif path.stat().st_size > size:
                os.truncate(path, _line_boundary(path, size))
        except OSError as exc:
            raise _unwritable(path, exc) from None


def _line_boundary(path: Path, size: int) -> int:
    """`size` if it ends a line of `path` (or is 0), else the end of the last whole line before it."""
    if size == 0:
        return 0
    with open(path, "rb") as fh:
        start = max(0, size - (1 << 20))
        fh.seek(start)
        head = fh.read(size - start)
    if head.endswith(b"\n"):
        return size
    cut = head.rfind(b"\n")
    return start + cut + 1 if cut >= 0 else 0


class QuerySpend:
    """API queries answered across every attempt of a run, kept in the run directory's hidden
    ``.queries.json``: a resumed run counts (in its ledger) only the queries of the trajectory it
    finished, while the servers also answered those of attempts lost to a crash after their
    last checkpoint. ``update(counted)`` is called with the ledger's total after every step."""

    def __init__(self, run_path: Path, counted: int):
        self.path = Path(run_path) / SPENT_FILE
        try:
            before = int(json.loads(self.path.read_text())["spent"])
        except (OSError, ValueError, KeyError, TypeError):
            before = 0
        self.base, self.start, self.value = max(before, counted), counted, max(before, counted)

    def update(self, counted: int) -> int:
        """Record the spend with the ledger at `counted`; returns the total spent so far."""
        value = self.base + counted - self.start
        if value != self.value:
            self.value = value
            tmp = self.path.with_name(self.path.name + ".tmp")
            try:
                tmp.write_text(json.dumps({"spent": value}))
                os.replace(tmp, self.path)
            except OSError as exc:
                raise _unwritable(self.path, exc) from None
        return value


def tree_fingerprint(paths: Iterable[Path], base: Path) -> str:
    """16 hex characters identifying the files at `paths` (each a file or a directory, walked
    recursively): their paths relative to `base`, sizes and modification times. Cheap (no file is
    read), and it changes when a file is added, removed, replaced or rewritten."""
    entries = []
    for top in paths:
        top = Path(top)
        if top.is_file():
            files = [top]
        else:
            files = [Path(d) / f for d, _, names in os.walk(top) for f in names]
        for path in files:
            try:
                st = path.stat()
            except OSError:
                continue
            entries.append((os.path.relpath(path, base), st.st_size, st.st_mtime_ns))
    blob = json.dumps(sorted(entries), separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_dir(results_root: Path, label: str, run_hash: str) -> Path:
    return Path(results_root) / RUNS_DIR / f"{label}-{run_hash}"


def read_result(run_path: Path) -> dict[str, Any] | None:
    """The finished result of a run directory, or None if it has not finished; a result that is
    unreadable or malformed (not an object, an accuracy that is not a finite number) is a
    StoreError naming the file."""
    path = Path(run_path) / RESULT_FILE
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # JSON errors, bad UTF-8, deep nesting
        reason = exc.strerror if isinstance(exc, OSError) else f"not valid JSON: {type(exc).__name__}"
        raise StoreError(f"result file '{path}' is unreadable ({str(reason)[:100]}); delete that run directory "
                         "to re-run it.") from None
    problem = _result_problem(result)
    if problem:
        raise StoreError(f"result file '{path}' is malformed ({problem}); delete that run directory to re-run it.")
    if str(result.get("device", "")).startswith("cuda") and result.get("float32") != "ieee":
        raise StoreError(f"result file '{path}' was computed on CUDA before runs used IEEE float32 "
                         "(TensorFloat-32's rounding buries zero-order estimates: docs/protocol.md section 6); delete that run directory to re-run it "
                         "in IEEE float32.")
    return result


def _result_problem(result: Any) -> str | None:
    """What makes a parsed result.json unusable, or None."""
    if not isinstance(result, dict):
        return f"a JSON {type(result).__name__}, not an object"
    for key in ("accuracy", "ci95"):
        value = result.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
                or value in (float("inf"), float("-inf")):
            return f"'{key}' is {shown(value, 40)}, not a finite number"
    for key in ("method", "scenario"):
        if not isinstance(result.get(key), str):
            return f"'{key}' is not a string"
    if not isinstance(result.get("shots"), int) or isinstance(result.get("shots"), bool):
        return "'shots' is not an integer"
    return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON-object records of a log file; a line cut by a crash, bytes that are not UTF-8 and
    lines that are not JSON objects are skipped."""
    try:
        text = Path(path).read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def log_dir(result: Mapping[str, Any]) -> Path | None:
    """The directory holding a finished result's logs (metrics, validation episodes, recovered
    images): its own run directory, or, for a result reused from another scenario's run of the
    same id (``reused_from``), that run's directory beside it. None without a ``run_dir``."""
    if not result.get("run_dir"):
        return None
    path = Path(str(result["run_dir"]))
    source = result.get("reused_from")
    return path.parent / str(source) if source else path


def iter_results(results_root: Path, *, trials: bool = False) -> Iterator[dict[str, Any]]:
    """Every finished table result under a results root (or a single run directory).

    Tuning trials (``kind: trial``, scored on meta-val only) are never table results: skipped
    unless `trials` (a meta-val comparison, which every run supports).
    """
    root = Path(results_root)
    candidates = [root] if (root / RESULT_FILE).exists() else sorted((root / RUNS_DIR).glob("*"))
    for path in candidates:
        result = read_result(path)
        if result is not None and (trials or result.get("kind") != "trial"):
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
        record = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not valid JSON: {type(exc).__name__}"
        raise StoreError(f"error file '{path}' is unreadable ({str(reason)[:100]}); delete it to forget that "
                         "failure.") from None
    if not isinstance(record, dict):
        raise StoreError(f"error file '{path}' is malformed (a JSON {type(record).__name__}, not an object); "
                         "delete it to forget that failure.")
    return record


def iter_failures(results_root: Path) -> Iterator[dict[str, Any]]:
    """Every failed (and not since finished) run's error record under a results root."""
    root = Path(results_root)
    candidates = [root] if (root / ERROR_FILE).exists() else sorted((root / RUNS_DIR).glob("*"))
    for path in candidates:
        record = read_failure(path)
        if record is not None:
            record.setdefault("run_dir", str(path))
            yield record


def environment_record(device: Any = None) -> dict[str, Any]:
    """What a run's (or a pool's) numbers may depend on beyond its config (docs/statistics.md): the
    device, library versions, torch's thread count (it sets the order of float reductions),
    whether deterministic algorithms are on, the platform, and the CPU (model and the instruction set
    torch's kernels use: another CPU family rounds differently)."""
    import numpy as np
    import torch

    record: dict[str, Any] = {} if device is None else {"device": str(device)}
    record.update(torch=torch.__version__, torch_threads=torch.get_num_threads(), numpy=np.__version__,
                  python=platform.python_version(), platform=platform.platform(), machine=platform.machine(),
                  cpu=cpu_model(), cpu_capability=torch.backends.cpu.get_cpu_capability(),
                  deterministic=torch.are_deterministic_algorithms_enabled())
    if str(device).startswith("cuda"):
        record["float32"] = cuda_float32_mode()
    return record


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else :func:`platform.processor`); "" when unknown."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def float32_flags() -> list[tuple[Any, str, Any]]:
    """The torch flags that make CUDA compute float32 convolutions and matrix products in full
    precision, as (owner, attribute, IEEE value): `fp32_precision` on torch >= 2.9, else `allow_tf32`."""
    import torch

    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return [(conv, "fp32_precision", "ieee"), (torch.backends.cuda.matmul, "fp32_precision", "ieee")]
    return [(torch.backends.cudnn, "allow_tf32", False), (torch.backends.cuda.matmul, "allow_tf32", False)]


def cuda_float32_mode() -> str:
    """How CUDA computes float32 convolutions and matrix products right now: "ieee" (full precision,
    what runs use) or "tf32" (TensorFloat-32 in either)."""
    return "ieee" if all(getattr(owner, name) == ieee for owner, name, ieee in float32_flags()) else "tf32"
