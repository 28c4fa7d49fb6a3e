"""Bad input, safe loading and hardening against careless or hostile input.

Every bad input is refused with one clear sentence (a DfmlError subclass the CLI prints without
a traceback) and loses nothing already written; nothing from disk is unpickled with code
execution: a crafted checkpoint, pool file or dataset pickle is refused and its payload never runs.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dfml_bench.cli import main
from dfml_bench.config import build_raw_config, resolve_runs
from dfml_bench.errors import ConfigError, DataError, DfmlError, StoreError

ROOT = Path(__file__).resolve().parents[1]


def resolve(registry, *sets, profile="smoke", config_file=None, **flags):
    return resolve_runs(build_raw_config(profile, config_file, sets, flags), registry)


def cli(*args: str):
    return CliRunner().invoke(main, list(args), terminal_width=200)


def one_sentence(msg: str) -> None:
    """A user-facing error: one line, no traceback, ending like a sentence."""
    assert "\n" not in msg.strip(), msg
    assert "Traceback" not in msg, msg
    assert msg.strip().endswith((".", "?")), msg


# ---------------------------------------------------------------- out-of-range and wrong types ---

BAD_SETS = [
    # (--set item, method, words the message must contain)
    ("ways=0", "random", ["config.ways", ">= 2", "0"]),
    ("ways=1", "random", ["config.ways", ">= 2"]),
    ("ways=-3", "random", ["config.ways", "-3"]),
    ("queries=0", "random", ["config.queries", ">= 1"]),
    ("shots=[0]", "random", ["config.shots", ">= 1"]),
    ("shots=[1,-5]", "random", ["config.shots", "-5"]),
    ("shots=[]", "random", ["config.shots", "at least one"]),
    ("seeds=[-1]", "random", ["config.seeds", ">= 0"]),
    ("budget=-5", "random", ["config.budget", ">= 0"]),
    ("budget=1e400", "random", ["config.budget"]),
    ("workers=0", "random", ["config.workers", ">= 1"]),
    ("ways=abc", "random", ["config.ways", "integer", "abc"]),
    ("ways=2.5", "random", ["config.ways", "integer"]),
    ("ways=1e400", "random", ["config.ways", "integer"]),
    ("ways=[5]", "random", ["config.ways"]),
    ("shots=x", "random", ["config.shots", "integer"]),
    ("train.meta_iterations=-1", "maml_oracle", ["train.meta_iterations", ">= 0", "-1"]),
    ("train.meta_batch_size=0", "maml_oracle", ["train.meta_batch_size", ">= 1"]),
    ("train.meta_lr=0", "maml_oracle", ["train.meta_lr", "> 0"]),
    ("train.meta_lr=-1e-3", "maml_oracle", ["train.meta_lr", "> 0"]),
    ("train.meta_lr=.nan", "maml_oracle", ["train.meta_lr", "nan"]),
    ("train.val_every=0", "maml_oracle", ["train.val_every", ">= 1"]),
    ("train.val_episodes=0", "maml_oracle", ["train.val_episodes", ">= 1"]),
    ("train.log_every=-2", "maml_oracle", ["train.log_every", ">= 1"]),
    ("train.meta_iterations=ten", "maml_oracle", ["train.meta_iterations", "integer"]),
    ("train=5", "maml_oracle", ["'train' must be a mapping"]),
    ("eval.episodes=0", "random", ["eval.episodes", ">= 1"]),
    ("eval.steps=-1", "random", ["eval.steps", ">= 0"]),
    ("eval.lr=0", "random", ["eval.lr", "> 0"]),
    ("eval.seed=-7", "random", ["eval.seed", ">= 0"]),
    ("meta.inner_steps=-1", "maml_oracle", ["inner_steps", ">= 0", "-1"]),
    ("meta.inner_lr=0", "maml_oracle", ["inner_lr", "> 0"]),
    ("meta.first_order=maybe", "maml_oracle", ["first_order", "true or false"]),
    ("architecture.width=0", "maml_oracle", ["width", ">= 1"]),
    ("estimator.zo_forward.q=0", "bidf_mkd", ["zo_forward", "q", ">= 1", "0"]),
    ("estimator.zo_forward.q=-3", "bidf_mkd", ["q", "-3"]),
    ("estimator.zo_central.mu=0", "bidf_mkd_central", ["mu", "> 0"]),
    ("estimator.zo_forward.mu=-0.1", "bidf_mkd", ["mu", "> 0"]),
    ("recoverer.generator.iterations=0", "bidf_mkd", ["iterations", ">= 1"]),
    ("recoverer.generator.lr=0", "bidf_mkd", ["lr", "> 0"]),
    ("meta_learner.kd.temperature=0", "bidf_mkd", ["temperature", "> 0"]),
    ("method.per_class=0", "bidf_mkd", ["per_class", ">= 1"]),
    ("method.patience=0", "bidf_mkd", ["patience", ">= 1"]),
    ("replay.task_memory.remember=sometimes", "bidf_mkd", ["remember", "one of"]),
    ("method.replay=api_tasks[keep_agreement=120]", "bidf_mkd", ["api_tasks", "keep_agreement", "<= 100"]),
    ("method.replay=api_tasks[keep_agreement=80", "bidf_mkd", ["close the bracket"]),
    ("train.maml_oracel.meta_iterations=3", "random", ["maml_oracel", "Did you mean 'maml_oracle'"]),
    ("train.maml_oracle.early_stop=-1", "random", ["train.maml_oracle.early_stop", ">= 0"]),
    ("replay.task_memory.capacity_per_class=0", "bidf_mkd", ["capacity_per_class", ">= 1"]),
    ("scenario.apis_per_cell=0", "random", ["apis_per_cell", ">= 1"]),
    ("scenario.classes_per_api=1", "random", ["classes_per_api", ">= 2"]),
    ("scenario.api_epochs=0", "random", ["api_epochs", ">= 1"]),
    ("scenario.api_lr=-1", "random", ["api_lr", "> 0"]),
    ("scenario.output=json", "random", ["output", "one of"]),
    ("launcher.workers=0", "random", ["workers", ">= 1"]),
    # unknown keys and components: a "did you mean"
    ("trian.meta_iterations=3", "random", ["trian", "Did you mean 'train'"]),
    ("train.meta_iteration=3", "maml_oracle", ["meta_iteration", "Did you mean 'meta_iterations'"]),
    ("meta.inner_stepz=3", "maml_oracle", ["inner_stepz", "Did you mean 'inner_steps'"]),
    ("method.name=radnom", "random", ["radnom", "Did you mean 'random'"]),
    ("estimator.zo_forwad.q=3", "bidf_mkd", ["zo_forwad"]),
    # non-finite, huge and unbounded values
    ("train.meta_lr=.inf", "maml_oracle", ["train.meta_lr", "finite"]),
    ("eval.lr=.inf", "random", ["eval.lr", "finite"]),
    ("meta.inner_lr=.inf", "maml_oracle", ["inner_lr", "finite"]),
    ("budget=.inf", "random", ["config.budget", "finite"]),
    ("train.meta_iterations=1e99", "maml_oracle", ["train.meta_iterations", "1e99"]),
    ("train.meta_iterations=100000000000", "maml_oracle", ["train.meta_iterations", "<= 10000000"]),
    ("eval.episodes=1e12", "random", ["eval.episodes", "<="]),
    ("seeds=[18446744073709551616]", "random", ["config.seeds", "2^63-1"]),
    ("scenario.SS.label=[[[[[[[[[[1]]]]]]]]]]", "random", ["label", "string"]),
]


@pytest.mark.parametrize("item,method,words", BAD_SETS, ids=[b[0] for b in BAD_SETS])
def test_bad_value_is_one_clear_sentence(registry, item: str, method: str, words: list[str]) -> None:
    from dfml_bench.config import component_params

    with pytest.raises(ConfigError) as info:
        raw = build_raw_config("smoke", sets=[item], flags={"method": method})
        resolve_runs(raw, registry)
        component_params(raw, "launcher", registry)  # as the CLI validates the launcher's
        pytest.fail(f"{item} was accepted")
    msg = str(info.value)
    one_sentence(msg)
    for word in words:
        assert word in msg, (word, msg)


def test_integers_stay_integers_end_to_end(registry) -> None:
    from dfml_bench.config import run_id

    runs = resolve(registry, method="random", seeds=[2**53 + 1, 2**53])
    assert [r["seed"] for r in runs] == [2**53 + 1, 2**53] and len({run_id(r) for r in runs}) == 2
    runs = resolve(registry, "seeds=[9007199254740993]", "eval.seed='9007199254740993'", method="random")
    assert runs[0]["seed"] == 9007199254740993 and runs[0]["eval"]["seed"] == 9007199254740993
    res = cli("run", "-m", "random", "--profile", "smoke", "--seeds", str(2**64), "--results", "unused")
    assert res.exit_code == 2 and "seeds" in res.output and "Traceback" not in res.output, res.output


def test_yaml_bombs_deep_nesting_and_tags_are_one_bounded_sentence(registry, tmp_path: Path) -> None:
    cases = {"bomb": (ALIAS_BOMB + "scenario: {SS: {label: *h}}\n", "YAML aliases"),
             "leaves": ("a: &a [" + ", ".join(["1"] * 100) + "]\nb: &b [" + ", ".join(["*a"] * 100) + "]\n"
                        "scenario: {SS: {label: [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]}}\n", "YAML aliases"),
             "deep": ("train: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
             "tag": ("train: !!python/object:os.system {}\n", "tag 'tag:yaml.org,2002:python/object:os.system'"),
             "bytes": ("train: {meta_iterations: \x00}\n", "not valid YAML")}
    for name, (text, words) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text) if name != "bytes" else path.write_bytes(b"train: \xff\xfe\n")
        with pytest.raises(ConfigError) as info:
            resolve(registry, config_file=path, method="random")
        msg = str(info.value)
        one_sentence(msg)
        assert len(msg.replace(str(path), "")) <= MESSAGE_CHARS, (name, msg)
        assert str(path) in msg and (words in msg or name == "bytes"), (name, msg)
    with pytest.raises(ConfigError, match="not allowed"):
        resolve(registry, "train=!!python/object/apply:os.system [echo]", method="random")


def test_bound_message_names_key_value_and_range(registry) -> None:
    with pytest.raises(ConfigError, match=r"^estimator 'zo_forward'\.q must be >= 1, not -3; set it to an allowed "
                                          r"value \(default 100\)\.$"):
        resolve(registry, "estimator.zo_forward.q=-3", method="bidf_mkd")


def test_bounds_in_a_config_file_and_the_list_output(registry, tmp_path: Path) -> None:
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("meta_learner: {maml: {inner_lr: -0.5}}\n")
    with pytest.raises(ConfigError, match="inner_lr must be > 0, not -0.5"):
        resolve(registry, config_file=cfg, method="maml_oracle")
    from dfml_bench.params import describe
    from dfml_plugins.estimators.zeroth_order import ZOParams

    q = next(p for p in describe(ZOParams) if p.name == "q")
    assert (q.min, q.range_text()) == (1, ">= 1")


@pytest.mark.parametrize("profile", ["smoke", "quick", "long", "paper"])
def test_shipped_profiles_satisfy_every_bound(registry, profile: str) -> None:
    from dfml_bench.config import component_params

    methods = ",".join(sorted(registry.names("method")))
    for scenario in ("SS", "SH", "MH"):
        assert resolve(registry, profile=profile, method=methods, scenario=scenario)
    raw = build_raw_config(profile, flags={"method": "random"})
    component_params(raw, "launcher", registry)


def test_shots_larger_than_the_class_images_is_a_data_error() -> None:
    from dfml_bench.data import EpisodeSampler, ImageSplit, Normalizer

    split = ImageSplit(torch.zeros(10 * 6, 1, 8, 8, dtype=torch.uint8), torch.arange(10).repeat_interleave(6),
                       [str(i) for i in range(10)])
    EpisodeSampler(split, 5, 1, 5, 0, Normalizer((0.5,), (0.5,), torch.device("cpu")))  # 6 images: fits
    with pytest.raises(DataError, match=r"5-way 50-shot 5-query episodes need 5 classes with at least 55 images"):
        EpisodeSampler(split, 5, 50, 5, 0, Normalizer((0.5,), (0.5,), torch.device("cpu")))


# ------------------------------------------------------------------------------ malformed YAML ---

BAD_YAML = {
    "syntax": "train: {meta_iterations: 3\nways: [",
    "tab": "train:\n\tmeta_iterations: 3\n",
    "list": "- 1\n- 2\n",
    "scalar": "just a string\n",
}


@pytest.mark.parametrize("kind", sorted(BAD_YAML))
@pytest.mark.parametrize("flag", ["--config", "--profile", "--scenario"])
def test_malformed_yaml_is_one_line_without_traceback(tmp_path: Path, kind: str, flag: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_YAML[kind])
    args = ["run", "-m", "random", "--results", str(tmp_path / "res")]
    args += [flag, str(path)] + ([] if flag == "--profile" else ["--profile", "smoke"])
    res = cli(*args)
    assert res.exit_code == 2, res.output
    err = res.output.strip()
    assert err.startswith("error: ") and str(path) in err.replace("\n", ""), err
    assert "not valid YAML" in err or "must hold a mapping" in err, err
    assert "Traceback" not in err and not (tmp_path / "res").exists()


def test_missing_config_file_and_unknown_component(tmp_path: Path) -> None:
    res = cli("run", "-m", "random", "--profile", "smoke", "--config", str(tmp_path / "nope.yaml"))
    assert res.exit_code == 2 and "cannot read config file" in res.output, res.output
    res = cli("run", "-m", "radnom", "--profile", "smoke", "--results", str(tmp_path / "res"))
    assert res.exit_code == 2 and "Did you mean 'random'" in res.output, res.output
    res = cli("run", "-m", "bidf_mkd", "--profile", "smoke", "--set", "estimator.zo_forward.q=0",
              "--results", str(tmp_path / "res"))
    assert res.exit_code == 2 and "q must be >= 1, not 0" in res.output and "Traceback" not in res.output
    res = cli("run", "-m", "random", "--profile", "smoke", "--shots", "1,x")
    assert res.exit_code == 2 and "--shots takes integers" in res.output, res.output


# ------------------------------------------------------------------------------ dataset roots ---

def test_missing_and_malformed_dataset_roots(tmp_path: Path) -> None:
    from dfml_plugins.datasets.real import dataset as real
    from dfml_plugins.datasets.real import CifarFSParams, CUBParams, MiniImageNetParams

    for build, params in ((real.build_cifar_fs, CifarFSParams()), (real.build_mini_imagenet, MiniImageNetParams()),
                          (real.build_cub, CUBParams())):
        for root in (None, tmp_path / "nowhere"):
            with pytest.raises(DataError) as info:
                build(params, root, tmp_path / "cache")
            one_sentence(str(info.value))
    base = tmp_path / "data" / "cifar-100-python"
    base.mkdir(parents=True)
    for name in ("meta", "train", "test"):
        (base / name).write_bytes(b"\x80\x04not a pickle at all")
    with pytest.raises(DataError, match="cannot read .* as a CIFAR-100 pickle"):
        real.build_cifar_fs(CifarFSParams(), tmp_path / "data", tmp_path / "cache")


# ------------------------------------------------------------------- crafted pickles (item 5) ---

class _Payload:
    """Unpickling this runs `open(marker, 'w')`: a stand-in for arbitrary code execution."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_torch_file(path: Path, marker: Path, wrap: dict | None = None) -> None:
    obj = dict(wrap or {})
    obj["payload"] = _Payload(marker)
    torch.save(obj, path)  # a real torch zip file whose data.pkl holds the payload


