"""Config layering and validation: every mistake is one sentence with a fix or a suggestion."""

from __future__ import annotations

import pytest

from dfml_bench.config import build_raw_config, parse_set, resolve_runs, run_id
from dfml_bench.errors import ConfigError


def resolve(registry, *sets, profile="smoke", **flags):
    return resolve_runs(build_raw_config(profile, sets=sets, flags=flags), registry)


def test_profiles_resolve_and_cross_into_a_grid(registry) -> None:
    runs = resolve(registry, "shots=[1,5]", "seeds=[0,1]", method="random,maml_oracle")
    assert len(runs) == 2 * 2 * 2
    assert {r["method"]["name"] for r in runs} == {"random", "maml_oracle"}
    oracle = next(r for r in runs if r["method"]["name"] == "maml_oracle")
    assert oracle["meta_learner"] == {"name": "maml", "params": {"inner_steps": 1, "inner_lr": 0.01,
                                                                 "first_order": False}}
    random_run = next(r for r in runs if r["method"]["name"] == "random")
    assert "meta_learner" not in random_run  # it does not use one, so it does not change its hash


def test_paper_profile_has_protocol_values(registry) -> None:
    run = resolve(registry, profile="paper", method="maml_oracle")[0]
    assert run["eval"] == {"episodes": 600, "steps": 10, "lr": 0.01, "seed": 0}
    assert run["train"]["meta_batch_size"] == 4 and run["train"]["meta_lr"] == 0.001


def test_set_overrides_selected_component_and_coerces_types(registry) -> None:
    run = resolve(registry, "meta.inner_steps=3", "train.meta_lr=1e-2", "meta_learner.first_order=yes",
                  method="maml_oracle")[0]
    assert run["meta_learner"]["params"]["inner_steps"] == 3
    assert run["meta_learner"]["params"]["first_order"] is True
    assert run["train"]["meta_lr"] == pytest.approx(0.01)


def test_run_id_is_a_stable_content_hash(registry) -> None:
    a = resolve(registry, method="maml_oracle")[0]
    b = resolve(registry, method="maml_oracle")[0]
    c = resolve(registry, "meta_learner.inner_lr=0.02", method="maml_oracle")[0]
    assert run_id(a) == run_id(b) and run_id(a) != run_id(c)


@pytest.mark.parametrize("sets, flags, message", [
    (["trian.meta_iterations=3"], {}, "Did you mean 'train'"),
    (["train.meta_iteration=3"], {}, "Did you mean 'meta_iterations'"),
    (["train.meta_iterations=abc"], {}, "must be an integer"),
    (["meta_learner.inner_stps=2"], {"method": "maml_oracle"}, "Did you mean 'inner_steps'"),
    (["meta_learner.first_order=maybe"], {"method": "maml_oracle"}, "must be true or false"),
    ([], {"method": "ranodm"}, "Did you mean 'random'"),
    ([], {"scenario": "HM"}, "scenario 'HM'"),
    (["architecture.pool=avg"], {}, "must be one of"),
    (["shots=[0]"], {}, "shots must be >= 1, not 0"),
])
def test_bad_config_is_one_clear_sentence(registry, sets, flags, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        resolve(registry, *sets, **flags)
    assert "\n" not in str(info.value)


def test_set_syntax_errors() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_set("train.meta_iterations")
    assert parse_set("train.meta_iterations=7") == {"train": {"meta_iterations": 7}}


def test_config_file_errors(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_raw_config("smoke", bad)
    with pytest.raises(ConfigError, match="cannot read"):
        build_raw_config("smoke", tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown profile 'quik'. Did you mean 'quick'"):
        build_raw_config("quik")


def test_config_file_layers_over_profile(tmp_path, registry) -> None:
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("train: {meta_iterations: 7}\nmeta_learner: {maml: {inner_steps: 4}}\n")
    run = resolve_runs(build_raw_config("smoke", cfg, flags={"method": "maml_oracle"}), registry)[0]
    assert run["train"]["meta_iterations"] == 7
    assert run["meta_learner"]["params"]["inner_steps"] == 4
    assert run["train"]["meta_batch_size"] == 2  # still the profile's


def test_long_profile_is_quick_trained_longer_and_validated_on_more_episodes(registry) -> None:
    from dfml_bench.config import load_profile

    quick, long = load_profile("quick"), load_profile("long")
    assert long["profile"] == "long"
    changed = ("meta_iterations", "val_episodes")
    assert {k: v for k, v in long["train"].items() if k not in changed} == \
        {k: v for k, v in quick["train"].items() if k not in changed}
    assert (long["train"]["meta_iterations"], long["train"]["val_episodes"]) == (1000, 300)
    assert {k: v for k, v in long.items() if k not in ("train", "profile")} == \
        {k: v for k, v in quick.items() if k not in ("train", "profile")}


def test_profile_file_layers_over_its_base(tmp_path, registry) -> None:
    (tmp_path / "mid.yaml").write_text("base: smoke\ntrain: {meta_iterations: 7}\n")
    (tmp_path / "top.yaml").write_text("base: mid.yaml\neval: {episodes: 3}\n")  # relative to this file
    run = resolve_runs(build_raw_config(str(tmp_path / "top.yaml"), flags={"method": "maml_oracle"}), registry)[0]
    assert run["train"]["meta_iterations"] == 7 and run["eval"]["episodes"] == 3
    assert run["train"]["meta_batch_size"] == 2  # still smoke's
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="chain loops"):
        build_raw_config(str(tmp_path / "loop.yaml"))
    (tmp_path / "odd.yaml").write_text("base: [quick]\n")
    with pytest.raises(ConfigError, match="must name a profile"):
        build_raw_config(str(tmp_path / "odd.yaml"))


def test_yaml_scenario_keeps_its_name_in_run_directories_and_progress_lines(tmp_path, glyph_cache) -> None:
    from click.testing import CliRunner

    from dfml_bench.cli import main

    spec = tmp_path / "ss3_probs.yaml"
    spec.write_text("name: ss3_probs\ndatasets: ['glyphs[instances_per_class=20]']\n"
                    "architectures: ['conv4[width=8]']\napis_per_cell: 2\nclasses_per_api: 3\noutput: probs\n")
    results = tmp_path / "results"
    out = CliRunner().invoke(main, ["run", "--method", "random", "--scenario", str(spec), "--profile", "smoke",
                                    "--shots", "1", "--device", "cpu", "--no-progress", "--results", str(results)],
                             terminal_width=300)
    assert out.exit_code == 0, out.output
    [run_dir] = (results / "runs").iterdir()
    assert run_dir.name.startswith("random-ss3_probs-1shot-s0-"), run_dir.name
    assert "random / ss3_probs / 1-shot / seed 0" in out.output and "custom" not in out.output


def test_scenario_label_is_made_safe_for_a_directory_name(registry, tmp_path) -> None:
    from dfml_bench.config import run_label

    spec = tmp_path / "odd.yaml"
    spec.write_text("name: a/b c\ndatasets: ['glyphs']\n")
    [run] = resolve(registry, method="random", scenario=str(spec))
    assert run["scenario"]["params"]["label"] == "a/b c"
    assert run_label(run) == "random-a_b_c-1shot-s0"
