"""API pools and black-box access: reproducible, cached, verified, counted, honest."""

from __future__ import annotations

import gc
import json
import pickle
from pathlib import Path

import pytest
import torch

from dfml_bench.apis import BlackBoxAPI, QueryBudgetExhausted, QueryLedger, WhiteBoxAPI
from dfml_bench.config import build_raw_config, component_params
from dfml_bench.errors import AccessError, ConfigError
from dfml_bench.pool import APIPool, PoolError, build_pool
from dfml_bench.runner import Environment, build_scenario_by_name


def scenario(registry, name="SS", *sets):
    raw = build_raw_config("smoke", sets=sets, flags={"scenario": name})
    s_name, params = component_params(raw, "scenario", registry)
    return build_scenario_by_name(registry, s_name, params, Environment(Path("unused")), seed=0)


@pytest.fixture(scope="module")
def ss_pool(tmp_path_factory):
    from dfml_bench.plugins import load_registry

    registry = load_registry(strict=True)
    data = scenario(registry)
    root = build_pool(data.pool_spec, data.datasets, registry, tmp_path_factory.mktemp("pools"), workers=1)
    return registry, data, root


def test_pool_manifest_lists_every_api(ss_pool) -> None:
    _, data, root = ss_pool
    manifest = json.loads((root / "manifest.json").read_text())
    assert len(manifest["apis"]) == 3
    for api in manifest["apis"]:
        assert api["architecture"] == "conv4" and api["dataset"] == "glyphs-letters"
        assert len(set(api["classes"])) == 5 and len(api["class_names"]) == 5
        assert 0 <= api["heldout_accuracy"] <= 100 and len(api["sha256"]) == 64
        assert (root / api["file"]).exists()


