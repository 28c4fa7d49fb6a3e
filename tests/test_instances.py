"""The dev and sealed instances of the embedded glyphs: dev unchanged, sealed different, both recorded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from dfml_bench.config import build_raw_config, resolve_runs, run_id
from dfml_bench.errors import ConfigError

#: sha256 of the dev letters domain at 2 instances per class (images, labels, class names of every
#: split), as rendered before instances existed: the dev instance must stay byte-identical.
DEV_LETTERS_DIGEST = "6dd05041070b45f1e352d5af15091814895f2fe4b744ac0299fdfc4c26166b47"


def digest(ds) -> str:
    h = hashlib.sha256()
    for name in ("train", "val", "test"):
        split = ds.splits[name]
        h.update(split.images.numpy().tobytes())
        h.update(split.labels.numpy().tobytes())
        h.update(json.dumps(split.class_names).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def letters(glyph_cache: Path):
    from dfml_plugins.datasets.glyphs import GlyphsParams
    from dfml_plugins.datasets.glyphs.dataset import build_glyphs

    return {inst: build_glyphs(GlyphsParams(domain="letters", instances_per_class=2, instance=inst), None, glyph_cache)
            for inst in ("dev", "sealed")}


def test_dev_instance_is_unchanged(letters) -> None:
    assert digest(letters["dev"]) == DEV_LETTERS_DIGEST


def test_sealed_instance_has_other_classes_and_images(letters) -> None:
    dev, sealed = letters["dev"], letters["sealed"]
    assert set(sealed.splits["test"].class_names) != set(dev.splits["test"].class_names)
    all_dev = {c for s in dev.splits.values() for c in s.class_names}
    assert all_dev == {c for s in sealed.splits.values() for c in s.class_names}  # same characters, new split
    assert [len(sealed.splits[k].class_names) for k in ("train", "val", "test")] == \
        [len(dev.splits[k].class_names) for k in ("train", "val", "test")]
    # the same class in both instances is drawn with other renderings
    name = next(c for c in sealed.splits["train"].class_names if c in dev.splits["train"].class_names)

    def images_of(ds):
        split = ds.splits["train"]
        return split.images[split.labels == split.class_names.index(name)]

    assert not (images_of(dev) == images_of(sealed)).all()


def test_sealed_pool_is_kept_apart_from_the_dev_pool(letters) -> None:
    from dfml_bench.pool import PoolSpec, TrainRecipe, pool_hash

    spec = PoolSpec(("conv4",), 2, 5, 0, TrainRecipe(epochs=1, batch_size=8, lr=0.01, optimizer="auto", shift=0))
    assert pool_hash(spec, [letters["dev"]]) != pool_hash(spec, [letters["sealed"]])


def test_dev_runs_keep_their_resolved_config_and_id(registry) -> None:
    for profile in ("smoke", "quick"):
        for method in ("bidf_mkd", "maml_oracle"):
            flags = {"method": method, "scenario": "SS,MH", "shots": [1], "seeds": [0]}
            plain = resolve_runs(build_raw_config(profile, flags=flags), registry)
            dev = resolve_runs(build_raw_config(profile, sets=["instance=dev"], flags=flags), registry)
            sealed = resolve_runs(build_raw_config(profile, flags={**flags, "instance": "sealed"}), registry)
            assert plain == dev and [run_id(r) for r in plain] == [run_id(r) for r in dev]
            assert "instance=" not in json.dumps(plain) and '"instance"' not in json.dumps(plain)
            for p, s in zip(plain, sealed):
                assert run_id(p) != run_id(s)
                assert all(d.endswith("instance=sealed]") for d in s["scenario"]["params"]["datasets"])
                assert {k: v for k, v in p.items() if k != "scenario"} == {k: v for k, v in s.items() if k != "scenario"}


def test_scenarios_record_their_instance(registry, glyph_cache) -> None:
    from dfml_bench.config import component_params
    from dfml_bench.runner import Environment, build_scenario_by_name

    env = Environment(results_root=glyph_cache, cache_dir=glyph_cache)
    for instance in ("dev", "sealed"):
        raw = build_raw_config("smoke", flags={"scenario": "SS", "instance": instance})
        name, params = component_params(raw, "scenario", registry)
        assert build_scenario_by_name(registry, name, params, env, seed=0).instance == instance


def test_instance_errors_are_one_sentence(registry, tmp_path) -> None:
    with pytest.raises(ConfigError, match="has one fixed split and no instances"):
        resolve_runs(build_raw_config("smoke", sets=["scenario.datasets=[cifar_fs]", "instance=sealed"],
                                      flags={"method": "random"}), registry)
    with pytest.raises(ConfigError, match="selects instance 'dev' but instance 'sealed' was set"):
        resolve_runs(build_raw_config("smoke", sets=["scenario.datasets=['glyphs[instance=dev]']",
                                                     "instance=sealed"], flags={"method": "random"}), registry)
    with pytest.raises(ConfigError, match="must be one of"):
        resolve_runs(build_raw_config("smoke", sets=["instance=seald"], flags={"method": "random"}), registry)
    from dfml_bench.interfaces import ScenarioContext
    from dfml_plugins.scenarios.standard.scenario import _datasets

    ctx = ScenarioContext(registry, None, tmp_path, 0)
    with pytest.raises(ConfigError, match="mixes the dev and sealed instances"):
        _datasets(["glyphs[domain=letters,instances_per_class=2]",
                   "glyphs[domain=symbols,instances_per_class=2,instance=sealed]"], ctx)


def test_pool_build_takes_the_instance(glyph_cache, tmp_path) -> None:
    from click.testing import CliRunner

    from dfml_bench.cli import main

    roots = {}
    for instance in ("dev", "sealed"):
        out = CliRunner().invoke(main, ["pool", "build", "-p", "smoke", "--instance", instance, "--no-progress",
                                        "--pool-dir", str(tmp_path)])
        assert out.exit_code == 0, out.output
        roots[instance] = out.output.strip().splitlines()[-1].rsplit(" ", 1)[-1]
    assert roots["dev"] != roots["sealed"] and all(Path(r).parent == tmp_path for r in roots.values())
