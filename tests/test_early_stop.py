"""Early stopping on meta-val (`train.early_stop`) and per-method train settings (`train.METHOD`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dfml_bench import runner
from dfml_bench.config import build_raw_config, resolve_runs
from dfml_bench.evaluation import EvalResult, evaluate
from dfml_bench.runner import Environment, execute_run

# meta-val accuracy per validation: the best is the third (iteration 2), then it stalls
VAL = [10.0, 20.0, 30.0, 25.0, 28.0, 29.0, 27.0, 26.0, 24.0, 23.0]
SETS = ["train.meta_iterations=9", "train.val_every=1", "train.log_every=1", "eval.episodes=2"]


class ScriptedVal:
    """Replaces meta-val evaluation by the accuracies in VAL, in call order (meta-test is real).
    `fail_at`: the validation whose call raises instead (the run dies there), once."""

    def __init__(self, fail_at: int | None = None):
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, model: Any, sampler: Any, episodes: int, steps: int, lr: float, on_episode: Any = None,
                 **kwargs: Any) -> Any:
        if on_episode is not None:  # the meta-test evaluation
            return evaluate(model, sampler, episodes, steps, lr, on_episode=on_episode, **kwargs)
        if self.calls == self.fail_at:
            self.fail_at = None
            raise RuntimeError("killed")
        self.calls += 1
        acc = VAL[self.calls - 1]
        return EvalResult(acc, 0.0, 1, [acc])


def _run(registry, root: Path, monkeypatch, val: ScriptedVal, *sets: str) -> dict:
    monkeypatch.setattr(runner, "evaluate", val)
    resolved = resolve_runs(build_raw_config("smoke", sets=[*SETS, *sets], flags={"method": "maml_oracle"}),
                            registry)[0]
    return execute_run(resolved, registry, Environment(root, device="cpu", pool_dir=root / "pools", workers=1))


def _records(root: Path) -> list[dict]:
    (run_dir,) = (root / "runs").iterdir()
    return [{k: v for k, v in json.loads(line).items() if k != "wall_time"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_training_stops_after_early_stop_validations_without_a_new_best(registry, tmp_path, monkeypatch) -> None:
    result = _run(registry, tmp_path / "a", monkeypatch, ScriptedVal(), "train.early_stop=3")
    assert result["stopped_early"] == "early stop: no new best meta-val accuracy in 3 validations"
    assert result["best_iteration"] == 2 and result["best_val_accuracy"] == 30.0
    # the selected validation's episodes are recorded (what `compare --split val` pairs on), and every
    # validation's episodes, one line each (what `compare --split val --at N` reads)
    assert [d["episode_accuracies"] for d in result["best_val_per_dataset"].values()] == [[30.0]]
    (run_dir,) = (tmp_path / "a" / "runs").iterdir()
    lines = [json.loads(line) for line in (run_dir / "val_episodes.jsonl").read_text().splitlines()]
    assert [(r["iteration"], list(r["per_dataset"].values())) for r in lines] == [(i, [[v]]) for i, v in
                                                                                    enumerate(VAL[:6])]
    assert result["meta_iterations"] == 6  # iterations 0-5 trained; the third stale validation is at 5
    assert [r["val_acc"] for r in _records(tmp_path / "a")] == VAL[:6]
    off = _run(registry, tmp_path / "b", monkeypatch, ScriptedVal())  # early_stop: 0, the default
    assert off["stopped_early"] is None and off["meta_iterations"] == 9


def test_an_early_stopped_run_resumes_to_the_same_stop(registry, tmp_path, monkeypatch) -> None:
    whole = _run(registry, tmp_path / "whole", monkeypatch, ScriptedVal(), "train.early_stop=3")
    with pytest.raises(RuntimeError, match="killed"):  # dies at the validation of iteration 4
        _run(registry, tmp_path / "cut", monkeypatch, ScriptedVal(fail_at=4), "train.early_stop=3")
    val = ScriptedVal()
    val.calls = 4  # the checkpoint after iteration 3 holds validations 0-3; the script goes on from there
    resumed = _run(registry, tmp_path / "cut", monkeypatch, val, "train.early_stop=3")
    volatile = {"run_id", "wall_time_s", "peak_rss_mb", "peak_gpu_mb"}
    assert {k: v for k, v in resumed.items() if k not in volatile} == \
        {k: v for k, v in whole.items() if k not in volatile}
    assert _records(tmp_path / "cut") == _records(tmp_path / "whole")
    cut, whole = ((next((tmp_path / d / "runs").iterdir()) / "val_episodes.jsonl").read_text() for d in ("cut", "whole"))
    assert cut == whole  # the killed attempt's validation after the checkpoint is not kept twice


def test_train_settings_per_method_override_the_shared_ones_for_that_method_only(registry) -> None:
    raw = build_raw_config("smoke", sets=["train.maml_oracle.meta_iterations=50", "train.maml_oracle.early_stop=4"],
                           flags={"method": "random,maml_oracle"})
    trains = {r["method"]["name"]: r["train"] for r in resolve_runs(raw, registry)}
    assert trains["maml_oracle"]["meta_iterations"] == 50 and trains["maml_oracle"]["early_stop"] == 4
    assert trains["random"]["meta_iterations"] == 4 and "early_stop" not in trains["random"]  # off: not recorded
    shared = {k: v for k, v in trains["random"].items() if k != "meta_iterations"}
    assert {k: v for k, v in trains["maml_oracle"].items() if k not in ("meta_iterations", "early_stop")} == shared


@pytest.mark.parametrize("profile,cap", [("quick", 2000), ("long", 2000), ("paper", 100000)])
def test_profiles_train_the_oracles_to_early_stopping_under_a_higher_cap(registry, profile, cap) -> None:
    raw = build_raw_config(profile, flags={"method": "maml_oracle,maml_oracle_proto,bidf_mkd"})
    trains = {r["method"]["name"]: r["train"] for r in resolve_runs(raw, registry)}
    for oracle in ("maml_oracle", "maml_oracle_proto"):
        assert trains[oracle]["meta_iterations"] == cap > trains["bidf_mkd"]["meta_iterations"]
        assert trains[oracle]["early_stop"] > 0
    assert "early_stop" not in trains["bidf_mkd"]
