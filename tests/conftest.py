"""Shared fixtures: one glyph cache per test session, a loaded registry, fake plugins."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    skip_slow = pytest.mark.skip(reason="slow: pass --runslow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session", autouse=True)
def glyph_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rendered glyphs are cached once per session (and shared by CLI runs through the env)."""
    path = Path(os.environ.get("DFML_BENCH_TEST_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["DFML_BENCH_CACHE"] = str(path)
    return path


@pytest.fixture
def registry():
    from dfml_bench.plugins import load_registry

    return load_registry(strict=True)


def make_plugin(root: Path, dist: str, ep_name: str, module: str, source: str) -> Path:
    """Create an importable plugin module plus its entry-point metadata under `root`.

    Returns the directory to put on sys.path (what `pip install` would have done).
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"  # as a wheel names it
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[dfml_bench]\n{ep_name} = {module}\n")
    return root


@pytest.fixture
def fake_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install a fake plugin (module source) through entry-point metadata on sys.path."""
    import importlib

    def install(ep_name: str, source: str) -> None:
        module = f"fake_{ep_name}"
        path = make_plugin(tmp_path / ep_name, f"fake-{ep_name}", ep_name, module, source)
        monkeypatch.syspath_prepend(str(path))
        importlib.invalidate_caches()

    return install
