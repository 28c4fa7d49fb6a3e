"""Grids through launchers: skip-finished before dispatch, local workers, Ray, Slurm (submitit's
local executor), failed runs recorded and retried. Tiny `random` runs on the smoke profile."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dfml_bench.cli import main
from dfml_bench.errors import ConfigError

# One tiny run is ~1 s of work; what costs is starting processes (torch import, font scan).
BASE = ("--profile", "smoke", "--device", "cpu", "--no-progress", "--set", "eval.episodes=2")
TINY = ("-m", "random", *BASE)

FLAKY = """
import os
from dfml_bench import hookimpl
from dfml_bench.interfaces import Method

class Flaky(Method):
    trains = False

    def __init__(self, params, context):
        super().__init__(params, context)
        if os.environ.get("DFML_TEST_FLAKY") == "1":
            raise RuntimeError("flaky failed on purpose")

    def train_step(self, iteration):
        return {}

@hookimpl
def register_methods(register):
    register("flaky", Flaky, params=None, help="fails while DFML_TEST_FLAKY=1", access="none",
             uses=("architecture",))
"""


def cli(*args: str):
    return CliRunner().invoke(main, list(args), terminal_width=200)


def results_by_run(root: Path) -> dict[str, tuple[float, float]]:
    """{run directory name: (accuracy, ci95)} of every finished run under a results root."""
    return {d.name: (r["accuracy"], r["ci95"]) for d in sorted((root / "runs").iterdir())
            if (d / "result.json").exists() for r in [json.loads((d / "result.json").read_text())]}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """Seeds 0 and 1, one after another in this process: the reference every launcher must match."""
    root = tmp_path_factory.mktemp("baseline")
    out = cli("run", *TINY, "--seeds", "0,1", "--results", str(root), "--set", "launcher.threads=1")
    assert out.exit_code == 0, out.output
    assert len(results_by_run(root)) == 2
    return root


def test_grid_expansion_is_the_cross_product_with_distinct_run_dirs(registry) -> None:
    from dfml_bench.config import build_raw_config, resolve_runs
    from dfml_bench.launch import make_jobs
    from dfml_bench.runner import Environment

    raw = build_raw_config("smoke", sets=["shots=[1,5]", "seeds=[0,1,2]"], flags={"method": "random,maml_oracle"})
    runs = resolve_runs(raw, registry)
    jobs = make_jobs(runs, Environment(Path("rel")), progress=False)
    cells = {(j.config["method"]["name"], j.config["shots"], j.config["seed"]) for j in jobs}
    assert len(jobs) == len(cells) == 2 * 2 * 3
    assert len({j.run_dir for j in jobs}) == 12 and all(j.run_dir.is_absolute() for j in jobs)
    assert [j.index for j in make_jobs(runs + runs, Environment(Path("rel")), False)] == list(range(12))


def test_finished_runs_are_skipped_before_dispatch(baseline, tmp_path, monkeypatch) -> None:
    from dfml_plugins.launchers.local.launcher import LocalLauncher

    root = tmp_path / "results"
    shutil.copytree(baseline, root)
    before = {p: p.read_bytes() for p in root.glob("runs/*/result.json")}
    dispatched: list[list[int]] = []
    original = LocalLauncher.run_all

    def recording(self, jobs, execute):
        jobs = list(jobs)
        dispatched.append([job.config["seed"] for job in jobs])
        return original(self, jobs, execute)

    monkeypatch.setattr(LocalLauncher, "run_all", recording)
    out = cli("run", *TINY, "--seeds", "0,1,2", "--results", str(root), "--set", "launcher.threads=1")
    assert out.exit_code == 0, out.output
    assert dispatched == [[2]]  # seeds 0 and 1 were finished: never sent to the launcher
    assert out.output.count("already done") == 2
    assert {p: p.read_bytes() for p in before} == before
    out = cli("run", *TINY, "--seeds", "0,1,2", "--results", str(root))
    assert out.exit_code == 0 and dispatched == [[2]]  # all finished: the launcher is not even called
    assert len(results_by_run(root)) == 3


def _probe(_job: object) -> tuple[int, int]:
    import torch

    return os.getpid(), torch.get_num_threads()


def test_local_workers_are_processes_pinned_to_a_share_of_the_cores() -> None:
    from dfml_bench.launch import cpu_count
    from dfml_plugins.launchers.local import LocalLauncherParams
    from dfml_plugins.launchers.local.launcher import LocalLauncher

    launcher = LocalLauncher(LocalLauncherParams(workers=2))
    probes = launcher.run_all([0, 1, 2], _probe)
    assert len(probes) == 3 and os.getpid() not in {pid for pid, _ in probes}
    assert {threads for _, threads in probes} == {max(1, cpu_count() // 2)}
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        LocalLauncher(LocalLauncherParams(workers=0))


def test_two_workers_give_the_same_results_as_one(baseline, tmp_path, monkeypatch) -> None:
    from dfml_plugins.launchers.local.launcher import LocalLauncher

    workers: list[int] = []
    original = LocalLauncher.run_all

    def recording(self, jobs, execute):
        workers.append(self.params.workers)
        return original(self, jobs, execute)

    monkeypatch.setattr(LocalLauncher, "run_all", recording)
    out = cli("run", *TINY, "--seeds", "0,1", "--results", str(tmp_path), "--workers", "2")
    assert out.exit_code == 0, out.output
    assert workers == [2]
    assert results_by_run(tmp_path) == results_by_run(baseline)


def test_ray_launcher_on_a_local_ray_instance(baseline, tmp_path) -> None:
    pytest.importorskip("ray")
    out = cli("run", *TINY, "--seeds", "0", "--results", str(tmp_path), "--launcher", "ray",
              "--set", "launcher.local_cpus=2")
    assert out.exit_code == 0, out.output
    assert results_by_run(tmp_path) == {k: v for k, v in results_by_run(baseline).items() if "-s0-" in k}


def test_slurm_launcher_through_submitits_local_executor(baseline, tmp_path) -> None:
    pytest.importorskip("submitit")
    out = cli("run", *TINY, "--seeds", "1", "--results", str(tmp_path), "--launcher", "slurm",
              "--set", "launcher.executor=local", "--set", "launcher.cpus=1")
    assert out.exit_code == 0, out.output
    assert results_by_run(tmp_path) == {k: v for k, v in results_by_run(baseline).items() if "-s1-" in k}
    assert list((tmp_path / "slurm").glob("*/*_log.err"))  # submitit's per-job logs, under RESULTS/slurm


def test_a_failed_run_is_recorded_does_not_stop_the_grid_and_is_retried(baseline, tmp_path, fake_plugin,
                                                                        monkeypatch) -> None:
    fake_plugin("flaky", FLAKY)
    monkeypatch.setenv("DFML_TEST_FLAKY", "1")
    args = ("run", "-m", "flaky,random", *BASE, "--seeds", "0", "--results", str(tmp_path),
            "--set", "launcher.threads=1")
    out = cli(*args)  # the grid runs flaky first, then random
    assert out.exit_code == 1, out.output
    assert "1 of 2 run(s) failed" in out.output and "flaky failed on purpose" in out.output
    flaky_dir = next((tmp_path / "runs").glob("flaky-*"))
    error = json.loads((flaky_dir / "error.json").read_text())
    assert error["error"] == "RuntimeError: flaky failed on purpose" and "Traceback" in error["traceback"]
    assert not (flaky_dir / "result.json").exists()
    ok = results_by_run(tmp_path)  # the other run finished, with the baseline's result
    assert ok == {k: v for k, v in results_by_run(baseline).items() if "-s0-" in k}
    table = cli("compare", str(tmp_path), "--format", "csv").output.splitlines()
    assert table[0].endswith(",failed")
    assert any(line.startswith("flaky,none,dev,SS,1,0,,,") and line.endswith(",1") for line in table), table
    assert "FAILED" in cli("compare", str(tmp_path), "--format", "md").output
    assert "flaky failed on purpose" in cli("show", str(flaky_dir)).output

    monkeypatch.setenv("DFML_TEST_FLAKY", "0")  # the cause is fixed: a re-run retries only the failed run
    out = cli(*args)
    assert out.exit_code == 0, out.output
    assert out.output.count("already done") == 1 and "retrying (it failed earlier" in out.output
    assert (flaky_dir / "result.json").exists() and not (flaky_dir / "error.json").exists()
    assert "FAILED" not in cli("compare", str(tmp_path), "--format", "md").output


def test_a_run_lost_by_the_launcher_is_recorded_as_failed(registry, tmp_path) -> None:
    from dfml_bench import store
    from dfml_bench.config import build_raw_config, resolve_runs
    from dfml_bench.launch import as_outcome, make_jobs
    from dfml_bench.runner import Environment

    job = make_jobs(resolve_runs(build_raw_config("smoke"), registry), Environment(tmp_path), progress=False)[0]
    outcome = as_outcome(job, OSError("worker killed"), registry)
    assert outcome.status == "failed" and "worker killed" in (outcome.error or "")
    assert store.read_failure(job.run_dir)["access"] == "none"
    assert [f["method"] for f in store.iter_failures(tmp_path)] == ["random"]


@pytest.mark.parametrize("launcher, module, extra", [("ray", "ray", "ray"), ("slurm", "submitit", "slurm")])
def test_missing_launcher_package_is_a_one_line_hint(tmp_path, monkeypatch, launcher, module, extra) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    out = cli("run", *TINY, "--results", str(tmp_path), "--launcher", launcher)
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert f"pip install 'dfml-bench[{extra}]'" in out.output
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_launcher_flags_name_their_launcher(tmp_path) -> None:
    out = cli("run", *TINY, "--results", str(tmp_path), "--launcher", "slurm", "--workers", "2")
    assert out.exit_code == 2 and "--workers applies to the local launcher" in out.output
    out = cli("run", *TINY, "--results", str(tmp_path), "--ray-address", "auto")
    assert out.exit_code == 2 and "add --launcher ray" in out.output
