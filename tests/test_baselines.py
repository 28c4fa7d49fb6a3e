"""Baselines: PURER, kd, ProtoNet compositions, first-order variants, method metadata.

Most tests drive a method's `train_step` on a tiny in-memory pool (untrained 16 px conv4 APIs)
so that each checks its defining behaviour in seconds; one test runs PURER end to end on the
smoke profile and reads its row in `dfml-bench compare`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from dfml_bench.apis import APIInfo, QueryLedger, make_api
from dfml_bench.data import Normalizer, Task
from dfml_bench.errors import AccessError
from dfml_bench.images import to_uint8
from dfml_bench.interfaces import ACCESS_LEVELS, MethodContext, ScenarioData, TrainSettings
from dfml_bench.params import build_params
from dfml_bench.selection import parse_selection
from dfml_plugins.meta_learners.kd.learner import BilevelKD, kd_loss
from dfml_plugins.meta_learners.maml.learner import MAML
from dfml_plugins.meta_learners.protonet import ProtoNetParams
from dfml_plugins.meta_learners.protonet.learner import ProtoNet
from dfml_plugins.models.conv4.model import Conv4
from dfml_plugins.recoverers.deepinversion import DeepInversionParams
from dfml_plugins.recoverers.deepinversion.recoverer import BNStatistics, DeepInversionRecoverer

SIZE, WAYS = 16, 5
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _api_module(seed: int, batchnorm: bool = True) -> nn.Module:
    """An untrained conv4 API whose BN running statistics are those of a smooth reference batch."""
    torch.manual_seed(seed)
    if not batchnorm:
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * SIZE * SIZE, WAYS))
    m = Conv4(WAYS, width=8, image_size=SIZE, running_stats=True)
    ref = nn.functional.interpolate(torch.rand(32, 3, 4, 4, generator=torch.Generator().manual_seed(seed)),
                                    size=SIZE, mode="bilinear")
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = None  # running stats = this batch's
    with torch.no_grad():
        m.train()(((ref - 0.5) / 0.25))
    return m


class TinyPool:
    """The pool interface (len, info, api) over a few in-memory APIs with disjoint classes."""

    def __init__(self, n: int, batchnorm: bool = True):
        self.modules = [_api_module(i, batchnorm) for i in range(n)]
        self.infos = [APIInfo(f"api{i}", "tiny", "conv4", tuple(range(WAYS * i, WAYS * (i + 1))),
                              tuple("abcde"), SIZE) for i in range(n)]

    def __len__(self) -> int:
        return len(self.infos)

    def info(self, i: int) -> APIInfo:
        return self.infos[i]

    def api(self, i: int, ledger: QueryLedger, *, output: str = "logits", white_box: bool = False) -> Any:
        return make_api(self.modules[i], self.infos[i], MEAN, STD, ledger, output=output, white_box=white_box)


@dataclasses.dataclass
class _Dataset:
    name: str = "tiny"
    image_size: int = SIZE


def tiny_context(registry, access: str, overrides: dict[tuple[str, str], dict[str, Any]] | None = None,
                 apis: int = 2, batchnorm: bool = True, shots: int = 1, batch: int = 2) -> MethodContext:
    """A MethodContext over TinyPool; components are built from the smoke-sized `overrides`."""
    torch.manual_seed(0)
    model = Conv4(WAYS, width=8, image_size=SIZE)
    pool, ledger = TinyPool(apis, batchnorm), QueryLedger()
    overrides = overrides or {}

    def build_component(kind: str, name: str | None = None, over: dict | None = None) -> Any:
        name, inline = parse_selection(name or "")
        comp = registry.get(kind, name)
        params = build_params(comp.params, {**overrides.get((kind, name), {}), **inline, **(over or {})}, name)
        return comp.load()(params, 0) if kind == "estimator" else comp.load()(params)

    scenario = ScenarioData("tiny", [_Dataset()], pool_spec=None, access="white")
    ctx = MethodContext(model=model, device=torch.device("cpu"), ways=WAYS, shots=shots, queries=2, seed=0,
                        train=TrainSettings(4, batch, 1e-3, 2, 2, 1), scenario=scenario, access=access,
                        method_name="tiny", build_meta_learner=lambda: None, make_train_sampler=lambda i: None,
                        load_pool=lambda: pool, ledger=ledger, build_component=build_component,
                        normalizers=[Normalizer(MEAN, STD, torch.device("cpu"))], log=lambda msg: None)
    return ctx


SMALL = {("estimator", "zo_forward"): {"q": 2}, ("recoverer", "generator"): {"iterations": 1, "z_dim": 8, "width": 8},
         ("meta_learner", "maml"): {"inner_steps": 1}, ("meta_learner", "kd"): {"inner_steps": 1}}


def build_method(registry, name: str, access: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
    comp = registry.get("method", name)
    ctx = tiny_context(registry, access, SMALL, **kw)
    return comp.load()(build_params(comp.params, params or {}, name), ctx)


def bn_distance(api: Any, images: torch.Tensor) -> float:
    stats = BNStatistics(api.module)
    with stats, torch.no_grad():
        api.module((images - 0.5) / 0.25)  # the API's own preprocessing, without charging a query
    total = stats.pop()
    assert total is not None
    return total.item()


# -- PURER ------------------------------------------------------------------------------------

def test_purer_moves_its_images_bn_statistics_toward_the_api_running_stats(registry) -> None:
    purer = build_method(registry, "purer_fo", "white", {"per_class": 2, "curriculum": False}, apis=1, batch=1)
    # a tiny API's few BN layers make the protocol's 0.01 weight negligible next to CE: weight 1 here
    purer.recoverer.p = dataclasses.replace(purer.recoverer.p, bn=1.0, lr=0.1)
    api = purer.apis.get(0)
    purer.train_step(0)
    before = bn_distance(api, torch.sigmoid(purer.recoverer.banks["api0"].logits).detach())
    for it in range(1, 10):
        purer.train_step(it)
    after = bn_distance(api, torch.sigmoid(purer.recoverer.banks["api0"].logits).detach())
    assert after < 0.9 * before, (before, after)  # one persistent bank, one inversion step per task
    assert purer.apis.queries_used == 10 * 2 * WAYS * 2  # iterations x (step + query) x images


def test_purer_curriculum_gives_the_inversion_an_adapted_student_from_its_start(registry, monkeypatch) -> None:
    purer = build_method(registry, "purer", "white", {"per_class": 2, "curriculum_start": 1}, apis=1)
    seen: list[bool] = []
    real = purer.recoverer.recover

    def spy(api, est, per_class, size, gen, student=None):
        seen.append(student is not None)
        if student is not None:  # the student is the meta model adapted on these images: logits per image
            x = torch.rand(WAYS * per_class, 3, size, size)
            assert student(x).shape == (WAYS * per_class, WAYS)
        return real(api, est, per_class, size, gen, student)

    monkeypatch.setattr(purer.recoverer, "recover", spy)
    purer.train_step(0)
    purer.train_step(1)
    assert seen == [False, False, True, True]


@pytest.mark.parametrize("permute", [False, True])
def test_purer_permute_draws_each_episodes_class_to_output_map(registry, permute) -> None:
    purer = build_method(registry, "purer", "white", {"per_class": 4, "curriculum": False, "permute": permute},
                         apis=1)
    images = torch.arange(WAYS * 4, dtype=torch.float).view(-1, 1, 1, 1).expand(-1, 3, SIZE, SIZE) / 100
    norm = purer.context.normalizers[0]
    maps = set()
    for _ in range(8):
        task = purer._episode(images, norm)
        # each image's API class (its index // per_class) -> the label the episode gives it
        pixel = norm.mean[0, 0, 0, 0] + norm.std[0, 0, 0, 0] * task.support_x[:, 0, 0, 0]  # back to [0, 1]
        classes = pixel.mul(100).round().long() // 4
        label = dict(zip(classes.tolist(), task.support_y.tolist()))
        assert sorted(label.values()) == list(range(WAYS))  # a one-to-one map of the API's classes to outputs
        maps.add(tuple(label[c] for c in range(WAYS)))
    assert (maps == {tuple(range(WAYS))}) != permute  # fixed API order, or drawn per episode


def test_deepinversion_skips_bn_term_once_for_apis_without_batchnorm_and_refuses_black_box() -> None:
    pool, ledger = TinyPool(2, batchnorm=False), QueryLedger()
    rec = DeepInversionRecoverer(DeepInversionParams())
    notes: list[str] = []
    rec.log = notes.append
    g = torch.Generator().manual_seed(0)
    for i in (0, 1, 0):  # two APIs without BatchNorm, one visited twice: one note in all
        out = rec.recover(pool.api(i, ledger, white_box=True), None, 2, SIZE, g)
    assert len(notes) == 1 and "no BatchNorm" in notes[0] and out.images.shape == (10, 3, SIZE, SIZE)
    with pytest.raises(AccessError, match="WhiteBoxAPI"):
        rec.recover(pool.api(0, ledger), None, 2, SIZE, g)


def test_a_recoverer_built_for_a_run_writes_its_notes_to_the_run_log(registry) -> None:
    from types import SimpleNamespace

    from dfml_bench.runner import RunParts

    notes: list[str] = []
    parts = RunParts.__new__(RunParts)  # only what building a component reads
    parts.registry, parts.spec = registry, SimpleNamespace(seed=0)
    parts.env = SimpleNamespace(reporter=SimpleNamespace(log=notes.append))
    rec = parts._build("recoverer", "deepinversion", {})
    pool, g = TinyPool(1, batchnorm=False), torch.Generator().manual_seed(0)
    rec.recover(pool.api(0, QueryLedger(), white_box=True), None, 1, SIZE, g)
    assert len(notes) == 1 and "no BatchNorm" in notes[0]


def test_purer_state_round_trips_through_a_weights_only_checkpoint(registry, tmp_path) -> None:
    purer = build_method(registry, "purer", "white", {"per_class": 2}, apis=1)
    purer.train_step(0)
    torch.save(purer.state_dict(), tmp_path / "c.pt")
    other = build_method(registry, "purer", "white", {"per_class": 2}, apis=1)
    other.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True))
    assert torch.equal(other.recoverer.banks["api0"].logits, purer.recoverer.banks["api0"].logits)
    other.context.model.load_state_dict(purer.context.model.state_dict())
    assert other.train_step(1)["loss"] == purer.train_step(1)["loss"]  # the resumed run continues identically


# -- first-order variants ---------------------------------------------------------------------

@pytest.fixture
def create_graph_flags(monkeypatch) -> list[bool]:
    """Records, per torch.autograd.grad call, whether it built a graph (second order)."""
    flags: list[bool] = []
    real_grad = torch.autograd.grad

    def spy(*args, **kwargs):
        flags.append(bool(kwargs.get("create_graph", False)))
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    return flags


@pytest.mark.parametrize("name,access,params", [("purer", "white", {"per_class": 2}),
                                                ("bidf_mkd", "black", {"per_class": 1, "boundary": False})])
def test_first_order_variants_build_no_second_order_graph(registry, create_graph_flags, name, access,
                                                          params) -> None:
    flags = create_graph_flags
    for variant, expect_second in ((name, True), (f"{name}_fo", False)):
        flags.clear()
        build_method(registry, variant, access, params, apis=1).train_step(0)
        assert flags and any(flags) == expect_second, (variant, flags)


@pytest.mark.parametrize("replay", ["task_memory", "api_tasks[keep_agreement=0]"])
@pytest.mark.parametrize("first_order", [False, True])
def test_first_order_is_one_switch_for_api_and_replay_tasks(registry, create_graph_flags, monkeypatch, replay,
                                                            first_order) -> None:
    flags = create_graph_flags
    # the learners' own first_order says the opposite: the method's setting replaces it
    monkeypatch.setitem(SMALL, ("meta_learner", "maml"), {"inner_steps": 1, "first_order": not first_order})
    monkeypatch.setitem(SMALL, ("meta_learner", "kd"), {"inner_steps": 1, "first_order": not first_order})
    params = {"per_class": 2, "boundary": False, "replay": replay, "first_order": first_order}
    method = build_method(registry, "bidf_mkd", "black", params, apis=1)
    seen = {}
    for it in range(2):
        flags.clear()
        kind = method.train_step(it)["api_task"]
        seen[kind] = list(flags)
    assert set(seen) == {0.0, 1.0}, "expected one API and one replay meta-iteration"
    for kind in seen:
        assert seen[kind] and all(flag == (not first_order) for flag in seen[kind]), (kind, seen)


def test_keep_agreement_keeps_for_replay_only_api_tasks_whose_support_the_api_recognises(registry) -> None:
    method = build_method(registry, "bidf_mkd_plus", "black", {"per_class": 1, "boundary": False,
                                                               "replay": "api_tasks[keep_agreement=50]"}, apis=1)
    recover, calls = method.recoverer.recover, []

    def with_agreement(*args, **kwargs):  # support sets alternate between 100 % and 20 % agreement
        found = recover(*args, **kwargs)
        calls.append(found)
        support_call = (len(calls) - 1) % 2 == 0
        task = (len(calls) - 1) // 2
        return dataclasses.replace(found, agreement=(100.0 if task % 2 == 0 else 20.0) if support_call else 0.0)

    method.recoverer.recover = with_agreement
    method.train_step(0)  # one API meta-iteration: meta_batch_size tasks
    tasks, kept = len(calls) // 2, method.replay.kept
    assert tasks >= 2 and len(kept) == (tasks + 1) // 2  # the 100 % ones; query agreement is ignored
    kept_support = [calls[2 * t].images for t in range(0, tasks, 2)]
    assert all(torch.equal(k.support, to_uint8(x)) for k, x in zip(kept, kept_support))


@pytest.mark.parametrize("replay_support,shots", [("all", 1), ("shots", 1), ("shots", 2)])
def test_replay_support_shots_adapts_a_replayed_api_task_on_k_support_images_per_class(registry, replay_support,
                                                                                       shots) -> None:
    per_class = 3
    method = build_method(registry, "bidf_mkd_plus", "black",
                          {"per_class": per_class, "boundary": False,
                           "replay": f"api_tasks[keep_agreement=0,replay_support={replay_support}]"},
                          apis=1, shots=shots)
    replay_shots = shots if replay_support == "shots" else 0
    adapt, seen = method.api_learner.adapt, []

    def spy(model, params, x, targets, **kwargs):
        seen.append((x, targets))
        return adapt(model, params, x, targets, **kwargs)

    method.api_learner.adapt = spy
    assert method.train_step(0)["api_task"] == 1.0
    seen.clear()
    assert method.train_step(1)["api_task"] == 0.0
    ways = method.context.ways
    expected = ways * (replay_shots or per_class)
    assert len(seen) == method.context.train.meta_batch_size
    kept = method.replay.kept
    for x, targets in seen:
        assert x.shape[0] == targets.shape[0] == expected
        # every replayed support image is one of a kept task's, with that image's cached API outputs
        # (permuted by the task's class order): the rows' sorted values identify the image
        rows = {tuple(sorted(t.tolist())) for k in kept for t in k.support_targets}
        assert all(tuple(sorted(t.tolist())) in rows for t in targets)
    assert torch.equal(kept[0].support_labels.bincount(minlength=ways), torch.full((ways,), per_class))


# -- kd ---------------------------------------------------------------------------------------

def test_kd_distils_on_each_apis_classes_without_any_inner_loop(registry, monkeypatch) -> None:
    def no_inner_loop(*args, **kwargs):
        raise AssertionError("kd called a meta-learner's inner loop")

    for cls in (MAML, BilevelKD, ProtoNet):
        monkeypatch.setattr(cls, "adapt", no_inner_loop)
    kd = build_method(registry, "kd", "black", {"per_class": 1, "recover_every": 2})
    queries = []
    for it in range(3):
        kd.train_step(it)
        queries.append(kd.apis.queries_used)
    assert queries[0] > 0 and queries[1] == queries[0] and queries[2] > queries[1]  # kept sets cost nothing
    images, classes, probs, domain = kd.kept[-1]
    feats = kd.context.model.features(kd.context.normalizers[0].from_unit(images)).flatten(1)
    manual = kd_loss(kd.head(feats)[:, classes], probs)  # KL over that API's classes only
    assert torch.allclose(kd.distill_loss(images, classes, probs, domain), manual, atol=1e-5)
    assert classes.tolist() in ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9]) and kd.head.out_features == 10


# -- ProtoNet ---------------------------------------------------------------------------------

def _proto_task() -> tuple[Conv4, Task]:
    torch.manual_seed(0)
    model = Conv4(WAYS, width=8, image_size=SIZE)
    g = torch.Generator().manual_seed(1)
    task = Task(torch.randn(10, 3, SIZE, SIZE, generator=g), torch.arange(WAYS).repeat(2),
                torch.randn(15, 3, SIZE, SIZE, generator=g), torch.arange(WAYS).repeat(3))
    return model, task


def test_protonet_logits_are_negative_squared_distances_to_class_means() -> None:
    model, task = _proto_task()
    params = dict(model.named_parameters())
    feats = lambda x: model.features(x).flatten(1)  # noqa: E731 - conv4's head input
    means = torch.stack([feats(task.support_x)[task.support_y == c].mean(0) for c in range(WAYS)])
    expected = -torch.cdist(feats(task.query_x), means) ** 2
    learner = ProtoNet(ProtoNetParams())
    assert torch.allclose(learner.logits(model, params, task), expected, rtol=1e-4, atol=1e-3)
    # adapted fast weights make the model's own head the prototype classifier (up to a per-row constant)
    fast = learner.adapt(model, params, task.support_x, task.support_y, create_graph=True)
    head_logits = torch.func.functional_call(model, fast, (task.query_x,))
    assert torch.allclose(head_logits.softmax(1), expected.softmax(1), atol=1e-4)
    # KD-compatible: teacher probabilities weight the means, distances are the student's logits
    soft = torch.nn.functional.one_hot(task.support_y, WAYS).float()
    kd_task = dataclasses.replace(task, support_t=soft, query_t=expected.detach().softmax(1))
    assert learner.task_outcome(model, params, kd_task).loss.item() < 1e-4


def test_protonet_passes_the_meta_learner_conformance_check(registry) -> None:
    from dfml_bench.testing import check_meta_learner

    check_meta_learner("protonet", registry)


def test_proto_compositions_swap_the_meta_learner_by_config(registry) -> None:
    from dfml_bench.config import build_raw_config, resolve_runs

    def learners(method: str, *sets: str) -> dict:
        run = resolve_runs(build_raw_config("smoke", sets=sets, flags={"method": method}), registry)[0]
        return {k: v for k, v in run["method"]["params"].items() if "learner" in k}

    assert learners("bidf_mkd_proto") == {"api_learner": "protonet", "replay_learner": "protonet"}
    assert learners("maml_oracle_proto") == {"learner": "protonet"}
    assert learners("maml_oracle_proto", "method.maml_oracle_proto.learner=maml") == {"learner": "maml"}
    method = build_method(registry, "bidf_mkd_proto", "black", {"per_class": 1, "boundary": False})
    assert isinstance(method.api_learner, ProtoNet) and isinstance(method.replay_learner, ProtoNet)
    out = method.train_step(0)
    assert out["api_task"] == 1.0 and torch.isfinite(torch.tensor(out["loss"]))


# -- metadata ---------------------------------------------------------------------------------

def test_every_method_declares_access_data_freedom_and_query_use(registry) -> None:
    for comp in registry.components("method"):
        if comp.plugin != "builtin":
            continue
        assert comp.meta.get("access") in ACCESS_LEVELS, comp.name
        assert isinstance(comp.meta.get("data_free"), bool), comp.name
        assert isinstance(comp.meta.get("queries"), str) and comp.meta["queries"], comp.name
        assert comp.meta["data_free"] == (comp.meta["access"] != "real_data"), comp.name
    out = CliRunner().invoke(__import__("dfml_bench.cli", fromlist=["main"]).main, ["list", "method"],
                             env={"COLUMNS": "1000"})  # one line per row: no wrapping
    assert out.exit_code == 0, out.output
    line = next(r for r in out.output.splitlines() if r.startswith("│ purer "))
    assert "access=white" in line and "queries: per task" in line
    assert "data-free=NO" in next(r for r in out.output.splitlines() if r.startswith("│ maml_oracle_proto "))


def test_purer_end_to_end_on_smoke_and_its_compare_row_is_marked_white_box(registry, tmp_path: Path) -> None:
    from dfml_bench.cli import main
    from dfml_bench.config import build_raw_config, resolve_runs
    from dfml_bench.runner import Environment, execute_run

    fast = ("train.meta_iterations=2", "train.val_every=1", "train.val_episodes=1", "eval.episodes=2")
    resolved = resolve_runs(build_raw_config("smoke", sets=fast, flags={"method": "purer_fo"}), registry)[0]
    env = Environment(tmp_path / "results", device="cpu", pool_dir=tmp_path / "pools", workers=1)
    result = execute_run(resolved, registry, env)
    assert result["access"] == "white" and result["data_free"] and result["queries"] > 0
    md = CliRunner().invoke(main, ["compare", str(tmp_path / "results"), "--format", "md"])
    assert md.exit_code == 0 and "| purer_fo (white-box) |" in md.output, md.output
