"""The skeletons of docs/components/*.md, installed as one entry-point plugin: every kind passes its
conformance check, and they run in a smoke grid next to the built-in components."""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from dfml_bench.cli import main
from dfml_bench.plugins import KINDS, load_registry
from dfml_bench.testing import check_component, check_hooks, tiny_scenario

PAGES = Path(__file__).resolve().parents[1] / "docs" / "components"
#: a skeleton block: fenced as `python skeleton`, its first line naming the module it is
SKELETON = re.compile(r"```python skeleton\n# (\w+)\.py\n(.*?)```", re.S)
#: the smoke profile cut to two meta-iterations (one validation between), two test episodes
SHORT = ("train.meta_iterations=2", "train.val_every=1", "train.val_episodes=2", "eval.episodes=2")
#: the component of each kind that the skeletons register
NAMES = {"estimator": "gauss_fd", "recoverer": "pixel_descent", "meta_learner": "sgd_inner",
         "replay": "recent_classes", "evaluation_rule": "nearest_neighbour", "scenario": "stripes_ss",
         "pool": "random_teachers", "launcher": "serial", "logger": "event_log", "dataset": "stripes",
         "architecture": "tiny_cnn", "method": "recover_adapt"}


def skeletons() -> dict[str, str]:
    """Module name -> source of every skeleton block of the component pages."""
    out: dict[str, str] = {}
    for page in sorted(PAGES.glob("*.md")):
        for module, source in SKELETON.findall(page.read_text()):
            assert module not in out, f"two skeletons are named {module}.py ({page.name})"
            out[module] = source
    return out


@pytest.fixture(scope="module")
def acme(tmp_path_factory: pytest.TempPathFactory):
    """The skeletons as modules on sys.path with entry-point metadata, as `pip install` leaves them."""
    root = tmp_path_factory.mktemp("acme")
    modules = skeletons()
    for module, source in modules.items():
        (root / f"{module}.py").write_text(source)
    info = root / "acme_dfml-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-dfml\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dfml_bench]\n" + "".join(f"{m} = {m}\n" for m in modules))
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield load_registry(strict=True)
    finally:
        sys.path.remove(str(root))
        for module in modules:
            sys.modules.pop(module, None)
        importlib.invalidate_caches()


def test_the_skeletons_form_a_plugin_with_one_component_of_every_kind(acme) -> None:
    registered = {kind: [c.name for c in acme.components(kind) if c.plugin.startswith("acme_")] for kind in KINDS}
    assert registered == {kind: [NAMES[kind]] for kind in KINDS}
    hooks = importlib.import_module("acme_hooks")
    assert all(callable(getattr(hooks, h, None)) for h in ("on_run_start", "on_run_end"))


@pytest.mark.parametrize("kind", sorted(NAMES))
def test_each_skeleton_passes_its_conformance_check(acme, kind: str, tmp_path: Path) -> None:
    extra = {"method": {"results": tmp_path, "scenario": "stripes_ss", "sets": SHORT}}.get(kind, {})
    check_component(kind, NAMES[kind], registry=acme, **extra)
    if kind == "pool":  # the other output modes too
        for output in ("probs", "label"):
            check_component(kind, NAMES[kind], registry=acme, scenario=tiny_scenario(output=output))


def test_the_lifecycle_hooks_pass_their_check(acme, tmp_path: Path) -> None:
    check_hooks(importlib.import_module("acme_hooks"), run_dir=tmp_path)
    assert json.loads((tmp_path / "acme-summary.json").read_text())["accuracy"] == 21.0


def test_the_skeletons_run_in_a_smoke_grid_next_to_the_built_ins(acme, tmp_path: Path) -> None:
    results = tmp_path / "res"
    out = CliRunner().invoke(main, [
        "--strict-plugins", "run", "-m", "recover_adapt,random", "--scenario", "SS,stripes_ss,custom",
        "--profile", "smoke", "--launcher", "serial", "--set", "architecture.name=tiny_cnn",
        "--set", "loggers=[event_log]", "--set", "scenario.custom.datasets=[stripes]",
        "--set", "scenario.custom.pool={kind: random_teachers}", "--set", "workers=1",
        *(arg for item in SHORT for arg in ("--set", item)), "--results", str(results),
        "--device", "cpu", "--no-progress"], terminal_width=200)
    assert out.exit_code == 0, out.output
    runs = {p.parent.name: json.loads(p.read_text()) for p in (results / "runs").glob("*/result.json")}
    cells = {(r["method"], r["scenario"]) for r in runs.values()}
    assert cells == {(m, s) for m in ("recover_adapt", "random") for s in ("SS", "stripes_ss", "custom")}
    for name, result in runs.items():
        run_dir = results / "runs" / name
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["architecture"]["name"] == "tiny_cnn"
        if result["method"] == "recover_adapt":
            assert result["evaluation"] == "nearest_neighbour" and result["queries"] > 0
            assert config["components"]["estimator"] == {"gauss_fd": {"q": 8, "mu": 0.005}}
        if not result.get("reused_from"):  # a run that executed: the hooks and the logger saw it
            summary = json.loads((run_dir / "acme-summary.json").read_text())
            assert summary["run_id"] == result["run_id"] and summary["accuracy"] == result["accuracy"]
            events = [json.loads(line)["event"] for line in (run_dir / "events.jsonl").read_text().splitlines()]
            assert events[0] == "start" and events[-1] == "end"


def commands() -> list[str]:
    """Every `dfml-bench run ...` command of the component pages' bash blocks (continuations joined)."""
    out = []
    for page in sorted(PAGES.glob("*.md")):
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                if line.startswith("dfml-bench run "):
                    out.append(line)
    return out


@pytest.mark.parametrize("command", commands())
def test_the_config_keys_on_the_pages_resolve(acme, command: str) -> None:
    """Each documented command selects and sets what it says, with the skeletons installed (the
    config is resolved as `run` resolves it; nothing is run)."""
    import shlex

    from dfml_bench.config import build_raw_config, component_params, resolve_runs

    args = shlex.split(command, comments=True)[2:]
    opts: dict[str, list[str]] = {}
    for flag, value in zip(args[::2], args[1::2]):
        opts.setdefault({"-m": "--method"}.get(flag, flag), []).append(value)
    assert set(opts) <= {"--method", "--scenario", "--set", "--profile", "--seeds", "--launcher"}, command
    flags = {"method": opts["--method"][0], "scenario": opts.get("--scenario", [None])[0],
             "seeds": [int(s) for s in opts["--seeds"][0].split(",")] if "--seeds" in opts else None,
             "launcher": opts.get("--launcher", [None])[0]}
    raw = build_raw_config(opts.get("--profile", ["quick"])[0], sets=opts.get("--set", []), flags=flags)
    assert resolve_runs(raw, acme)
    component_params(raw, "launcher", acme)