def test_payload_runs_without_weights_only(tmp_path: Path) -> None:
    """Sanity check of the fixture: the payload does execute under a plain (unsafe) load."""
    marker = tmp_path / "pwned"
    _evil_torch_file(tmp_path / "x.pt", marker)
    torch.load(tmp_path / "x.pt", weights_only=False)
    assert marker.exists()


def _smoke_run(registry, tmp_path: Path):
    from dfml_bench.runner import Environment, run_path

    resolved = resolve(registry, "train.meta_iterations=2", "train.val_every=1", method="maml_oracle")[0]
    env = Environment(tmp_path / "results", device="cpu", pool_dir=tmp_path / "pools")
    path = run_path(env, resolved)
    path.mkdir(parents=True)
    return resolved, env, path


@pytest.mark.parametrize("kind", ["payload", "truncated", "garbage", "wrong_layout"])
def test_crafted_or_corrupt_checkpoint_is_refused(registry, tmp_path: Path, kind: str) -> None:
    from dfml_bench import store
    from dfml_bench.runner import execute_run

    resolved, env, path = _smoke_run(registry, tmp_path)
    ckpt = path / store.CHECKPOINT_FILE
    marker = tmp_path / "pwned"
    if kind == "payload":
        _evil_torch_file(ckpt, marker, {"model": {}, "iteration": 1})
    elif kind == "truncated":
        buf = io.BytesIO()
        torch.save({"model": {"w": torch.zeros(100)}}, buf)
        ckpt.write_bytes(buf.getvalue()[:200])
    elif kind == "garbage":
        ckpt.write_bytes(os.urandom(512))
    else:
        torch.save({"model": {"nope": torch.zeros(1)}, "iteration": 1}, ckpt)
    (path / store.METRICS_FILE).write_text('{"iteration": 0}\n')
    with pytest.raises(StoreError) as info:
        execute_run(resolved, registry, env)
    msg = str(info.value)
    one_sentence(msg)
    assert str(ckpt) in msg and "delete it to restart this run" in msg, msg
    assert not marker.exists(), "the checkpoint's payload ran"
    assert ckpt.exists() and (path / store.METRICS_FILE).read_text() == '{"iteration": 0}\n'  # nothing lost


