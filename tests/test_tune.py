"""`dfml-bench tune`: seeded random search scored on meta-val only, on the smoke profile."""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from dfml_bench.cli import main
from dfml_bench.config import build_raw_config, resolve_runs
from dfml_bench.errors import ConfigError
from dfml_bench.tune import VAL_ONLY, Dimension, parse_space

CHEAP = ("--profile", "smoke", "--device", "cpu", "--no-progress", "--set", "train.meta_iterations=2",
         "--set", "train.val_every=1")


def cli(*args: str) -> "object":
    return CliRunner().invoke(main, list(args), terminal_width=200)


def study_dir(results: Path) -> Path:
    (path,) = (results / "tune").iterdir()
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, str]:
    results = tmp_path_factory.mktemp("tune")
    out = cli("tune", "--method", "maml_oracle", "--trials", "3", "--results", str(results), *CHEAP)
    assert out.exit_code == 0, out.output
    return results, out.output


def test_tune_writes_every_trial_and_the_budget(study) -> None:
    results, output = study
    root = study_dir(results)
    assert root.name.startswith("maml_oracle-SS-1shot-")
    rows = list(csv.DictReader((root / "trials.csv").open()))
    assert [r["trial"] for r in rows] == ["0", "1", "2"]
    assert all(r["status"] == "done" and 0 <= float(r["val_acc"]) <= 100 for r in rows)
    assert rows[0]["train.meta_lr"] == "0.001"  # trial 0 runs the config's defaults
    assert len({(r["train.meta_lr"], r["meta_learner.maml.inner_lr"]) for r in rows}) == 3
    md = (root / "trials.md").read_text()
    assert "meta-val only" in md and "3 trial(s)" in md and "meta_iterations 2" in md and "profile smoke" in md
    results_of_trials = [yaml.safe_load((d / "config.yaml").read_text()) for d in (root / "runs").iterdir()]
    assert len(results_of_trials) == 3 and all(c[VAL_ONLY] is True for c in results_of_trials)
    assert "meta-val" in output


def test_winner_overlay_round_trips_into_run(study, registry) -> None:
    results, _ = study
    root = study_dir(results)
    rows = list(csv.DictReader((root / "trials.csv").open()))
    best = max(rows, key=lambda r: (float(r["val_acc"]), -int(r["trial"])))
    overlay = root / "winner.yaml"
    runs = resolve_runs(build_raw_config("smoke", overlay, flags={"seeds": [0]}), registry)
    assert len(runs) == 1
    trial_configs = {d.name: yaml.safe_load((d / "config.yaml").read_text()) for d in (root / "runs").iterdir()}
    expected = [c for c in trial_configs.values()
                if c["train"]["meta_lr"] == float(best["train.meta_lr"])
                and c["meta_learner"]["params"]["inner_lr"] == float(best["meta_learner.maml.inner_lr"])]
    assert len(expected) == 1
    want = {k: v for k, v in expected[0].items() if k != VAL_ONLY}
    assert runs[0] == want


def test_rerun_skips_finished_trials_and_compare_ignores_them(study) -> None:
    results, _ = study
    root = study_dir(results)
    before = {d.name: (d / "result.json").stat().st_mtime_ns for d in (root / "runs").iterdir()}
    out = cli("tune", "--method", "maml_oracle", "--trials", "3", "--results", str(results), *CHEAP)
    assert out.exit_code == 0, out.output
    assert "0 to run" in out.output and "3 finished earlier" in out.output
    assert {d.name: (d / "result.json").stat().st_mtime_ns for d in (root / "runs").iterdir()} == before
    # trials are not table results: compare finds nothing to tabulate in a study
    out = cli("compare", str(root))
    assert out.exit_code != 0 and "no finished or failed runs" in out.output
    # ... but they are meta-val results: each trial is a row, scored as trials.csv scores it
    out = cli("compare", str(root), "--split", "val", "--format", "csv")
    assert out.exit_code == 0, out.output
    lines = list(csv.DictReader(io.StringIO(out.output)))
    trials = list(csv.DictReader((root / "trials.csv").open()))
    assert sorted(round(float(r["mean"]), 6) for r in lines) == sorted(round(float(t["val_acc"]), 6) for t in trials)
    assert len({r["method"] for r in lines}) == 3 and {r["split"] for r in lines} == {"val"}
    for d in (root / "runs").iterdir():  # the selected validation's episodes, per dataset
        result = json.loads((d / "result.json").read_text())
        (per,) = result["best_val_per_dataset"].values()
        assert per["accuracy"] == pytest.approx(result["best_val_accuracy"])
        assert len(per["episode_accuracies"]) == per["episodes"] > 0


