"""Conformance checks for plugin authors: run your component against the interfaces.

Use them in your plugin's own test suite::

    from dfml_bench.testing import check_method
    def test_my_method(tmp_path):
        check_method("my_method", tmp_path)

Each check raises AssertionError with a sentence saying what is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dfml_bench.plugins import Registry, load_registry

#: A tiny scenario setting: letters at 20 instances per class, a few iterations and episodes.
SMOKE_PROFILE = "smoke"


def check_architecture(name: str, registry: Registry | None = None, image_size: int | None = 32,
                       params: Mapping[str, Any] | None = None) -> None:
    """The architecture builds, maps [B,3,H,W] to [B,classes] and works with functional_call."""
    import torch
    from torch.func import functional_call

    from dfml_bench.params import build_params

    registry = registry or load_registry()
    comp = registry.get("architecture", name)
    model = comp.load()(build_params(comp.params, dict(params or {}), name), 5, image_size)
    assert isinstance(model, torch.nn.Module), f"architecture '{name}' must build a torch.nn.Module"
    size = image_size or 40
    x = torch.randn(6, 3, size, size)
    out = model(x)
    assert out.shape == (6, 5), f"architecture '{name}' returned shape {tuple(out.shape)}, expected (6, 5)"
    params_ = {k: v.detach().clone() for k, v in model.named_parameters()}
    out2 = functional_call(model, params_, (x,))
    assert torch.allclose(out, out2, atol=1e-5), f"architecture '{name}' does not support functional_call"
    assert not any(b.dtype.is_floating_point for _, b in model.named_buffers() if b.numel() > 1), \
        f"architecture '{name}' keeps running statistics; meta models must use batch statistics"


def check_meta_learner(name: str, registry: Registry | None = None, params: Mapping[str, Any] | None = None) -> None:
    """task_outcome returns a finite loss with a gradient w.r.t. the meta parameters."""
    import torch

    from dfml_bench.data import Task
    from dfml_bench.interfaces import MetaLearner
    from dfml_bench.params import build_params

    registry = registry or load_registry()
    comp = registry.get("meta_learner", name)
    learner = comp.load()(build_params(comp.params, dict(params or {}), name))
    assert isinstance(learner, MetaLearner), f"meta-learner '{name}' must subclass dfml_bench.interfaces.MetaLearner"
    arch = registry.get("architecture", "conv4")
    model = arch.load()(build_params(arch.params, {"width": 8}, "conv4"), 5, 32)
    g = torch.Generator().manual_seed(0)
    task = Task(torch.randn(5, 3, 32, 32, generator=g), torch.arange(5),
                torch.randn(10, 3, 32, 32, generator=g), torch.arange(5).repeat(2))
    p = dict(model.named_parameters())
    outcome = learner.task_outcome(model, p, task)
    assert outcome.loss.dim() == 0 and math.isfinite(outcome.loss.item()), "the task loss must be a finite scalar"
    assert 0.0 <= outcome.accuracy <= 100.0, "accuracy is a percentage in [0, 100]"
    grads = torch.autograd.grad(outcome.loss, list(p.values()), allow_unused=True)
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads), \
        f"meta-learner '{name}' produced a loss with no gradient w.r.t. the meta parameters"


def check_method(name: str, results: Path, registry: Registry | None = None, scenario: str = "SS",
                 sets: tuple[str, ...] = (), cache_dir: Path | None = None) -> dict[str, Any]:
    """Run the method end to end on the smoke profile; check the stored result; return it."""
    from dfml_bench.config import build_raw_config, resolve_runs
    from dfml_bench.runner import Environment, execute_run, run_path

    registry = registry or load_registry()
    raw = build_raw_config(SMOKE_PROFILE, sets=sets, flags={"method": name, "scenario": scenario})
    runs = resolve_runs(raw, registry)
    env = Environment(results_root=Path(results), device="cpu", cache_dir=cache_dir)
    for resolved in runs:
        result = execute_run(resolved, registry, env)
        assert 0.0 <= result["accuracy"] <= 100.0, f"accuracy {result['accuracy']} is not a percentage"
        assert math.isfinite(result["ci95"]) and result["ci95"] >= 0, "the 95% CI must be finite and >= 0"
        assert (run_path(env, resolved) / "result.json").exists(), "the run wrote no result.json"
        again = execute_run(resolved, registry, env)
        assert again.get("skipped"), "re-running a finished run must be a no-op"
    return result
