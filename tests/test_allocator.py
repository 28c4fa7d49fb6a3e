"""Keeping freed memory: glibc reuses freed buffers instead of giving them back (Linux/glibc only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dfml_bench import allocator

PROBE = """
import json, os
from dfml_bench.allocator import keep_freed_memory
applied = keep_freed_memory()
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
before = rss()
block = bytearray(200 << 20)  # touched (zero-filled) 200 MB
del block
print(json.dumps({"applied": applied, "kept_mb": rss() - before,
                  "env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}}))
"""


def _probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "DFML_BENCH_MALLOC"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={**clean, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc malloc settings exist on Linux/glibc only")
def test_freed_memory_is_kept_for_reuse_and_children_inherit_it() -> None:
    kept = _probe()
    assert kept["applied"] and kept["kept_mb"] >= 150  # freed, but still the process's to reuse
    assert kept["env"] == allocator.ENV  # processes it starts get the same settings
    default = _probe(DFML_BENCH_MALLOC="default")
    assert not default["applied"] and default["kept_mb"] < 50 and default["env"] == {}  # glibc gave it back


def test_a_no_op_without_glibc(monkeypatch) -> None:
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert allocator.keep_freed_memory(children=False) is False
