"""The example third-party plugin, seen through its entry-point metadata as pip would install it."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dfml_bench.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dfml-bench-hello-plugin"


@pytest.fixture
def hello_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the example's package on sys.path with the entry point its pyproject declares."""
    import tomllib

    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    eps = project["project"]["entry-points"]["dfml_bench"]
    info = tmp_path / "dfml_bench_hello_plugin-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dfml-bench-hello-plugin\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[dfml_bench]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    importlib.invalidate_caches()


def test_list_sees_the_example_plugin(hello_installed) -> None:
    out = CliRunner().invoke(main, ["--strict-plugins", "list", "method"], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "hello" in out.output and "head_init" in out.output


def test_run_the_example_method(hello_installed, tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["--strict-plugins", "run", "--method", "hello", "--profile", "smoke",
                                    "--set", "method.head_init=0.0", "--results", str(tmp_path / "res"),
                                    "--device", "cpu", "--no-progress"], terminal_width=200)
    assert out.exit_code == 0, out.output
    (result_file,) = (tmp_path / "res" / "runs").glob("hello-*/result.json")
    result = json.loads(result_file.read_text())
    assert result["method"] == "hello" and 0 <= result["accuracy"] <= 100


def test_example_method_passes_the_conformance_check(hello_installed, tmp_path: Path) -> None:
    from dfml_bench.plugins import load_registry
    from dfml_bench.testing import check_method

    assert check_method("hello", tmp_path, load_registry(strict=True))["method"] == "hello"
