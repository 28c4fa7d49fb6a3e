"""End to end on the smoke profile: runs, results store, no-op re-runs, compare, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dfml_bench.cli import main
from dfml_bench.testing import check_method


def cli(*args: str) -> "object":
    return CliRunner().invoke(main, list(args), terminal_width=200)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    out = cli("run", "--method", "random,maml_oracle", "--profile", "smoke", "--shots", "1", "--results", str(root),
              "--device", "cpu", "--no-progress", "--set", "loggers=[csv]")
    assert out.exit_code == 0, out.output
    return root


def run_dirs(root: Path) -> list[Path]:
    return sorted((root / "runs").iterdir())


def test_run_writes_config_metrics_and_result(results) -> None:
    dirs = run_dirs(results)
    assert len(dirs) == 2
    for d in dirs:
        result = json.loads((d / "result.json").read_text())
        assert 0 <= result["accuracy"] <= 100 and result["ci95"] > 0
        assert result["per_dataset"]["glyphs-letters"]["episodes"] == 6
        assert (d / "config.yaml").exists() and not (d / "checkpoint.pt").exists()
        assert not list(d.glob(".*.tmp"))  # atomic writes leave no temporaries
    oracle = next(d for d in dirs if d.name.startswith("maml_oracle"))
    records = [json.loads(line) for line in (oracle / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1, 2, 3, 4]
    assert "val_acc" in records[0] and "loss" in records[0]
    assert (oracle / "metrics.csv").read_text().startswith("iteration,")  # the csv logger plugin ran
    result = json.loads((oracle / "result.json").read_text())
    assert result["data_free"] is False and result["access"] == "real_data"


def test_finished_run_is_not_rerun(results) -> None:
    before = {d: (d / "result.json").read_bytes() for d in run_dirs(results)}
    mtimes = {d: (d / "metrics.jsonl").stat().st_mtime_ns for d in run_dirs(results) if (d / "metrics.jsonl").exists()}
    out = cli("run", "--method", "random,maml_oracle", "--profile", "smoke", "--shots", "1", "--results", str(results),
              "--device", "cpu", "--no-progress", "--set", "loggers=[csv]")
    assert out.exit_code == 0, out.output
    assert out.output.count("already done") == 2
    assert {d: (d / "result.json").read_bytes() for d in run_dirs(results)} == before
    assert {d: (d / "metrics.jsonl").stat().st_mtime_ns for d in mtimes} == mtimes


def test_compare_formats(results) -> None:
    md = cli("compare", str(results), "--format", "md")
    assert md.exit_code == 0, md.output
    assert "| method | SS 1-shot (dev) | queries |" in md.output and "maml_oracle (oracle: real data)" in md.output
    csv = cli("compare", str(results), "--format", "csv")
    assert csv.output.splitlines()[0].startswith("method,access,instance,scenario,shots,seeds,mean,ci95,queries")
    assert len(csv.output.splitlines()) == 3
    latex = cli("compare", str(results), "--format", "latex")
    assert "\\begin{tabular}" in latex.output and "$\\pm$" in latex.output
    rich = cli("compare", str(results))
    assert rich.exit_code == 0 and "random" in rich.output


def test_show_prints_config_and_result(results) -> None:
    out = cli("show", str(run_dirs(results)[0]))
    assert out.exit_code == 0 and "accuracy" in out.output and "method" in out.output


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, registry, glyph_cache) -> None:
    import torch

    from dfml_bench.config import build_raw_config, resolve_runs
    from dfml_bench.runner import Environment, execute_run, run_path

    resolved = resolve_runs(build_raw_config("smoke", flags={"method": "maml_oracle"}), registry)[0]
    full = execute_run(resolved, registry, Environment(tmp_path / "a", device="cpu"))

    calls = {"n": 0}
    from dfml_plugins.methods.maml_oracle import method as maml_oracle

    original = maml_oracle.MamlOracle.train_step

    def crash_at_3(self, it):
        calls["n"] += 1
        if it == 3:
            raise KeyboardInterrupt
        return original(self, it)

    env = Environment(tmp_path / "b", device="cpu")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(maml_oracle.MamlOracle, "train_step", crash_at_3)
        with pytest.raises(KeyboardInterrupt):
            execute_run(resolved, registry, env)
    ckpt_path = run_path(env, resolved) / "checkpoint.pt"
    assert ckpt_path.exists()
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert 0 < ckpt["elapsed"] < 1000
    ckpt["elapsed"] = 1000.0  # as if the attempt before the kill had run for 1000 s
    torch.save(ckpt, ckpt_path)
    resumed = execute_run(resolved, registry, env)
    assert resumed["accuracy"] == full["accuracy"] and resumed["ci95"] == full["ci95"]
    # wall times go on from the checkpoint's, not from zero: a resumed run reports its whole cost
    assert 1000 < resumed["wall_time_s"] < 1000 + full["wall_time_s"] + 60
    logged = [json.loads(line) for line in (run_path(env, resolved) / "metrics.jsonl").read_text().splitlines()]
    assert [r["wall_time"] > 1000 for r in logged] == [r["iteration"] >= ckpt["iteration"] for r in logged]


def test_conformance_helper_on_builtin_method(tmp_path, registry) -> None:
    result = check_method("maml_oracle", tmp_path, registry)
    assert result["method"] == "maml_oracle"


def test_errors_are_one_line_without_traceback(tmp_path) -> None:
    out = cli("run", "--method", "ranodm", "--profile", "smoke", "--results", str(tmp_path))
    assert out.exit_code == 2
    assert "error: unknown method 'ranodm'. Did you mean 'random'?" in out.output
    assert "Traceback" not in out.output
    out = cli("run", "--method", "random", "--profile", "smoke", "--device", "cuda:7", "--results", str(tmp_path))
    assert out.exit_code == 2 and ("no CUDA GPU" in out.output or "device" in out.output)
    out = cli("compare", str(tmp_path / "nothing"))
    assert out.exit_code == 2 and "does not exist" in out.output
    out = cli("--debug", "run", "--method", "ranodm", "--profile", "smoke", "--results", str(tmp_path))
    assert out.exit_code == 1 and out.exception is not None  # --debug lets the exception through


def test_help_and_list_do_not_import_torch() -> None:
    code = ("import sys\nfrom dfml_bench.cli import main\n"
            "for args in (['--help'], ['list']):\n"
            "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nprint('NO_TORCH')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "NO_TORCH" in proc.stdout