def test_more_trials_keep_the_earlier_ones() -> None:
    dims = parse_space({"a": {"log_uniform": [1e-4, 1e-2]}, "b": {"int_log_uniform": [5, 100]},
                        "c": {"choice": [3, 6, 10]}, "d": {"int_uniform": [0, 2]}, "e": {"uniform": [0.5, 1.5]}},
                       "test")
    draws = [{d.key: d.sample(random.Random(f"s/{i}")) for d in dims} for i in range(50)]
    assert all(1e-4 <= x["a"] <= 1e-2 and 5 <= x["b"] <= 100 and x["c"] in (3, 6, 10) and x["d"] in (0, 1, 2)
               and 0.5 <= x["e"] <= 1.5 for x in draws)
    assert isinstance(draws[0]["b"], int) and isinstance(draws[0]["a"], float)
    assert len({x["a"] for x in draws}) > 40  # a real spread, not one value
    assert draws == [{d.key: d.sample(random.Random(f"s/{i}")) for d in dims} for i in range(50)]


@pytest.mark.parametrize("space, message", [
    ({"train.meta_lrr": {"log_uniform": [1e-4, 1e-2]}}, "Did you mean 'meta_lr'?"),
    ({"train.meta_lr": {"loguniform": [1e-4, 1e-2]}}, "unknown distribution 'loguniform'. Did you mean 'log_uniform'?"),
    ({"train.meta_lr": {"log_uniform": [1e-2, 1e-4]}}, "needs [low, high] with finite numbers low < high"),
    ({"train.meta_lr": {"log_uniform": [0, 1e-2]}}, "needs low > 0"),
    ({"train.meta_lr": [1e-4, 1e-2]}, "must be one distribution such as"),
    ({"train.meta_lr": {"choice": []}}, "choice needs a non-empty list"),
    ({"traine.meta_lr": {"choice": [0.1]}}, "Did you mean 'train'?"),
    ({"meta_learner.mamll.inner_lr": {"choice": [0.1]}}, "Did you mean 'maml'?"),
    ({"meta_learner.maml.inner_lrr": {"choice": [0.1]}}, "Did you mean 'inner_lr'?"),
    ({"meta_learner.maml.inner_steps": {"int_uniform": [-2, 3]}}, "is not a valid setting"),
    ({"method.kd.temperature": {"choice": [1.0, 2.0]}}, "does not change the runs of method 'maml_oracle'"),
    ({"seeds": {"choice": [1, 2]}}, "cannot be tuned"),
])
def test_bad_space_files_are_one_sentence(tmp_path, space, message) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    out = cli("tune", "--method", "maml_oracle", "--space", str(path), "--results", str(tmp_path / "r"), *CHEAP)
    assert out.exit_code == 2, out.output
    assert message in out.output, out.output
    assert "Traceback" not in out.output and len(out.output.strip().splitlines()) <= 3
    assert not (tmp_path / "r").exists()  # nothing ran


