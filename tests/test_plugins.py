"""Plugin discovery through entry points, broken plugins, misspelled hooks, allow/deny lists."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from dfml_bench.cli import main
from dfml_bench.errors import ConfigError, PluginError
from dfml_bench.plugins import load_registry

GOOD = """
from dataclasses import dataclass
from dfml_bench import hookimpl, param

@dataclass
class P:
    depth: int = param(3, "how deep")

@hookimpl
def register_methods(register):
    register("fake_good", "dfml_plugins.methods.random_init.method:RandomInit", params=P,
             help="a fake method", access="none", uses=("architecture",))
"""

BROKEN = """
import this_module_does_not_exist  # noqa
"""

MISSPELLED = """
from dfml_bench import hookimpl

@hookimpl
def register_method(register):  # missing the trailing s
    register("never", "x:y")
"""

RAISES = """
from dfml_bench import hookimpl

@hookimpl
def register_methods(register):
    raise ValueError("boom")
"""


def test_builtins_come_through_the_entry_point(registry) -> None:
    comp = registry.get("method", "maml_oracle")
    assert comp.plugin == "builtin"
    assert {"random", "maml_oracle"} <= set(registry.names("method"))
    assert registry.get("dataset", "glyphs").plugin == "builtin"


def test_each_builtin_component_is_declared_and_implemented_in_its_own_folder(registry) -> None:
    import dfml_plugins
    from dfml_bench.plugins import KINDS

    folders = {m.__name__ for m in dfml_plugins.COMPONENTS}
    for kind in KINDS:
        for comp in registry.components(kind):
            if comp.plugin != "builtin" or comp.factory == "dfml_bench.evaluation:FinetuneRule":
                continue
            folder = comp.factory.partition(":")[0].rpartition(".")[0]
            assert folder in folders, f"{kind} {comp.name}: factory {comp.factory} is outside a component folder"
            assert comp.params is None or comp.params.__module__ == folder, f"{kind} {comp.name}: params elsewhere"
    from dfml_plugins import params as former  # the former single module still names every params class

    assert former.BidfMkdFoParams is registry.get("method", "bidf_mkd_fo").params
    assert former.ZOParams is registry.get("estimator", "zo_forward").params


def test_a_misspelled_hook_in_a_component_folder_is_one_sentence() -> None:
    import types

    import dfml_plugins
    from dfml_bench import hookimpl

    module = types.ModuleType("dfml_plugins.methods.fake")
    module.register_method = hookimpl(lambda register: None)
    with pytest.raises(PluginError, match=r"implements 'register_method'.*Did you mean 'register_methods'"):
        dfml_plugins._checked(module)


def test_third_party_plugin_is_discovered_with_its_params(fake_plugin) -> None:
    fake_plugin("good", GOOD)
    registry = load_registry(strict=True)
    comp = registry.get("method", "fake_good")
    assert comp.plugin == "good"
    assert comp.params.__name__ == "P" and comp.meta["access"] == "none"


def test_broken_plugin_is_reported_and_skipped(fake_plugin) -> None:
    fake_plugin("good", GOOD)
    fake_plugin("broken", BROKEN)
    registry = load_registry(strict=False)
    failed = {f.name: f.reason for f in registry.failed}
    assert "broken" in failed and "this_module_does_not_exist" in failed["broken"]
    assert "fake_good" in registry.names("method")  # the others still load
    assert "maml_oracle" in registry.names("method")


def test_broken_plugin_is_fatal_in_strict_mode(fake_plugin, monkeypatch) -> None:
    fake_plugin("broken", BROKEN)
    with pytest.raises(PluginError, match="broken"):
        load_registry(strict=True)
    monkeypatch.setenv("DFML_BENCH_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError):
        load_registry()


def test_misspelled_hook_is_an_error_with_a_suggestion(fake_plugin) -> None:
    fake_plugin("typo", MISSPELLED)
    registry = load_registry(strict=False)
    reason = {f.name: f.reason for f in registry.failed}["typo"]
    assert reason == "'register_method' matches no dfml-bench hook (did you mean 'register_methods'?)"
    with pytest.raises(PluginError, match="register_method"):
        load_registry(strict=True)


def test_strict_mode_lists_every_broken_plugin_in_one_sentence(fake_plugin) -> None:
    fake_plugin("broken", BROKEN)
    fake_plugin("typo", MISSPELLED)
    fake_plugin("raises", RAISES)
    fake_plugin("good", GOOD)
    with pytest.raises(PluginError) as exc:
        load_registry(strict=True)
    message = str(exc.value)
    assert message.startswith("3 plugins are broken: 'broken' (import failed with ModuleNotFoundError")
    assert "'typo' ('register_method' matches no dfml-bench hook (did you mean 'register_methods'?))" in message
    assert "'raises' (register_methods raised ValueError: boom)" in message
    assert "good" not in message and "?." not in message and message.endswith("DFML_BENCH_STRICT_PLUGINS unset).")
    out = CliRunner().invoke(main, ["--strict-plugins", "list"], terminal_width=400)
    assert out.exit_code != 0 and "Traceback" not in out.output
    assert all(name in out.output for name in ("'broken'", "'typo'", "'raises'")), out.output


def test_hook_that_raises_is_reported(fake_plugin) -> None:
    fake_plugin("raises", RAISES)
    registry = load_registry(strict=False)
    assert "boom" in {f.name: f.reason for f in registry.failed}["raises"]


def test_allow_and_deny_lists(fake_plugin, monkeypatch) -> None:
    fake_plugin("good", GOOD)
    fake_plugin("broken", BROKEN)
    monkeypatch.setenv("DFML_BENCH_DISABLE_PLUGINS", "broken")
    registry = load_registry(strict=True)  # the broken one is never imported
    assert "fake_good" in registry.names("method")
    monkeypatch.delenv("DFML_BENCH_DISABLE_PLUGINS")
    monkeypatch.setenv("DFML_BENCH_PLUGINS", "builtin")
    registry = load_registry(strict=True)
    assert "fake_good" not in registry.names("method") and "random" in registry.names("method")


def test_duplicate_component_name_is_rejected(fake_plugin) -> None:
    fake_plugin("dup", GOOD.replace('"fake_good"', '"random"'))
    registry = load_registry(strict=False)
    assert "already provides" in {f.name: f.reason for f in registry.failed}["dup"]


def test_unknown_component_gets_did_you_mean(registry) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'maml_oracle'"):
        registry.get("method", "maml_orcale")


def test_list_shows_components_params_and_failures(fake_plugin) -> None:
    fake_plugin("good", GOOD)
    fake_plugin("broken", BROKEN)
    result = CliRunner().invoke(main, ["list"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "fake_good" in result.output and "depth" in result.output and "how" in result.output
    assert "broken" in result.output and "this_module_does_not_exist" in result.output
    assert "inner_steps" in result.output  # maml's declared parameter



def test_list_shows_each_parameters_allowed_range() -> None:
    result = CliRunner(env={"COLUMNS": "300"}).invoke(main, ["list", "estimator"])
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if "smoothing radius" in ln)
    assert "(> 0)" in line  # mu's exclusive lower bound, declared with param(min=0, exclusive_min=True)


WRONG_TYPES = """
from dfml_bench import hookimpl