def test_crafted_checkpoint_through_the_cli_is_recorded_not_run(tmp_path: Path) -> None:
    from dfml_bench import store

    results = tmp_path / "res"
    args = ["run", "-m", "maml_oracle", "--profile", "smoke", "--device", "cpu", "--results", str(results),
            "--pool-dir", str(tmp_path / "pools"), "--seeds", "0,1", "--set", "train.meta_iterations=2",
            "--set", "train.val_every=1", "--no-progress"]
    assert cli(*args).exit_code == 0
    done, target = sorted((results / "runs").iterdir())  # seed 0, seed 1
    before = (done / store.RESULT_FILE).read_text()
    # Seed 1 "was interrupted": no result, and a payload where the runner looks for its checkpoint.
    (target / store.RESULT_FILE).unlink()
    metrics = (target / store.METRICS_FILE).read_text()
    marker = tmp_path / "pwned"
    _evil_torch_file(target / store.CHECKPOINT_FILE, marker, {"iteration": 1})
    res = cli(*args)
    assert res.exit_code == 1, res.output
    assert "cannot be loaded" in res.output and "Traceback" not in res.output and "already done" in res.output
    error = json.loads((target / store.ERROR_FILE).read_text())
    assert "delete it to restart this run" in error["error"] and str(target / store.CHECKPOINT_FILE) in error["error"]
    assert not marker.exists()
    assert (done / store.RESULT_FILE).read_text() == before  # the other run's result is untouched
    assert (target / store.METRICS_FILE).read_text() == metrics  # and the refused run's metrics too
    # The fix the message names works: delete the checkpoint and re-run.
    (target / store.CHECKPOINT_FILE).unlink()
    assert cli(*args).exit_code == 0 and (target / store.RESULT_FILE).exists()