def test_space_file_replaces_the_declared_space_and_empty_file_is_refused(tmp_path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    out = cli("tune", "--method", "maml_oracle", "--space", str(empty), *CHEAP)
    assert out.exit_code == 2 and "declares no setting" in out.output
    with pytest.raises(ConfigError, match="must map setting paths"):
        parse_space([1, 2], "space")
    assert parse_space({"x": {"choice": [1]}}, "s") == [Dimension("x", "choice", (1,))]


def test_declared_spaces_of_builtin_methods_are_valid(registry) -> None:
    from dfml_bench.tune import check_key, declared_space

    raw = build_raw_config("smoke")
    for name in ("bidf_mkd", "bidf_mkd_noise", "kd", "purer", "maml_oracle"):
        dims = declared_space(registry, name)
        assert len(dims) in (1, 2, 3), name
        for dim in dims:
            check_key(dim.key, raw, registry, name)
    assert declared_space(registry, "random") == []


def test_tune_refuses_the_sealed_instance(tmp_path) -> None:
    out = cli("tune", "--method", "maml_oracle", "--set", "instance=sealed", "--results", str(tmp_path), *CHEAP)
    assert out.exit_code == 2 and "dev instance only" in out.output


TRIPWIRE = '''
from dfml_bench import hookimpl
from dfml_bench.data import FewShotDataset

TOUCHED = []


class Tripwire:
    """Stands in for the meta-test split: any use of it is recorded and fails."""

    def __getattr__(self, name):
        TOUCHED.append(name)
        raise AssertionError(f"the meta-test split was touched ({name})")


class Guarded(FewShotDataset):
    def split(self, name):
        if name == "test":
            TOUCHED.append("split('test')")
            raise AssertionError("the meta-test split was asked for")
        return super().split(name)


def build(params, data_root, cache_dir):
    from dfml_plugins.datasets.glyphs import GlyphsParams
    from dfml_plugins.datasets.glyphs.dataset import build_glyphs

    ds = build_glyphs(GlyphsParams(instances_per_class=20), data_root, cache_dir)
    splits = dict(ds.splits)
    splits["test"] = Tripwire()
    return Guarded(ds.name, splits, ds.image_size, ds.mean, ds.std)


@hookimpl
def register_datasets(register):
    register("tripwire_glyphs", f"{__name__}:build", params=None, help="glyphs whose meta-test split trips")
'''


def test_tuning_never_touches_the_meta_test_split(tmp_path, fake_plugin) -> None:
    import importlib

    fake_plugin("tripwire", TRIPWIRE)
    scenario = tmp_path / "guarded.yaml"
    scenario.write_text(yaml.safe_dump({"datasets": ["tripwire_glyphs"], "architectures": ["conv4[width=8]"],
                                        "apis_per_cell": 1, "api_epochs": 1}))
    space = tmp_path / "space.yaml"
    space.write_text("train.meta_lr: {log_uniform: [1.0e-4, 1.0e-2]}\n")
    module = importlib.import_module("fake_tripwire")
    out = cli("tune", "--method", "maml_oracle", "--scenario", str(scenario), "--trials", "2", "--space", str(space),
              "--results", str(tmp_path / "r"), *CHEAP)
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader((study_dir(tmp_path / "r") / "trials.csv").open()))
    assert len(rows) == 2 and all(r["status"] == "done" for r in rows)
    assert module.TOUCHED == []
    # the control: a table run evaluates on meta-test, so the same tripwire fires
    out = cli("run", "--method", "maml_oracle", "--scenario", str(scenario), "--results", str(tmp_path / "runs"),
              *CHEAP)
    assert out.exit_code == 1 and "meta-test split" in out.output
    assert module.TOUCHED


def test_trial_zero_shows_what_a_variant_inherits_from_its_base(registry) -> None:
    from dfml_bench.tune import default_value

    raw = build_raw_config("smoke", None, flags={"method": "bidf_mkd_noise", "seeds": [0], "shots": [1]})
    base = raw["method"]["bidf_mkd"]  # the smoke profile sets the base's values, not the variant's
    assert default_value("method.bidf_mkd_noise.per_class", raw, registry) == base["per_class"] != 30
    assert default_value("method.bidf_mkd_noise.patience", raw, registry) == base["patience"] != 200
    runs = resolve_runs(raw, registry)
    assert runs[0]["method"]["params"]["per_class"] == base["per_class"]  # and it is what trial 0 runs


def test_tune_grid_then_run_tuned_uses_each_cells_winner(tmp_path, registry) -> None:
    from dfml_bench.config import run_id
    from dfml_bench.tune import tuned_runs

    results = tmp_path / "r"
    out = cli("tune", "-m", "maml_oracle,random", "--shots", "1,2", "--trials", "2", "--results", str(results), *CHEAP)
    assert out.exit_code == 0, out.output
    roots = sorted(p.name.rsplit("-", 1)[0] for p in (results / "tune").iterdir())
    assert roots == ["maml_oracle-SS-1shot", "maml_oracle-SS-2shot", "random-SS-1shot", "random-SS-2shot"]
    assert "6 run(s), 6 to run" in out.output  # 2 trials x 2 shots of maml_oracle, 1 x 2 of random
    flags = {"method": "maml_oracle,random", "shots": [1, 2], "seeds": [0], "instance": "sealed"}
    sets = ("train.meta_iterations=2", "train.val_every=1")  # CHEAP's --set items
    runs, lines = tuned_runs(registry, results, profile="smoke", config_file=None, sets=sets, flags=flags)
    assert len(runs) == 4 and len(lines) == 4
    for run in runs:  # each cell's runs are exactly those of `run --config winner.yaml`
        (winner,) = (results / "tune").glob(f"{run['method']['name']}-SS-{run['shots']}shot-*/winner.yaml")
        cell = {**flags, "method": run["method"]["name"], "shots": [run["shots"]]}
        (want,) = resolve_runs(build_raw_config("smoke", winner, sets, cell), registry)
        assert run_id(run) == run_id(want) and want["scenario"]["params"]["datasets"][0].endswith("instance=sealed]")
    assert any("trial" in line and "maml_oracle on SS 1-shot" in line for line in lines)
    out = cli("run", "-m", "maml_oracle", "--shots", "1", "--seeds", "0", "--instance", "sealed",
              "--tuned", str(results), "--results", str(tmp_path / "runs"), *CHEAP)
    assert out.exit_code == 0, out.output
    assert "tuned: maml_oracle on SS 1-shot: trial" in out.output
    (config,) = (tmp_path / "runs").glob("runs/*/config.yaml")
    ran = next(r for r in runs if r["method"]["name"] == "maml_oracle" and r["shots"] == 1)
    assert run_id(yaml.safe_load(config.read_text())) == run_id(ran)