def dict_method(params, context):
    return {"trains": True}

def str_scenario(params, context):
    return "SS"

class NotAPool:
    def __len__(self):
        return 0

def half_pool(params, scenario, device):
    return NotAPool()

@hookimpl
def register_methods(register):
    register("dict_method", dict_method, access="none", uses=("architecture",))

@hookimpl
def register_scenarios(register):
    register("str_scenario", str_scenario)

@hookimpl
def register_pools(register):
    register("half_pool", half_pool)
"""


def test_factory_returning_the_wrong_type_is_one_sentence_naming_plugin_and_interface(fake_plugin) -> None:
    fake_plugin("acme", WRONG_TYPES)
    registry = load_registry(strict=True)
    with pytest.raises(PluginError) as exc:
        registry.build("method", "dict_method", None, object())
    assert str(exc.value) == ("plugin 'acme' registered method 'dict_method' whose factory returned dict; "
                              "it must return a dfml_bench.interfaces.Method.")
    with pytest.raises(PluginError, match=r"plugin 'acme' registered pool 'half_pool' .* returned fake_acme\.NotAPool; "
                       r"it must return a pool answering len\(\), info\(\), api\(\) and close\(\)"):
        registry.get("pool", "half_pool").build(None, None, "cpu")


def test_scenario_factory_of_the_wrong_type_fails_where_the_runner_builds_it(fake_plugin, tmp_path) -> None:
    from dfml_bench.runner import Environment, build_scenario_by_name

    fake_plugin("acme", WRONG_TYPES)
    registry = load_registry(strict=True)
    with pytest.raises(PluginError, match=r"^plugin 'acme' registered scenario 'str_scenario' whose factory returned "
                       r"str; it must return a dfml_bench\.interfaces\.ScenarioData\.$"):
        build_scenario_by_name(registry, "str_scenario", None, Environment(tmp_path, cache_dir=tmp_path), 0)


def test_run_of_a_method_factory_of_the_wrong_type_names_the_plugin(fake_plugin, tmp_path, glyph_cache) -> None:
    from dfml_bench.config import build_raw_config, resolve_runs
    from dfml_bench.runner import Environment, execute_run

    fake_plugin("acme", WRONG_TYPES)
    registry = load_registry(strict=True)
    resolved = resolve_runs(build_raw_config("smoke", flags={"method": "dict_method"}), registry)[0]
    with pytest.raises(PluginError, match="plugin 'acme' registered method 'dict_method' whose factory returned dict"):
        execute_run(resolved, registry, Environment(tmp_path, device="cpu"))


def test_every_component_kind_is_checked_against_an_interface() -> None:
    from dfml_bench.plugins import INTERFACES, KINDS

    assert set(INTERFACES) == set(KINDS) - {"pool"}  # a pool is checked by the methods it answers


def test_scenario_skeleton_in_the_docs_builds(tmp_path, glyph_cache) -> None:
    import importlib
    import re
    import sys
    from pathlib import Path

    from dfml_bench.config import build_raw_config, resolve_runs
    from dfml_bench.interfaces import ScenarioData
    from dfml_bench.pool import PoolSpec
    from dfml_bench.runner import Environment, build_scenario

    doc = (Path(__file__).parents[1] / "docs" / "writing-plugins.md").read_text()
    [source] = re.findall(r"```python\n# letters_scenario\.py\n(.*?)```", doc, re.S)
    (tmp_path / "letters_scenario.py").write_text(source)
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("letters_scenario")
        registry = load_registry(strict=True, extra_plugins=[("letters", module)])
        raw = build_raw_config("smoke", sets=["scenario.letters.pool_seed=3"],
                               flags={"method": "random", "scenario": "letters"})
        [resolved] = resolve_runs(raw, registry)
        scenario = build_scenario(registry, resolved, Environment(tmp_path, cache_dir=glyph_cache))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("letters_scenario", None)
    assert isinstance(scenario, ScenarioData) and [d.name for d in scenario.datasets] == ["glyphs-letters"]
    assert isinstance(scenario.pool_spec, PoolSpec) and scenario.pool_spec.seed == 3


LIFECYCLE = """
from dfml_bench import hookimpl