def test_saved_weights_are_the_best_epoch_and_reproduce_its_accuracy(ss_pool) -> None:
    registry, data, root = ss_pool
    pool = APIPool(root, registry, torch.device("cpu"))
    split = data.datasets[0].split("train")
    for i, entry in enumerate(pool.entries):
        module = pool.load_module(i).eval()
        xs, ys = [], []
        for k, c in enumerate(entry["local_classes"]):
            idx = torch.nonzero(split.labels == c).flatten()
            held = idx[int(round(0.8 * len(idx))):]
            xs.append(split.images[held])
            ys.append(torch.full((len(held),), k))
        mean = torch.tensor(entry["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(entry["std"]).view(1, -1, 1, 1)
        with torch.no_grad():
            pred = module((torch.cat(xs).float() / 255 - mean) / std).argmax(1)
        acc = (pred == torch.cat(ys)).float().mean().item() * 100
        assert acc == pytest.approx(entry["heldout_accuracy"], abs=1e-3)


def test_same_seed_gives_byte_identical_pool_and_other_seed_other_classes(ss_pool, tmp_path) -> None:
    registry, data, root = ss_pool
    again = build_pool(data.pool_spec, data.datasets, registry, tmp_path / "again", workers=2)
    assert again.name == root.name
    assert (again / "manifest.json").read_bytes() == (root / "manifest.json").read_bytes()
    for f in root.glob("*.pt"):
        assert (again / f.name).read_bytes() == f.read_bytes()
    other = scenario(registry, "SS", "scenario.pool_seed=1")
    root1 = build_pool(other.pool_spec, other.datasets, registry, tmp_path / "seed1", workers=1)
    assert root1.name != root.name
    draws = [[a["classes"] for a in json.loads((r / "manifest.json").read_text())["apis"]] for r in (root, root1)]
    assert draws[0] != draws[1]


def test_tampered_api_file_is_detected(ss_pool, tmp_path) -> None:
    import shutil

    registry, _, root = ss_pool
    copy = tmp_path / root.name
    shutil.copytree(root, copy)
    target = copy / json.loads((copy / "manifest.json").read_text())["apis"][1]["file"]
    blob = bytearray(target.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    target.write_bytes(bytes(blob))
    pool = APIPool(copy, registry, torch.device("cpu"))
    pool.api(0, QueryLedger())  # an intact file still loads
    with pytest.raises(PoolError, match="does not match its checksum"):
        pool.api(1, QueryLedger())
    (copy / "manifest.json").write_text("{broken")
    with pytest.raises(PoolError, match="missing or unreadable"):
        APIPool(copy, registry, torch.device("cpu"))


def test_queries_are_counted_exactly(ss_pool) -> None:
    registry, _, root = ss_pool
    pool = APIPool(root, registry, torch.device("cpu"))
    ledger = QueryLedger()
    a, b = pool.api(0, ledger), pool.api(1, ledger)
    x = torch.rand(7, 3, 32, 32)
    assert a.query(x).shape == (7, 5)
    a.query(x[:3])
    a.query(x[:3])  # a repeated query is charged again
    b.query(torch.rand(2, 3, 48, 48))  # resized by the API itself
    assert ledger.total == 15
    assert ledger.per_api == {a.api_id: 13, b.api_id: 2}


def test_output_modes(ss_pool) -> None:
    registry, _, root = ss_pool
    pool = APIPool(root, registry, torch.device("cpu"))
    x = torch.rand(4, 3, 32, 32)
    logits = pool.api(0, QueryLedger(), output="logits").query(x)
    probs = pool.api(0, QueryLedger(), output="probs").query(x)
    labels = pool.api(0, QueryLedger(), output="label").query(x)
    assert torch.allclose(probs, logits.softmax(1)) and torch.equal(labels, logits.argmax(1))
    assert labels.dtype == torch.int64 and labels.shape == (4,)
    assert logits.grad_fn is None and not logits.requires_grad


def test_budget_exhaustion_is_typed_and_charges_nothing(ss_pool) -> None:
    registry, _, root = ss_pool
    ledger = QueryLedger(budget=10)
    api = APIPool(root, registry, torch.device("cpu")).api(0, ledger)
    api.query(torch.rand(8, 3, 32, 32))
    with pytest.raises(QueryBudgetExhausted, match="budget of 10 images"):
        api.query(torch.rand(5, 3, 32, 32))
    assert ledger.total == 8
    api.query(torch.rand(2, 3, 32, 32))
    assert ledger.total == 10


def _reachable(obj, depth=4):
    """Objects reachable from `obj` through attributes, slots, properties and gc referents."""
    seen, frontier, out = set(), [obj], []
    for _ in range(depth):
        nxt = []
        for o in frontier:
            if id(o) in seen or isinstance(o, (type, str, bytes, int, float)):
                continue
            seen.add(id(o))
            out.append(o)
            children = list(gc.get_referents(o))
            for name in dir(o):
                try:
                    children.append(getattr(o, name))
                except Exception:  # noqa: BLE001 - some attributes refuse on purpose
                    pass
            if isinstance(o, dict):
                children += list(o.values())
            elif isinstance(o, (list, tuple, set)):
                children += list(o)
            nxt += children
        frontier = nxt
    return out


def test_black_box_api_exposes_no_weights(ss_pool) -> None:
    registry, _, root = ss_pool
    api = APIPool(root, registry, torch.device("cpu")).api(0, QueryLedger())
    assert isinstance(api, BlackBoxAPI) and not isinstance(api, WhiteBoxAPI)
    for name in ("module", "forward", "parameters", "state_dict", "model"):
        with pytest.raises(AccessError, match="white-box access"):
            getattr(api, name)
    with pytest.raises(TypeError):
        vars(api)
    with pytest.raises(AccessError):
        pickle.dumps(api)
    leaks = [o for o in _reachable(api) if isinstance(o, (torch.nn.Module, torch.nn.Parameter))
             or (isinstance(o, torch.Tensor) and o.numel() > 3)]
    assert not leaks, f"reachable from a black-box API: {[type(o).__name__ for o in leaks]}"


def test_white_box_api_is_explicit(ss_pool) -> None:
    registry, _, root = ss_pool
    api = APIPool(root, registry, torch.device("cpu")).api(0, QueryLedger(), white_box=True)
    assert isinstance(api.module, torch.nn.Module)
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    api.forward(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


BUDGETED = """
from dfml_bench import hookimpl
from dfml_bench.interfaces import Method
import torch

class Querier(Method):
    def __init__(self, params, context):
        super().__init__(params, context)
        self.apis = context.apis()
    def train_step(self, it):
        self.apis.get(it % len(self.apis)).query(torch.rand(40, 3, 32, 32))
        return {"loss": 0.0}

class WantsWeights(Method):
    def __init__(self, params, context):
        super().__init__(params, context)
        context.apis().get(0).module
    def train_step(self, it):
        return {}

@hookimpl
def register_methods(register):
    register("querier", Querier, access="black", uses=("architecture",))
    register("sneaky", WantsWeights, access="black", uses=("architecture",))
"""


def test_budget_ends_a_run_cleanly_with_a_result(fake_plugin, tmp_path) -> None:
    from dfml_bench.config import resolve_runs
    from dfml_bench.plugins import load_registry
    from dfml_bench.runner import execute_run

    fake_plugin("budgeted", BUDGETED)
    registry = load_registry(strict=True)
    raw = build_raw_config("smoke", sets=["budget=100"], flags={"method": "querier"})
    resolved = resolve_runs(raw, registry)[0]
    result = execute_run(resolved, registry, Environment(tmp_path, device="cpu", pool_dir=tmp_path / "pools", workers=1))
    assert result["queries"] == 80 and result["budget"] == 100
    assert "budget of 100 images is exhausted" in result["stopped_early"]
    assert result["meta_iterations"] == 2 and 0 <= result["accuracy"] <= 100


def test_black_box_method_asking_for_weights_fails_clearly(fake_plugin, tmp_path) -> None:
    from dfml_bench.config import resolve_runs
    from dfml_bench.plugins import load_registry
    from dfml_bench.runner import execute_run

    fake_plugin("budgeted", BUDGETED)
    registry = load_registry(strict=True)
    resolved = resolve_runs(build_raw_config("smoke", flags={"method": "sneaky"}), registry)[0]
    with pytest.raises(AccessError, match="black-box API"):
        execute_run(resolved, registry, Environment(tmp_path, device="cpu", pool_dir=tmp_path / "pools", workers=1))


def test_white_box_method_on_black_box_scenario_fails_clearly(registry, tmp_path) -> None:
    from dfml_bench.config import resolve_runs
    from dfml_bench.runner import execute_run

    raw = build_raw_config("smoke", sets=["scenario.access=black"], flags={"method": "average"})
    with pytest.raises(AccessError, match="needs white-box APIs"):
        execute_run(resolve_runs(raw, registry)[0], registry,
                    Environment(tmp_path, device="cpu", pool_dir=tmp_path / "pools", workers=1))


def test_average_works_on_ss_and_refuses_mixed_pools(registry, tmp_path) -> None:
    from dfml_bench.config import resolve_runs
    from dfml_bench.runner import execute_run

    env = Environment(tmp_path, device="cpu", pool_dir=tmp_path / "pools", workers=1)
    result = execute_run(resolve_runs(build_raw_config("smoke", sets=["architecture.width=8"],
                                                       flags={"method": "average"}), registry)[0], registry, env)
    assert result["method"] == "average" and result["access"] == "white"
    raw = build_raw_config("smoke", flags={"method": "average", "scenario": "SH"})
    with pytest.raises(ConfigError, match="mixes"):
        execute_run(resolve_runs(raw, registry)[0], registry, env)


def test_api_shift_translates_each_image_on_its_own_and_enters_the_pool_hash() -> None:
    import dataclasses

    from dfml_bench.pool import PoolSpec, TrainRecipe, pool_hash, random_shift

    x = torch.zeros(32, 1, 8, 8, dtype=torch.uint8)
    x[:, :, 3:5, 3:5] = 255
    out = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert (out.flatten(1) == 255).sum(1).le(4).all()  # content moved, never duplicated
    assert len({tuple(o.flatten().tolist()) for o in out}) > 5  # one offset per image
    plain = PoolSpec(("conv4",), 2, 5, 0, TrainRecipe())
    assert "shift" not in json.dumps(dataclasses.asdict(plain)) or pool_hash(plain, []) == pool_hash(plain, [])
    assert pool_hash(dataclasses.replace(plain, recipe=TrainRecipe(shift=4)), []) != pool_hash(plain, [])


def test_negative_api_shift_is_a_config_error(registry, tmp_path) -> None:
    raw = build_raw_config("smoke", sets=["scenario.SS.api_shift=-1"], flags={})
    name, params = component_params(raw, "scenario", registry)
    env = Environment(tmp_path, device="cpu", pool_dir=tmp_path / "pools", workers=1)
    with pytest.raises(ConfigError, match="api_shift"):
        build_scenario_by_name(registry, name, params, env, 0)


def test_pool_build_verifies_a_cached_pool_and_says_how_to_rebuild(ss_pool, tmp_path) -> None:
    import shutil

    from click.testing import CliRunner

    from dfml_bench.cli import main

    _, _, root = ss_pool
    copy = tmp_path / "pools" / root.name
    shutil.copytree(root, copy)
    args = ["pool", "build", "--scenario", "SS", "--profile", "smoke", "--pool-dir", str(tmp_path / "pools")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and "pool ready" in res.output, res.output
    target = copy / json.loads((copy / "manifest.json").read_text())["apis"][0]["file"]
    target.write_bytes(target.read_bytes()[:-10])
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "pool ready" not in res.output, res.output
    assert "does not match its checksum" in res.output and "pool build` again" in res.output, res.output


def test_pool_build_names_its_processes_build_workers_and_keeps_workers_as_an_alias(ss_pool, tmp_path) -> None:
    import shutil

    from click.testing import CliRunner

    from dfml_bench.cli import main

    _, _, root = ss_pool
    shutil.copytree(root, tmp_path / "pools" / root.name)
    args = ["pool", "build", "--scenario", "SS", "--profile", "smoke", "--pool-dir", str(tmp_path / "pools")]
    res = CliRunner().invoke(main, [*args, "--build-workers", "1"])
    assert res.exit_code == 0 and "pool ready" in res.output and "deprecated" not in res.output, res.output
    res = CliRunner().invoke(main, [*args, "--workers", "1"])
    assert res.exit_code == 0 and "pool ready" in res.output and "use --build-workers" in res.output, res.output
    res = CliRunner().invoke(main, [*args, "--workers", "1", "--build-workers", "1"])
    assert res.exit_code == 2 and "pass only --build-workers" in res.output, res.output
    assert "--workers" not in CliRunner().invoke(main, ["pool", "build", "--help"]).output.replace("--build-workers", "")


def test_one_pool_dir_resolver_for_runs_and_pool_commands(ss_pool, tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner

    from dfml_bench import store
    from dfml_bench.cli import main
    from dfml_bench.pool import verify_pool

    _, _, root = ss_pool
    monkeypatch.setenv("DFML_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DFML_BENCH_POOL_DIR", raising=False)
    assert Environment(tmp_path).resolved_pool_dir() == store.pool_dir() == tmp_path / "cache" / "pools"
    monkeypatch.setenv("DFML_BENCH_POOL_DIR", str(root.parent))
    assert Environment(tmp_path).resolved_pool_dir() == store.pool_dir() == root.parent  # runs see it too
    assert Environment(tmp_path, pool_dir=tmp_path / "mine").resolved_pool_dir() == tmp_path / "mine"
    assert root.name in CliRunner().invoke(main, ["pool", "ls"]).output
    res = CliRunner().invoke(main, ["pool", "show", root.name, "--verify"])
    assert res.exit_code == 0 and "match their checksums" in res.output, res.output
    assert len(verify_pool(root)["apis"]) == 3
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("DFML_BENCH_POOL_DIR", str(tmp_path / "file"))
    with pytest.raises(ConfigError, match=r"^\$DFML_BENCH_POOL_DIR points at .* which is a file"):
        store.pool_dir()