def test_run_tuned_names_the_missing_or_ambiguous_study(tmp_path) -> None:
    results = tmp_path / "r"
    out = cli("run", "-m", "maml_oracle", "--shots", "1", "--tuned", str(results), *CHEAP)
    assert out.exit_code == 2 and "is not a directory" in out.output
    (results / "tune").mkdir(parents=True)
    out = cli("run", "-m", "maml_oracle", "--shots", "1", "--tuned", str(results), "--results", str(tmp_path / "o"),
              *CHEAP)
    assert out.exit_code == 2, out.output
    assert "no finished study of maml_oracle on SS 1-shot (profile smoke)" in out.output
    assert "dfml-bench tune --method maml_oracle --scenario SS --shots 1 --profile smoke" in out.output
    for extra in ((), ("--set", "train.meta_lr=0.002")):  # two studies of one cell
        out = cli("tune", "-m", "maml_oracle", "--trials", "1", "--results", str(results), *CHEAP, *extra)
        assert out.exit_code == 0, out.output
    out = cli("run", "-m", "maml_oracle", "--shots", "1", "--tuned", str(results), *CHEAP)
    assert out.exit_code == 2 and "2 finished studies of maml_oracle on SS 1-shot" in out.output
    assert not (tmp_path / "o").exists()


def test_a_pool_free_methods_study_takes_the_trials_another_scenarios_study_finished(tmp_path) -> None:
    from dfml_bench import store

    results = tmp_path / "r"
    for scenario, to_run in (("SS", 2), ("SH", 0)):  # the same data: maml_oracle's trials have the same ids
        out = cli("tune", "-m", "maml_oracle", "-s", scenario, "--trials", "2", "--results", str(results), *CHEAP)
        assert out.exit_code == 0 and f"2 run(s), {to_run} to run" in out.output, out.output
    (ss,) = (results / "tune").glob("maml_oracle-SS-*")
    (sh,) = (results / "tune").glob("maml_oracle-SH-*")
    ss_runs, sh_runs = (sorted((s / "runs").iterdir(), key=lambda p: p.name[-16:]) for s in (ss, sh))
    assert [p.name[-16:] for p in ss_runs] == [p.name[-16:] for p in sh_runs] and len(ss_runs) == 2
    for a, b in zip(ss_runs, sh_runs):
        first, second = (store.read_result(p) for p in (a, b))
        assert "copied_from" not in first and second["copied_from"] == str(a)  # SH ran nothing
        assert second["scenario"] == "SH" and first["scenario"] == "SS"
        assert second["best_val_accuracy"] == first["best_val_accuracy"]
        assert (b / store.METRICS_FILE).read_bytes() == (a / store.METRICS_FILE).read_bytes()  # stands alone
        assert not (b / store.CHECKPOINT_FILE).exists()
    rows = [json.loads((s / "study.json").read_text())["rows"] for s in (ss, sh)]
    assert [r["val_acc"] for r in rows[0]] == [r["val_acc"] for r in rows[1]]
    won = [yaml.safe_load((s / "winner.yaml").read_text()) for s in (ss, sh)]
    assert [w.pop("scenario") for w in won] == [{"name": "SS"}, {"name": "SH"}] and won[0] == won[1]  # same settings
    other = tmp_path / "elsewhere"  # another --results: no study to take from, so the trials run
    out = cli("tune", "-m", "maml_oracle", "-s", "SH", "--trials", "1", "--results", str(other), *CHEAP)
    assert out.exit_code == 0, out.output
    assert all("copied_from" not in store.read_result(p) for p in (other / "tune").glob("*/runs/*"))
