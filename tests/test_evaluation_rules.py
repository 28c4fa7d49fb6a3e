"""Evaluation rules as components: a method's declared rule scores meta-val and meta-test, a plugin
can add one, the result and the table say which rule ran; and CPU runs are bit-reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from dfml_bench.cli import main

RULE_PLUGIN = """
import dataclasses
import torch
from dfml_bench import hookimpl
from dfml_bench.interfaces import EvaluationRule, Method
from dfml_bench.params import param

class FirstClass(EvaluationRule):
    def __init__(self, params):
        pass

    def predict(self, model, params, task, *, steps, lr):
        return torch.zeros(len(task.query_y), dtype=torch.long, device=task.query_y.device)

@dataclasses.dataclass
class ConstantParams:
    label: int = param(0, "the class every query is given", min=0)

class Constant(EvaluationRule):
    def __init__(self, params):
        self.label = params.label

    def predict(self, model, params, task, *, steps, lr):
        return torch.full((len(task.query_y),), self.label, dtype=torch.long, device=task.query_y.device)

class Untrained(Method):
    trains = False

    def train_step(self, iteration):
        return {}

@hookimpl
def register_evaluation_rules(register):
    register("first_class", FirstClass, params=None, help="always predicts class 0")
    register("constant", Constant, params=ConstantParams, help="always predicts its label")

@hookimpl
def register_methods(register):
    register("always_first", Untrained, params=None, help="scored by first_class", access="none",
             uses=("architecture",), evaluation="first_class")
    register("misruled", Untrained, params=None, help="names a rule nobody registered", access="none",
             uses=("architecture",), evaluation="first_clas")
    register("always_constant", Untrained, params=None, help="scored by constant", access="none",
             uses=("architecture",), evaluation="constant")
"""

SMOKE = ("--profile", "smoke", "--shots", "1", "--device", "cpu", "--no-progress", "--set", "launcher.threads=1")


def cli(*args: str):
    return CliRunner().invoke(main, list(args), terminal_width=200)


def test_a_plugin_rule_scores_validation_and_test_and_is_recorded(fake_plugin, tmp_path) -> None:
    fake_plugin("rules", RULE_PLUGIN)
    out = cli("run", "--method", "always_first", *SMOKE, "--results", str(tmp_path))
    assert out.exit_code == 0, out.output
    run = next((tmp_path / "runs").iterdir())
    result = json.loads((run / "result.json").read_text())
    assert result["evaluation"] == "first_class"
    episodes = result["per_dataset"]["glyphs-letters"]["episode_accuracies"]
    assert len(episodes) == 6 and all(abs(a - 20.0) < 1e-4 for a in episodes)  # 5-way, balanced queries
    val = [json.loads(line)["val_acc"] for line in (run / "metrics.jsonl").read_text().splitlines()
           if "val_acc" in json.loads(line)]
    assert val and all(abs(v - 20.0) < 1e-4 for v in val)  # meta-val used the same rule
    table = cli("compare", str(tmp_path), "--format", "csv").output
    assert ",first_class," in table.splitlines()[1]
    assert "always_first (eval: first_class)" in cli("compare", str(tmp_path), "--format", "md").output
    bad = cli("run", "--method", "misruled", *SMOKE, "--results", str(tmp_path))
    assert bad.exit_code != 0 and "unknown evaluation rule 'first_clas'" in bad.output
    assert "Did you mean" in bad.output or "did you mean" in bad.output
    assert "Traceback" not in bad.output


def test_a_rule_takes_its_settings_from_the_config_and_they_enter_the_run_key(fake_plugin, tmp_path) -> None:
    fake_plugin("rules", RULE_PLUGIN)
    runs = {}
    for label in ("0", "7"):  # 7: no query of a 5-way episode has it, so accuracy 0 shows the setting arrived
        out = cli("run", "--method", "always_constant", *SMOKE, "--results", str(tmp_path / label),
                  "--set", f"evaluation_rule.constant.label={label}")
        assert out.exit_code == 0, out.output
        runs[label] = next((tmp_path / label / "runs").iterdir())
    assert runs["0"].name != runs["7"].name  # another setting, another run
    for label, run in runs.items():
        resolved = (run / "config.yaml").read_text()
        assert f"label: {label}" in resolved
        episodes = json.loads((run / "result.json").read_text())["per_dataset"]["glyphs-letters"]["episode_accuracies"]
        assert all(abs(a - (20.0 if label == "0" else 0.0)) < 1e-4 for a in episodes)  # balanced queries
    bad = cli("run", "--method", "always_constant", *SMOKE, "--results", str(tmp_path / "bad"),
              "--set", "evaluation_rule.constant.label=-1")
    assert bad.exit_code == 2 and "label" in bad.output and "Traceback" not in bad.output
    other = cli("run", "--method", "always_constant", *SMOKE, "--results", str(tmp_path / "bad"),
                "--set", "evaluation_rule.name=finetune")
    assert other.exit_code == 2 and "is evaluated by the rule 'constant'" in other.output


def test_prototype_methods_declare_their_rule_and_it_enters_their_run_key(registry) -> None:
    from dfml_bench.config import build_raw_config, resolve_runs

    for name in ("bidf_mkd_proto", "maml_oracle_proto"):
        assert registry.get("method", name).meta["evaluation"] == "prototype"
    assert {c.name for c in registry.components("evaluation_rule")} >= {"finetune", "prototype"}
    runs = resolve_runs(build_raw_config("smoke", flags={"method": "maml_oracle_proto,random"}), registry)
    rules = {r["method"]["name"]: r["eval"].get("rule") for r in runs}
    assert rules == {"maml_oracle_proto": "prototype", "random": None}  # finetune keys are unchanged


def test_two_runs_with_one_thread_count_give_identical_episodes(tmp_path) -> None:
    records = []
    for name in ("a", "b"):
        out = cli("run", "--method", "maml_oracle", *SMOKE, "--results", str(tmp_path / name))
        assert out.exit_code == 0, out.output
        records.append(json.loads(next((tmp_path / name / "runs").glob("*/result.json")).read_text()))
    a, b = records
    assert a["torch_threads"] == b["torch_threads"] == 1 and a["deterministic"]
    assert a["per_dataset"] == b["per_dataset"] and a["best_val_accuracy"] == b["best_val_accuracy"]
    assert {"numpy", "python", "platform", "torch", "cpu"} <= set(a)
    assert a["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # which kernels rounded its floats


def test_docs_name_the_evaluation_rule_hook() -> None:
    text = (Path(__file__).parents[1] / "docs" / "writing-plugins.md").read_text()
    assert "register_evaluation_rules" in text and "evaluation=" in text
