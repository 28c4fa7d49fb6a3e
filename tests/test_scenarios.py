"""Scenarios end to end on the smoke profile, user YAML scenarios, and the pool CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dfml_bench.cli import main


def cli(*args: str):
    return CliRunner().invoke(main, list(args), terminal_width=200)


def test_random_on_mh_evaluates_each_domain(tmp_path: Path) -> None:
    out = cli("run", "--method", "random", "--scenario", "MH", "--profile", "smoke", "--results", str(tmp_path),
              "--device", "cpu", "--no-progress")
    assert out.exit_code == 0, out.output
    (path,) = (tmp_path / "runs").glob("random-MH-*/result.json")
    result = json.loads(path.read_text())
    assert set(result["per_dataset"]) == {"glyphs-letters", "glyphs-symbols", "glyphs-scripts"}
    mean = sum(r["accuracy"] for r in result["per_dataset"].values()) / 3
    assert result["accuracy"] == pytest.approx(mean)
    assert result["queries"] == 0  # random never builds or queries the pool


def test_oracle_on_sh(tmp_path: Path) -> None:
    out = cli("run", "--method", "maml_oracle", "--scenario", "SH", "--profile", "smoke", "--results", str(tmp_path),
              "--device", "cpu", "--no-progress")
    assert out.exit_code == 0, out.output
    assert list((tmp_path / "runs").glob("maml_oracle-SH-*/result.json"))


def test_user_scenario_from_yaml(tmp_path: Path, registry) -> None:
    from dfml_bench.config import build_raw_config, resolve_runs

    spec = tmp_path / "two_domains.yaml"
    spec.write_text("name: letters+symbols\n"
                    "datasets: ['glyphs[domain=letters,instances_per_class=20]', "
                    "'glyphs[domain=symbols,instances_per_class=20]']\n"
                    "architectures: ['conv4[width=8]']\napis_per_cell: 2\nclasses_per_api: 3\n"
                    "output: probs\naccess: black\napi_epochs: 1\n")
    run = resolve_runs(build_raw_config("smoke", flags={"scenario": str(spec), "method": "random"}), registry)[0]
    assert run["scenario"]["name"] == "custom"
    assert run["scenario"]["params"]["label"] == "letters+symbols"
    assert run["scenario"]["params"]["output"] == "probs" and run["scenario"]["params"]["classes_per_api"] == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: ['glyphs']\napis_per_cel: 3\n")
    from dfml_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="Did you mean 'apis_per_cell'"):
        resolve_runs(build_raw_config("smoke", flags={"scenario": str(bad), "method": "random"}), registry)


def test_pool_build_ls_show_verify(tmp_path: Path) -> None:
    pools = tmp_path / "pools"
    out = cli("pool", "build", "--scenario", "SS", "--profile", "smoke", "--pool-dir", str(pools), "--build-workers", "1")
    assert out.exit_code == 0, out.output
    assert "conv4" in out.output and "mean acc" in out.output
    (manifest,) = pools.glob("*/manifest.json")
    listing = cli("pool", "ls", "--pool-dir", str(pools))
    assert manifest.parent.name in listing.output
    shown = cli("pool", "show", manifest.parent.name, "--pool-dir", str(pools), "--verify")
    assert shown.exit_code == 0, shown.output
    assert "glyphs-letters-conv4-000" in shown.output and "match their checksums" in shown.output
    victim = next(manifest.parent.glob("*.pt"))
    victim.write_bytes(victim.read_bytes()[:-10])
    broken = cli("pool", "show", manifest.parent.name, "--pool-dir", str(pools), "--verify")
    assert broken.exit_code == 2 and "checksum" in broken.output and "Traceback" not in broken.output
