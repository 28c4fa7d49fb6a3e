"""Every built-in component passes dfml_bench.testing's conformance check of its kind, and the checks
catch the faults they are meant to catch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dfml_bench.plugins import load_registry
from dfml_bench.testing import check_component, check_estimator, check_replay, tiny_scenario

REGISTRY = load_registry(strict=True)
SMOKE_LETTERS = "glyphs[domain=letters,instances_per_class=20]"
#: kinds checked on every built-in component here (methods: below; they run end to end)
CHEAP = ("estimator", "recoverer", "meta_learner", "replay", "evaluation_rule", "architecture", "dataset",
         "scenario", "launcher", "logger", "pool")
#: per component: the check's keyword arguments, or a reason to leave it to another test
ARGS: dict[tuple[str, str], dict[str, Any] | str] = {
    **{("architecture", a): {"params": {"width": 4}} for a in ("conv4", "resnet10", "resnet18")},
    ("dataset", "glyphs"): {"params": {"domain": "letters", "instances_per_class": 20}},
    **{("dataset", d): "reads prepared files under --data-root (tests/test_real_datasets.py builds them)"
       for d in ("cifar_fs", "mini_imagenet", "cub")},
    ("recoverer", "generator"): {"params": {"iterations": 2, "z_dim": 16, "width": 16}},
    ("scenario", "custom"): {"sets": [f"scenario.custom.datasets=['{SMOKE_LETTERS}']"]},
    ("launcher", "ray"): "starts a Ray instance (tests/test_launchers.py runs it)",
    ("launcher", "slurm"): "submits through submitit (tests/test_launchers.py runs it)",
}
BUILTIN = [pytest.param(kind, name, id=f"{kind}-{name}",
                        marks=[pytest.mark.skip(reason=ARGS[kind, name])] if isinstance(ARGS.get((kind, name)), str)
                        else [])
           for kind in CHEAP for name in REGISTRY.names(kind)]


@pytest.fixture
def http_pool_url(tmp_path: Path):
    """A pool of two tiny conv4 APIs (one epoch on synthetic images) served over HTTP, for the http
    pool plugin to open."""
    import torch

    from dfml_bench.pool import APIPool, PoolSpec, TrainRecipe, build_pool
    from dfml_bench.serve import PoolServer

    spec = PoolSpec(("conv4[width=4]",), apis_per_cell=2, classes_per_api=3, seed=0,
                    recipe=TrainRecipe(epochs=1, batch_size=32))
    root = build_pool(spec, tiny_scenario(image_size=16).datasets, REGISTRY, tmp_path / "pools", workers=1)
    pool = APIPool(root, REGISTRY, torch.device("cpu"))
    with PoolServer(pool) as server:
        yield server.url
    pool.close()


@pytest.mark.parametrize("kind,name", BUILTIN)
def test_builtin_component_passes_its_check(kind: str, name: str, request: pytest.FixtureRequest) -> None:
    args = ARGS.get((kind, name), {})
    if kind == "pool":
        args = {"params": {"url": request.getfixturevalue("http_pool_url")}, "scenario": tiny_scenario(image_size=16)}
    check_component(kind, name, registry=REGISTRY, **args)


METHODS = [c.name for c in REGISTRY.components("method") if not c.meta.get("base")]  # variants share their code


#: the smoke profile cut to one meta-iteration, one validation episode, two test episodes and a narrow
#: generator recoverer
SHORT = ("train.meta_iterations=1", "train.val_every=1", "train.val_episodes=1", "eval.episodes=2",
         "recoverer.generator.width=16")


@pytest.mark.parametrize("name", METHODS)
def test_builtin_method_passes_its_check(name: str, tmp_path: Path) -> None:
    check_component("method", name, registry=REGISTRY, results=tmp_path, sets=SHORT)


def test_hooks_check_refuses_a_misspelled_argument() -> None:
    import types

    import pluggy

    from dfml_bench import hookimpl
    from dfml_bench.testing import check_hooks

    bad = types.ModuleType("bad_hooks")

    @hookimpl
    def on_run_end(run, results):  # noqa: ANN001 - the mistake under test: `results`
        return None

    bad.on_run_end = on_run_end  # type: ignore[attr-defined]
    with pytest.raises(pluggy.PluginValidationError):
        check_hooks(bad)


# -- the checks catch what they are for ---------------------------------------------------------

FAULTY = '''
import torch
from dfml_bench import hookimpl
from dfml_bench.interfaces import Estimate, GradientEstimator

class GlobalRNG(GradientEstimator):
    """Forward differences with directions from torch's global RNG: no state to resume from."""
    def __init__(self, params):
        pass
    def estimate(self, api, x, loss_fn):
        b = x.shape[0]
        u = torch.randn(b, 8, *x.shape[1:])
        points = torch.cat([x.unsqueeze(1), x.unsqueeze(1) + 0.005 * u], 1).flatten(0, 1)
        f = loss_fn(points, api.query(points), torch.arange(b).repeat_interleave(9)).view(b, 9)
        grad = (((f[:, 1:] - f[:, :1]) / 0.005).view(b, 8, 1, 1, 1) * u).mean(1)
        return Estimate(f[:, 0], grad)

class Constant(GradientEstimator):
    """The true loss, the right shape, one query per image, and a gradient that ignores the API."""
    def __init__(self, params):
        pass
    def estimate(self, api, x, loss_fn):
        loss = loss_fn(x, api.query(x), torch.arange(x.shape[0]))
        return Estimate(loss, torch.ones_like(x))

class Uncharged(Constant):
    """Reads the network behind a white-box handle directly: its forward passes are never charged."""
    def estimate(self, api, x, loss_fn):
        api.module((x - 0.5) / 0.5)
        return super().estimate(api, x, loss_fn)

@hookimpl
def register_estimators(register):
    register("global_rng", GlobalRNG)
    register("constant", Constant)
    register("uncharged", Uncharged)
'''


@pytest.fixture
def faulty(fake_plugin):
    fake_plugin("faulty", FAULTY)
    return load_registry(strict=True)


def test_estimator_check_catches_missing_state_bias_and_uncharged_queries(faulty) -> None:
    with pytest.raises(AssertionError, match="returns no state"):
        check_estimator("global_rng", registry=faulty)
    with pytest.raises(AssertionError, match="it is biased"):
        check_estimator("constant", registry=faulty)
    with pytest.raises(AssertionError, match="the ledger was charged"):
        check_estimator("uncharged", registry=faulty)


def test_replay_check_catches_state_it_does_not_return(monkeypatch) -> None:
    memory = REGISTRY.get("replay", "task_memory").load()  # its factory is the class
    monkeypatch.setattr(memory, "state_dict", lambda self: {"images": {}, "domain": {}})
    with pytest.raises(AssertionError, match="not ready after loading"):
        check_replay("task_memory", registry=REGISTRY)