def _fake_pool(root: Path, api_file_writer) -> Path:
    import hashlib

    root.mkdir(parents=True)
    api = root / "api_000.pt"
    api_file_writer(api)
    manifest = {"apis": [{"api_id": 0, "file": api.name, "sha256": hashlib.sha256(api.read_bytes()).hexdigest(),
                          "dataset": "d", "architecture": "conv4", "arch_params": {"width": 4}, "classes": [0, 1],
                          "class_names": ["a", "b"], "input_size": 32, "mean": [0.5], "std": [0.5]}]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return api


def test_tampered_pool_api_file_is_refused(registry, tmp_path: Path) -> None:
    from dfml_bench.pool import APIPool, PoolError

    marker = tmp_path / "pwned"
    # 1. Payload swapped in, manifest checksum rewritten to match: the weights-only load refuses it.
    root = tmp_path / "pool1"
    api = _fake_pool(root, lambda p: _evil_torch_file(p, marker))
    with pytest.raises(PoolError) as info:
        APIPool(root, registry, torch.device("cpu")).load_module(0)
    msg = str(info.value)
    one_sentence(msg)
    assert str(api) in msg and f"delete '{root}'" in msg
    # 2. Payload swapped in, manifest untouched: the checksum refuses it before any load.
    root = tmp_path / "pool2"
    api = _fake_pool(root, lambda p: torch.save({"w": torch.zeros(1)}, p))
    _evil_torch_file(api, marker)
    with pytest.raises(PoolError, match="does not match its checksum"):
        APIPool(root, registry, torch.device("cpu")).load_module(0)
    # 3. A truncated manifest.
    (root / "manifest.json").write_text('{"apis": [')
    with pytest.raises(PoolError, match="missing or unreadable"):
        APIPool(root, registry, torch.device("cpu"))
    assert not marker.exists()


def test_crafted_cifar_pickle_is_refused(tmp_path: Path) -> None:
    from dfml_plugins.datasets.real import dataset as real
    from dfml_plugins.datasets.real import CifarFSParams

    marker = tmp_path / "pwned"
    base = tmp_path / "data" / "cifar-100-python"
    base.mkdir(parents=True)
    for name in ("meta", "train", "test"):
        (base / name).write_bytes(pickle.dumps({"fine_label_names": _Payload(marker)}))
    with pytest.raises(DataError, match="refusing to load global"):
        real.build_cifar_fs(CifarFSParams(), tmp_path / "data", tmp_path / "cache")
    assert not marker.exists()


UNSAFE = [
    (re.compile(r"\bpickle\.loads?\("), "pickle.load(s)"),
    (re.compile(r"\b(?:c?Pickle|_pickle|dill|cloudpickle|joblib|marshal|shelve)\.loads?\(|\bshelve\.open\("),
     "an unsafe deserialiser"),
    (re.compile(r"\byaml\.(?:load|load_all|unsafe_load|full_load)\("), "yaml.load without SafeLoader"),
    (re.compile(r"\bnp\.load\([^)]*allow_pickle\s*=\s*True"), "np.load(allow_pickle=True)"),
]


def _calls(text: str, name: str) -> list[str]:
    """The argument text of each `name(` call (balanced parentheses)."""
    out = []
    for m in re.finditer(re.escape(name) + r"\(", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(text[m.end():i - 1])
    return out


def test_no_unsafe_loading_in_the_source_tree() -> None:
    files = sorted((ROOT / "dfml_bench").rglob("*.py")) + sorted((ROOT / "plugins").rglob("*.py"))
    assert len(files) > 20
    problems = []
    for path in files:
        text = path.read_text()
        rel = path.relative_to(ROOT)
        for pattern, what in UNSAFE:
            for m in pattern.finditer(text):
                problems.append(f"{rel}:{text[:m.start()].count(chr(10)) + 1}: {what}")
        for args in _calls(text, "torch.load"):
            if not re.search(r"weights_only\s*=\s*True", args):
                problems.append(f"{rel}: torch.load({args.strip()[:40]}...) without weights_only=True")
        for args in _calls(text, "yaml.load"):
            if "SafeLoader" not in args:
                problems.append(f"{rel}: yaml.load without SafeLoader")
        if re.search(r"\bpickle\.Unpickler\b", text) and "def find_class" not in text:
            problems.append(f"{rel}: a pickle.Unpickler without a restricting find_class")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------- read-only / full results dir ---

def test_unwritable_results_file_keeps_what_was_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dfml_bench import store

    target = tmp_path / "result.json"
    store.atomic_write_json(target, {"accuracy": 50.0})

    def no_space(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StoreError) as info:
        store.atomic_write_json(target, {"accuracy": 99.0})
    one_sentence(str(info.value))
    assert "No space left on device" in str(info.value) and str(target) in str(info.value)
    assert json.loads(target.read_text()) == {"accuracy": 50.0}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary file left behind
    monkeypatch.undo()

    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(StoreError, match="Permission denied.*make its directory writable"):
        store.atomic_write_json(target, {"accuracy": 99.0})
    monkeypatch.setattr("builtins.open", read_only)
    with pytest.raises(StoreError, match="cannot write"):
        store.append_jsonl(tmp_path / "metrics.jsonl", {"x": 1})
    assert json.loads(target.read_text()) == {"accuracy": 50.0}


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_results_directory_through_the_cli(tmp_path: Path) -> None:
    results = tmp_path / "res"
    results.mkdir()
    results.chmod(0o555)
    try:
        res = cli("run", "-m", "random", "--profile", "smoke", "--device", "cpu", "--results", str(results),
                  "--pool-dir", str(tmp_path / "pools"), "--no-progress")
    finally:
        results.chmod(0o755)
    assert res.exit_code == 2 and "Permission denied" in res.output and "writable" in res.output, res.output
    assert list(results.iterdir()) == []
    assert "Traceback" not in res.output


def test_read_only_run_directory_as_root_too(registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root ignores permissions, so simulate EACCES on the run directory's creation."""
    from dfml_bench.runner import execute_run

    resolved, env, path = _smoke_run(registry, tmp_path)
    path.rmdir()
    real_mkdir = Path.mkdir

    def denied(self, *a, **k):
        if self == path:
            raise PermissionError(13, "Permission denied")
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(StoreError, match="cannot create run directory .*Permission denied.*writable"):
        execute_run(resolved, registry, env)


# ------------------------------------------------------------------- property-based validation ---

KNOWN_KEYS = ["ways", "shots", "queries", "seeds", "budget", "workers", "device", "profile", "data_root",
              "loggers", "train", "eval", "method", "scenario", "architecture", "meta_learner", "meta", "model",
              "estimator", "recoverer", "replay", "launcher", "name", "meta_iterations", "meta_batch_size",
              "meta_lr", "episodes", "steps", "lr", "seed", "inner_steps", "inner_lr", "first_order", "q", "mu",
              "width", "maml", "kd", "zo_forward", "bidf_mkd", "SS", "MH", "random", "maml_oracle",
              "apis_per_cell", "datasets", "architectures", "per_class", "early_stop", "output", "conv4"]
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(min_size=1, max_size=8), st.text(min_size=300, max_size=400))
huge_ints = st.one_of(st.integers(-10**40, 10**40), st.sampled_from([2**53 + 1, 2**63 - 1, 2**63, 2**64, -2**63 - 1,
                                                                     10**99]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), huge_ints,
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([".inf", "-.inf", ".nan", "1e99",
                                                                                     "1e400", "9007199254740993"]),
                    st.text(max_size=10), st.text(min_size=250, max_size=400),
                    st.sampled_from(["random", "maml_oracle", "bidf_mkd", "SS", "MH", "maml",
                                     "conv4", "zo_forward", "1,5", "[1, 2]", "{a: 1}"]))


def _nest(value, depth: int):
    for _ in range(depth):
        value = [value]
    return value


values = st.one_of(
    st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                  st.dictionaries(keys, inner, max_size=3)), max_leaves=8),
    st.builds(_nest, scalars, st.integers(5, 60)))  # nested structures, deeper than any setting