EVENTS = []

@hookimpl
def on_run_start(run):
    EVENTS.append(("start", run.run_id, run.run_dir, run.config["method"]["name"]))

@hookimpl
def on_run_end(run, result):
    EVENTS.append(("end", run.run_id, run.run_dir, result["accuracy"]))
"""


def test_on_run_end_gets_run_info_and_the_result_and_is_skipped_for_failed_runs(fake_plugin, tmp_path,
                                                                                glyph_cache) -> None:
    import importlib

    from dfml_bench.config import build_raw_config, resolve_runs, run_id
    from dfml_bench.runner import Environment, execute_run, run_path

    fake_plugin("acme", WRONG_TYPES)
    fake_plugin("watch", LIFECYCLE)
    registry = load_registry(strict=True)
    events = importlib.import_module("fake_watch").EVENTS
    env = Environment(tmp_path, device="cpu")
    good, bad = (resolve_runs(build_raw_config("smoke", flags={"method": m}), registry)[0]
                 for m in ("random", "dict_method"))
    result = execute_run(good, registry, env)
    path = run_path(env, good)
    assert events == [("start", run_id(good), path, "random"), ("end", run_id(good), path, result["accuracy"])]
    execute_run(good, registry, env)  # already finished: skipped, no hook
    assert len(events) == 2
    with pytest.raises(PluginError):
        execute_run(bad, registry, env)
    assert [e[0] for e in events] == ["start", "end", "start"]  # the failed run never ends
