"""Keep freed memory in the process (glibc malloc settings), so that tensor buffers are reused.

By default glibc serves allocations above its mmap threshold (128 KB, adapting up to 32 MB)
with fresh mmaps and returns them to the OS on free, and trims the heap top above 128 KB: a
training step that allocates and frees the same large activations over and over then pays
page faults for every buffer, every time (benchmarks/README.md, section "Allocator").
:func:`keep_freed_memory` serves every allocation from the heap and never trims it, so freed
buffers are reused; the process's RSS stays at its peak. Linux with glibc only; a no-op
elsewhere. Call it at start-up, before torch allocates; :data:`ENV` carries the same settings
to child processes (glibc reads them when a process starts).
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -2, -3, -4
_TOP_PAD = 64 << 20        # grow the heap 64 MB at a time
_MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value (64-bit), for when mmap is used at all
_TRIM_NEVER = 2**31 - 1     # mallopt takes an int: about 2 GB, never reached by a heap top

#: The same settings as environment variables, for processes this one starts.
ENV: dict[str, str] = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(_TRIM_NEVER),
                       "MALLOC_TOP_PAD_": str(_TOP_PAD), "MALLOC_MMAP_THRESHOLD_": str(_MMAP_THRESHOLD)}

_done = False


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (not musl)
        return libc if hasattr(libc, "mallopt") else None
    except (OSError, AttributeError):
        return None


def keep_freed_memory(children: bool = True) -> bool:
    """Make this process's malloc keep freed memory for reuse (and, with `children`, processes it
    starts later, unless their environment already sets a MALLOC_ variable). True if applied.

    `DFML_BENCH_MALLOC=default` leaves glibc's behaviour alone (e.g. to measure memory with RSS).
    """
    global _done
    if os.environ.get("DFML_BENCH_MALLOC", "").lower() == "default":
        return False
    libc = _glibc()
    if libc is None:
        return False
    if not _done:
        for option, value in ((_M_MMAP_MAX, 0), (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD),
                              (_M_TRIM_THRESHOLD, _TRIM_NEVER), (_M_TOP_PAD, _TOP_PAD)):
            libc.mallopt(option, value)
        _done = True
    if children and not any(k.startswith("MALLOC_") for k in os.environ):
        os.environ.update(ENV)
    return True