configs = st.dictionaries(keys, values, max_size=5)
# YAML documents whose aliases expand a few lines into millions of values (a "billion laughs")
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh"))
MESSAGE_CHARS = 300  # the longest error a fuzzed config may give (paths excepted)
FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _valid_or_config_error(fn, path: Path | None = None) -> None:
    """`fn()` resolves runs whose every setting is sound, or raises one bounded sentence."""
    try:
        runs = fn()
    except DfmlError as exc:  # ConfigError, or PluginError for an unknown component: a clear sentence either way
        msg = str(exc).replace(str(path), "") if path is not None else str(exc)
        assert len(msg) <= MESSAGE_CHARS and "\n" not in msg, msg
        return
    for run in runs or ():
        _assert_sound(run)


def _assert_sound(value, where: str = "run") -> None:
    """No float where an integer belongs, nothing non-finite, no integer beyond 64 bits."""
    if isinstance(value, dict):
        for k, v in value.items():
            _assert_sound(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for v in value:
            _assert_sound(v, where)
    elif isinstance(value, float):
        assert math.isfinite(value), (where, value)
    elif isinstance(value, int) and not isinstance(value, bool):
        assert abs(value) < 2**63, (where, value)
    if where.endswith((".seed", ".shots", ".ways", ".queries", ".meta_iterations", ".episodes", ".steps")):
        assert isinstance(value, int) and not isinstance(value, bool), (where, value)


@pytest.fixture(scope="module")
def reg():
    from dfml_bench.plugins import load_registry

    return load_registry(strict=True)


@FUZZ
@given(path=st.lists(keys, min_size=1, max_size=3), value=values,
       text=st.one_of(st.none(), st.text(max_size=12)), method=st.sampled_from(["random", "bidf_mkd", None]))
def test_fuzz_set_items(reg, path: list[str], value, text: str | None, method: str | None) -> None:
    raw_value = text if text is not None else yaml.safe_dump(value, default_flow_style=True).strip()
    item = ".".join(path) + "=" + raw_value.replace("\n", " ")
    _valid_or_config_error(lambda: resolve(reg, item, method=method))
    _valid_or_config_error(lambda: resolve(reg, item, method=method, seeds=[2**53 + 1, 2**53]))


@FUZZ
@given(data=configs, method=st.sampled_from(["random", "maml_oracle", "bidf_mkd"]))
def test_fuzz_config_files(reg, data: dict, method: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cfg.yaml"
        path.write_text(yaml.safe_dump(data))
        _valid_or_config_error(lambda: resolve(reg, config_file=path, method=method), path)
        # the same document with an alias bomb nested under one of its keys
        key = next(iter(data), "scenario")
        path.write_text(ALIAS_BOMB + yaml.safe_dump({key: {"SS": {"label": "*h"}}}).replace("'*h'", "*h"))
        _valid_or_config_error(lambda: resolve(reg, config_file=path, method=method), path)


@FUZZ
@given(data=configs)
def test_fuzz_raw_config_dicts(reg, data: dict) -> None:
    """Straight into resolve_runs, bypassing the loaders' own checks."""
    from dfml_bench.config import deep_merge

    def go():
        raw = deep_merge(build_raw_config("smoke", flags={"method": "bidf_mkd"}), data)
        return resolve_runs(raw, reg)

    _valid_or_config_error(go)


# ------------------------------------------------------- tampered run directories, diverged runs ---

def _interrupted_run(registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int):
    """A smoke maml_oracle run that checkpointed, then "crashed" while writing its result."""
    from dfml_bench import store
    from dfml_bench.runner import Environment, execute_run, run_path

    resolved = resolve(registry, "train.meta_iterations=2", "train.val_every=1", "eval.episodes=2",
                       method="maml_oracle", seeds=[seed])[0]
    env = Environment(tmp_path / "results", device="cpu", pool_dir=tmp_path / "pools")
    real = store.atomic_write_json

    def crash(path, obj):
        if path.name == store.RESULT_FILE:
            raise KeyboardInterrupt
        real(path, obj)

    monkeypatch.setattr(store, "atomic_write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        execute_run(resolved, registry, env)
    monkeypatch.setattr(store, "atomic_write_json", real)
    path = run_path(env, resolved)
    assert (path / store.CHECKPOINT_FILE).exists() and not (path / store.RESULT_FILE).exists()
    return resolved, env, path


def test_a_checkpoint_copied_from_another_run_is_refused(registry, tmp_path: Path, monkeypatch) -> None:
    import shutil

    from dfml_bench import store
    from dfml_bench.config import run_id
    from dfml_bench.runner import execute_run

    a, _, a_path = _interrupted_run(registry, tmp_path, monkeypatch, seed=0)
    b, env, b_path = _interrupted_run(registry, tmp_path, monkeypatch, seed=1)
    shutil.copy(a_path / store.CHECKPOINT_FILE, b_path / store.CHECKPOINT_FILE)
    metrics = (b_path / store.METRICS_FILE).read_bytes()
    with pytest.raises(StoreError) as info:
        execute_run(b, registry, env)
    msg = str(info.value)
    one_sentence(msg)
    assert f"belongs to run {run_id(a)}, not to this run {run_id(b)}" in msg and "delete it" in msg, msg
    assert (b_path / store.METRICS_FILE).read_bytes() == metrics  # nothing rewound by a foreign checkpoint
    (b_path / store.CHECKPOINT_FILE).unlink()
    assert execute_run(b, registry, env)["seed"] == 1


def test_logs_are_cut_at_line_boundaries_only(tmp_path: Path) -> None:
    from dfml_bench import store

    (tmp_path / "metrics.jsonl").write_text('{"iteration": 0}\n{"iteration": 1}\n{"iteration": 2}\n')
    (tmp_path / "metrics.csv").write_text("iteration\n0\n1\n")
    store.rewind_logs(tmp_path, {"metrics.jsonl": len('{"iteration": 0}\n{"itera'), "metrics.csv": 3})
    assert (tmp_path / "metrics.jsonl").read_text() == '{"iteration": 0}\n'
    assert (tmp_path / "metrics.csv").read_text() == ""


NON_FINITE = """
from dfml_bench import hookimpl
from dfml_bench.interfaces import Method
import torch

class NanLoss(Method):
    def train_step(self, it):
        return {"loss": float("nan") if it == 1 else 1.0}

class NanWeights(Method):
    def train_step(self, it):
        with torch.no_grad():
            next(self.context.model.parameters()).fill_(float("inf"))
        return {}

@hookimpl
def register_methods(register):
    register("nan_loss", NanLoss, access="none", uses=("architecture",))
    register("nan_weights", NanWeights, access="none", uses=("architecture",))
"""


@pytest.mark.parametrize("method, words", [("nan_loss", "'loss' became nan at meta-iteration 1"),
                                           ("nan_weights", "weights hold NaN or infinite values")])
def test_a_run_whose_training_goes_non_finite_is_a_failure_not_a_result(fake_plugin, tmp_path: Path,
                                                                        method: str, words: str) -> None:
    from dfml_bench import store

    fake_plugin("nonfinite", NON_FINITE)
    results = tmp_path / "res"
    res = cli("run", "-m", method, "--profile", "smoke", "--device", "cpu", "--results", str(results),
              "--pool-dir", str(tmp_path / "pools"), "--set", "train.meta_iterations=3", "--set", "train.val_every=2",
              "--no-progress")
    assert res.exit_code == 1, res.output
    (path,) = (results / "runs").iterdir()
    assert not (path / store.RESULT_FILE).exists()
    error = json.loads((path / store.ERROR_FILE).read_text())["error"]
    one_sentence(error)
    assert words in error and "training diverged" in error, error
    res = cli("compare", str(results))
    assert res.exit_code == 0 and "FAILED" in res.output, res.output


def test_malformed_results_and_logs_name_their_file(tmp_path: Path) -> None:
    from dfml_bench import store
    from dfml_bench.plots import val_curve

    results = tmp_path / "res"
    args = ["run", "-m", "random", "--profile", "smoke", "--device", "cpu", "--results", str(results),
            "--pool-dir", str(tmp_path / "pools"), "--no-progress"]
    assert cli(*args).exit_code == 0
    path = next((results / "runs").iterdir())
    result = json.loads((path / store.RESULT_FILE).read_text())
    (path / store.METRICS_FILE).write_bytes(b'{"iteration": 0, "val_acc": 20.0, "queries": 0}\n\xff\xfe\x80\n')
    assert val_curve(path) == [(0, 0.0, 20.0)]
    for bad in ({**result, "accuracy": "high"}, [result], {**result, "accuracy": float("nan")}):
        (path / store.RESULT_FILE).write_text(json.dumps(bad))
        for command in (["compare", str(results)], args):
            res = cli(*command)
            msg = res.output.strip()
            assert res.exit_code == 2 and str(path / store.RESULT_FILE) in msg.replace("\n", ""), msg
            assert "malformed" in msg and "unexpected" not in msg and "Traceback" not in msg, msg
    (path / store.RESULT_FILE).write_bytes(b"\xff\xfe{")
    res = cli("compare", str(results))
    assert res.exit_code == 2 and "unreadable" in res.output and "unexpected" not in res.output, res.output
    # a CUDA record without the IEEE float32 stamp (made with TensorFloat-32) is refused, never tabled or skipped
    for cuda in ({**result, "device": "cuda:0"}, {**result, "device": "cuda", "float32": "tf32"}):
        (path / store.RESULT_FILE).write_text(json.dumps(cuda))
        for command in (["compare", str(results)], args):
            res = cli(*command)
            msg = res.output.strip().replace("\n", "")
            assert res.exit_code == 2 and "IEEE float32" in msg and "delete that run directory" in msg, msg
            assert "Traceback" not in msg, msg
    (path / store.RESULT_FILE).write_text(json.dumps({**result, "device": "cuda:0", "float32": "ieee"}))
    assert cli("compare", str(results)).exit_code == 0


def test_a_cache_path_that_is_a_file_and_an_episode_that_does_not_fit_are_named(tmp_path: Path,
                                                                                monkeypatch) -> None:
    cache = tmp_path / "cache-file"
    cache.write_text("")
    base = ["run", "-m", "random", "--profile", "smoke", "--device", "cpu", "--results", str(tmp_path / "res"),
            "--pool-dir", str(tmp_path / "pools"), "--no-progress"]
    with monkeypatch.context() as m:
        m.setenv("DFML_BENCH_CACHE", str(cache))
        res = cli(*base)
    assert "DFML_BENCH_CACHE" in res.output and "not a directory" in res.output, res.output
    assert "NotADirectoryError" not in res.output
    res = cli(*base, "--shots", "500")
    assert res.exit_code == 1 and re.search(r"dataset 'glyphs-\w+', meta-(train|val) split: .*this split has 0",
                                            res.output), res.output
    res = cli(*base, "--set", "scenario.SS.datasets=[]")
    assert "lists no dataset" in res.output and "SH or MH" not in res.output, res.output


# ---------------------------------------------- run identity: the data read, and only what is read ---

def test_other_data_under_data_root_never_reuses_a_finished_run(registry, tmp_path: Path) -> None:
    from dfml_bench.config import run_id

    def data_root(name: str, content: bytes) -> Path:
        base = tmp_path / name / "cifar-100-python"
        base.mkdir(parents=True)
        for f in ("meta", "train", "test"):
            (base / f).write_bytes(content)
        return tmp_path / name

    a, b = data_root("a", b"one"), data_root("b", b"other images")

    def rid(root: Path | None, scenario: str = "SS") -> str:
        (run,) = resolve(registry, "scenario.SS.datasets=[cifar_fs]", "shots=[1]", method="random",
                         scenario=scenario, data_root=None if root is None else str(root))
        return run_id(run)

    first = rid(a)
    assert rid(a) == first and rid(b) != first  # other images, same layout: another run
    (a / "cifar-100-python" / "train").write_bytes(b"one, rewritten")
    assert rid(a) != first  # the same directory with a file replaced: another run too
    # the embedded glyphs read no --data-root: their runs (and ids) do not depend on it
    glyphs = [resolve(registry, "shots=[1]", method="bidf_mkd", data_root=root)[0] for root in (None, str(a))]
    assert "data" not in glyphs[0] and run_id(glyphs[0]) == run_id(glyphs[1])


def test_a_method_that_reads_no_pool_runs_once_for_scenarios_that_share_their_data(registry, tmp_path: Path) -> None:
    import hashlib

    from dfml_bench import store
    from dfml_bench.config import run_id

    by = {s: resolve(registry, "shots=[1]", method="random,bidf_mkd", scenario=s) for s in ("SS", "SH", "MH")}
    ids = {s: {r["method"]["name"]: run_id(r) for r in runs} for s, runs in by.items()}
    assert ids["SS"]["random"] == ids["SH"]["random"] != ids["MH"]["random"]  # same data, other data
    assert len({ids[s]["bidf_mkd"] for s in ids}) == 3  # a method that reads the pool: one run per scenario
    for run in (by["SS"][1], by["SH"][1]):  # and its id is the plain content hash it always was
        assert "reads" not in run
        blob = json.dumps(run, sort_keys=True, separators=(",", ":"), default=str).encode()
        assert run_id(run) == hashlib.sha256(blob).hexdigest()[:16]

    results = tmp_path / "res"
    base = ["run", "-m", "random", "--profile", "smoke", "--device", "cpu", "--results", str(results),
            "--pool-dir", str(tmp_path / "pools"), "--shots", "1", "--no-progress"]
    assert cli(*base, "--scenario", "SS").exit_code == 0
    res = cli(*base, "--scenario", "SH")
    assert res.exit_code == 0 and "already done" in res.output and "1 run(s), 0 to run" in res.output, res.output
    ss, sh = (next((results / "runs").glob(f"random-{s}-*")) for s in ("SS", "SH"))
    got = {p: json.loads((p / store.RESULT_FILE).read_text()) for p in (ss, sh)}
    assert got[sh]["reused_from"] == ss.name and "reused_from" not in got[ss]
    assert (got[ss]["scenario"], got[sh]["scenario"]) == ("SS", "SH")
    assert got[sh]["accuracy"] == got[ss]["accuracy"] and got[sh]["run_id"] == got[ss]["run_id"]
    assert not (sh / store.METRICS_FILE).exists()  # nothing ran in SH's directory
    table = cli("compare", str(results), "--format", "csv").output
    assert "SS" in table and "SH" in table and table.count(f"{got[ss]['accuracy']:.2f}") >= 2, table


NO_POOL_LIAR = """
from dfml_bench import hookimpl
from dfml_bench.interfaces import Method

class Liar(Method):
    def __init__(self, params, context):
        super().__init__(params, context)
        context.apis()

    def train_step(self, it):
        return {}

@hookimpl
def register_methods(register):
    register("liar", Liar, access="black", uses=("architecture",), reads=("data",))
    register("confused", Liar, access="black", uses=("architecture",), reads=("pool", "weights"))
"""


def test_a_method_that_declares_no_pool_cannot_open_it(fake_plugin, tmp_path: Path) -> None:
    from dfml_bench.errors import AccessError
    from dfml_bench.plugins import load_registry
    from dfml_bench.runner import Environment, execute_run

    fake_plugin("liar", NO_POOL_LIAR)
    registry = load_registry(strict=True)
    run = resolve(registry, "shots=[1]", method="liar")[0]
    with pytest.raises(AccessError, match="declares reads=\\('data',\\) but opened the API pool"):
        execute_run(run, registry, Environment(tmp_path, device="cpu", pool_dir=tmp_path / "pools"))
    with pytest.raises(ConfigError, match="method 'confused' declares reads="):
        resolve(registry, method="confused")


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_a_bad_checkpoint_interval_is_one_sentence_before_any_run(tmp_path: Path, monkeypatch, value: str) -> None:
    monkeypatch.setenv("DFML_BENCH_CHECKPOINT_MINUTES", value)
    for command in (["run", "-m", "random"], ["tune", "-m", "bidf_mkd", "--trials", "1"]):
        res = cli(*command, "--profile", "smoke", "--results", str(tmp_path))
        assert res.exit_code == 2 and "Traceback" not in res.output
        assert f"DFML_BENCH_CHECKPOINT_MINUTES='{value}' is not a number of minutes >= 0" in res.output
        assert not (tmp_path / "runs").exists() and not (tmp_path / "tune").exists()
