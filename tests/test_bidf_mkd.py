"""BiDf-MKD components and methods on the smoke profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfml_bench.config import build_raw_config, resolve_runs
from dfml_bench.data import Task
from dfml_bench.runner import Environment, execute_run
from dfml_plugins.meta_learners.kd import KDParams
from dfml_plugins.meta_learners.kd.learner import BilevelKD, kd_loss
from dfml_plugins.recoverers.generator.recoverer import augment
from dfml_plugins.replay.api_tasks import ApiTasksParams
from dfml_plugins.replay.api_tasks.replay import ApiTasks
from dfml_plugins.replay.task_memory import TaskMemoryParams
from dfml_plugins.replay.task_memory.replay import TaskMemory

VARIANTS = ["bidf_mkd", "bidf_mkd_fo", "bidf_mkd_wb", "bidf_mkd_no_boundary", "bidf_mkd_no_replay",
            "bidf_mkd_central", "bidf_mkd_noise", "bidf_mkd_plus", "bidf_mkd_plus_noise"]


def run(registry, tmp_path: Path, method: str, *sets: str) -> dict:
    resolved = resolve_runs(build_raw_config("smoke", sets=sets, flags={"method": method}), registry)[0]
    env = Environment(tmp_path / "results", device="cpu", pool_dir=tmp_path / "pools", workers=1)
    return execute_run(resolved, registry, env)


@pytest.mark.parametrize("method", VARIANTS)
def test_every_variant_runs_end_to_end(registry, tmp_path, method) -> None:
    result = run(registry, tmp_path, method)
    assert result["method"] == method and 0 <= result["accuracy"] <= 100
    assert result["queries"] > 0 and result["access"] == ("white" if method == "bidf_mkd_wb" else "black")
    (run_dir,) = (tmp_path / "results" / "runs").iterdir()
    assert (run_dir / "recovered.png").exists()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["api_task"] == 1.0 and "agreement" in records[0] and "recovery_loss" in records[0]


def test_queries_follow_the_estimator_formula(registry, tmp_path) -> None:
    # no replay: every meta-iteration is an API one. Per task: 2 recoveries x (2 generator steps x
    # 10 images x (q + 1 = 5)) + the kept batch once (its outputs are the cached teacher) = 2 x 110.
    result = run(registry, tmp_path, "bidf_mkd_no_replay")
    assert result["queries"] == 4 * 2 * 2 * 110  # iterations x meta-batch x ...


def test_white_box_variant_needs_white_access(registry, tmp_path) -> None:
    from dfml_bench.errors import AccessError

    with pytest.raises(AccessError, match="needs white-box APIs"):
        run(registry, tmp_path, "bidf_mkd_wb", "scenario.access=black")
    assert run(registry, tmp_path, "bidf_mkd", "scenario.access=black")["access"] == "black"


def test_kd_loss_is_kl_teacher_to_student_batch_mean() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g)
    teacher = torch.randn(6, 5, generator=g).softmax(1)
    manual = (teacher * (teacher.log() - logits.log_softmax(1))).sum(1).mean()
    assert torch.allclose(kd_loss(logits, teacher), manual, atol=1e-6)
    assert kd_loss(teacher.log(), teacher).abs() < 1e-6


def test_kd_inner_loop_moves_toward_the_teacher_and_first_order_drops_second_order_terms() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(1)
    xs, xq = torch.randn(6, 4, generator=g), torch.randn(9, 4, generator=g)
    ts, tq = torch.randn(6, 3, generator=g).softmax(1), torch.randn(9, 3, generator=g).softmax(1)
    task = Task(xs, ts.argmax(1), xq, tq.argmax(1), ts, tq)
    second = BilevelKD(KDParams(inner_steps=3, inner_lr=0.5))
    fast = second.adapt(model, params, xs, ts, create_graph=False)
    before = kd_loss(model(xs), ts).item()
    after = kd_loss(torch.func.functional_call(model, fast, (xs,)), ts).item()
    assert after < before  # the inner KD loop is not inert (reference defect 1)
    g2 = torch.autograd.grad(second.task_outcome(model, params, task).loss, list(params.values()))
    first = BilevelKD(KDParams(inner_steps=3, inner_lr=0.5, first_order=True))
    g1 = torch.autograd.grad(first.task_outcome(model, params, task).loss, list(params.values()))
    assert max((a - b).abs().max().item() for a, b in zip(g1, g2)) > 1e-5


def test_task_memory_is_a_per_class_ring_and_mixes_domains() -> None:
    mem = TaskMemory(TaskMemoryParams(capacity_per_class=4))
    for step in range(3):
        mem.add(torch.full((6, 3, 8, 8), step / 10), torch.tensor([0, 0, 0, 1, 1, 1]), domain=0)
    mem.add(torch.rand(6, 3, 12, 12), torch.tensor([7, 7, 8, 8, 9, 9]), domain=2)
    assert mem.images[0].shape == (4, 3, 8, 8) and mem.images[0].dtype == torch.uint8
    assert mem.images[0][-1].float().mean().item() == pytest.approx(0.2 * 255, abs=1)  # newest kept
    assert mem.ready(5) and not mem.ready(6)
    draw = mem.draw(5, 1, 2, torch.Generator().manual_seed(0), class_order=lambda: pytest.fail("not an API task"))
    assert len(draw.support) == 5 and all(s.shape[0] == 1 for s in draw.support)
    assert sorted(draw.domains) == [0, 0, 2, 2, 2]


def test_augmentation_is_drawn_per_sample() -> None:
    x = torch.rand(1, 3, 16, 16).repeat(64, 1, 1, 1)
    out = augment(x, pad=4, flip=True, generator=torch.Generator().manual_seed(0))
    distinct = {tuple(o.flatten()[:40].tolist()) for o in out}
    assert len(distinct) > 10  # one augmentation per batch would give a single distinct image
    assert out.shape == x.shape


def test_generator_width_defaults_to_the_protocol_and_scales_the_hidden_layers() -> None:
    from dfml_plugins.recoverers.generator import GeneratorRecovererParams
    from dfml_plugins.recoverers.generator.recoverer import Generator

    assert GeneratorRecovererParams().width == 128  # docs/protocol.md section 5
    wide, narrow = Generator(16, 32, 128), Generator(16, 32, 32)
    z = torch.randn(4, 16)
    assert wide(z).shape == narrow(z).shape == (4, 3, 32, 32)
    assert [m.out_channels for m in narrow.modules() if isinstance(m, nn.Conv2d)] == [32, 16, 3]
    n_wide = sum(p.numel() for p in wide.parameters())
    assert sum(p.numel() for p in narrow.parameters()) < n_wide / 4


def _api_task(support, query=None, classes=(7, 9), domain=0):
    from dfml_bench.interfaces import ApiTask

    query = query if query is not None else support
    probs = lambda found: torch.softmax(found.scores.float(), 1) if found.scores.dim() == 2 else found.scores
    return ApiTask(classes, domain, support, probs(support), query, probs(query))


def _stored(memory: TaskMemory) -> dict[int, list[float]]:
    return {c: [round(v, 1) for v in (x.float() / 255).flatten(1)[:, 0].tolist()] for c, x in memory.images.items()}


def test_task_memory_keeps_all_recovered_images_or_those_the_api_agrees_on() -> None:
    from dfml_bench.interfaces import RecoveredSet

    labels = torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [2.0, 0.0]])  # the API agrees on images 0 and 2
    images = torch.stack([torch.full((3, 4, 4), v) for v in (0.1, 0.2, 0.3, 0.4)])
    found = RecoveredSet(images, labels, 0.0, 50.0, scores)
    assert found.agreed().tolist() == [True, False, True, False]
    stored = {}
    for remember in ("all", "agreed"):
        memory = TaskMemory(TaskMemoryParams(remember=remember))
        memory.observe(_api_task(found, classes=(7, 9), domain=1))  # API outputs 0, 1 are global classes 7, 9
        stored[remember] = _stored(memory)
        assert set(memory.domain.values()) == {1}
    # the support set and then the query set (here the same images) enter under global class ids
    assert stored["all"] == {7: [0.1, 0.2, 0.1, 0.2], 9: [0.3, 0.4, 0.3, 0.4]}
    assert stored["agreed"] == {7: [0.1, 0.1], 9: [0.3, 0.3]}
    # label-only APIs return predicted positions instead of scores; no agreement stores nothing
    memory = TaskMemory(TaskMemoryParams(remember="agreed"))
    memory.observe(_api_task(RecoveredSet(images, labels, 0.0, 0.0, torch.tensor([1, 1, 0, 0]))))
    assert memory.num_classes() == 0 and not memory.ready(1)


def test_api_tasks_keep_recognised_tasks_and_replay_them_in_the_drawn_class_order() -> None:
    from dfml_bench.interfaces import RecoveredSet

    ways, per = 3, 4
    labels = torch.arange(ways).repeat_interleave(per)
    images = torch.rand(ways * per, 3, 8, 8)
    scores = torch.randn(ways * per, ways)
    strategy = ApiTasks(ApiTasksParams(keep=2, keep_agreement=50, replay_support="shots"))
    assert not strategy.ready(ways)
    strategy.observe(_api_task(RecoveredSet(images, labels, 0.0, 40.0, scores), classes=(0, 1, 2)))
    assert not strategy.ready(ways)  # 40 % of its support recognised: below keep_agreement, not kept
    for agreement in (50.0, 90.0, 100.0):
        strategy.observe(_api_task(RecoveredSet(images, labels, 0.0, agreement, scores), classes=(0, 1, 2)))
    assert len(strategy.kept) == 2  # the most recent `keep`
    order = torch.tensor([2, 0, 1])
    g = torch.Generator().manual_seed(0)
    draws = [strategy.draw(ways, 2, 5, g, class_order=lambda: order) for _ in range(4)]
    kept = strategy.kept[0]
    for draw in draws:
        (support,), (query,) = draw.support, draw.query
        assert support.dtype == torch.uint8 and support.shape[0] == ways * 2 and torch.equal(query, kept.query)
        assert torch.equal(draw.query_targets, kept.query_targets[:, order])  # output j <- API class order[j]
        rows = [int(torch.nonzero((kept.support == x).flatten(1).all(1)).flatten()[0]) for x in support]
        assert torch.equal(kept.support_labels[rows].bincount(minlength=ways), torch.full((ways,), 2))  # K per class
        assert torch.equal(draw.support_targets, kept.support_targets[rows][:, order])
    assert len({tuple(d.support[0].flatten()[:50].tolist()) for d in draws}) > 1  # drawn afresh per replay
    everything = ApiTasks(ApiTasksParams(keep_agreement=0, replay_support="all"))
    everything.observe(_api_task(RecoveredSet(images, labels, 0.0, 0.0, scores)))
    assert everything.draw(ways, 1, 5, g, class_order=lambda: torch.arange(ways)).support[0].shape[0] == ways * per


def test_tv_prior_smooths_the_recovered_images_at_no_query_cost() -> None:
    from types import SimpleNamespace

    from dfml_bench.interfaces import Estimate
    from dfml_plugins.recoverers.generator import GeneratorRecovererParams
    from dfml_plugins.recoverers.generator.recoverer import GeneratorRecoverer, total_variation

    assert total_variation(torch.full((2, 3, 8, 8), 0.3)).tolist() == [0.0, 0.0]
    checker = (torch.arange(8)[:, None] + torch.arange(8)).remainder(2).float().expand(1, 3, 8, 8)
    assert total_variation(checker).item() == pytest.approx(2.0)  # every adjacent pair differs by 1, both ways

    class FlatEstimator:  # an API loss with no gradient: only the prior can move the generator
        calls = 0

        def estimate(self, api, x, loss_fn) -> Estimate:
            FlatEstimator.calls += 1
            return Estimate(torch.zeros(len(x)), torch.zeros_like(x))

    api = SimpleNamespace(num_classes=2, output="logits", query=lambda x: torch.zeros(len(x), 2))

    def recovered_tv(tv: float) -> float:
        params = GeneratorRecovererParams(iterations=20, width=8, lr=0.05, tv=tv)
        found = GeneratorRecoverer(params).recover(api, FlatEstimator(), 4, 16, torch.Generator().manual_seed(0))
        return total_variation(found.images).mean().item()

    plain = recovered_tv(0.0)
    assert FlatEstimator.calls == 20  # one estimate (its queries) per iteration, with or without the prior
    assert recovered_tv(5.0) < 0.5 * plain
    assert FlatEstimator.calls == 40


def test_api_task_replay_distils_kept_tasks_again_without_queries(registry, tmp_path) -> None:
    result = run(registry, tmp_path, "bidf_mkd_plus_no_filter", "replay.api_tasks.keep=1", "train.meta_iterations=6")
    (run_dir,) = (tmp_path / "results" / "runs").iterdir()
    records = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "api_task" in r]
    kinds = [r["api_task"] for r in records]
    assert kinds[0] == 1.0 and 0.0 in kinds  # replay iterations happen once an API task is kept
    for before, r in zip(records, records[1:]):
        if r["api_task"] == 0.0:  # a replayed API task is distilled from its cached outputs
            assert r["queries"] == before["queries"] and 0 <= r["train_acc"] <= 100
    assert result["queries"] == records[-1]["queries"]


@pytest.mark.parametrize("strategy", [TaskMemory(TaskMemoryParams()), ApiTasks(ApiTasksParams(keep_agreement=0))])
def test_replay_state_round_trips_through_a_weights_only_checkpoint(strategy) -> None:
    import io

    from dfml_bench.interfaces import RecoveredSet

    g = torch.Generator().manual_seed(0)
    for api in range(2):  # two 5-way API tasks with 3 images per class
        labels = torch.arange(5).repeat_interleave(3)
        found = RecoveredSet(torch.rand(15, 3, 8, 8, generator=g), labels, 0.0, 100.0, torch.randn(15, 5, generator=g))
        strategy.observe(_api_task(found, classes=tuple(range(5 * api, 5 * api + 5))))
    buffer = io.BytesIO()
    torch.save(strategy.state_dict(), buffer)
    buffer.seek(0)
    fresh = type(strategy)(strategy.p)
    assert not fresh.ready(5) and strategy.ready(5)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    order = lambda: torch.tensor([4, 3, 2, 1, 0])  # noqa: E731
    a = strategy.draw(5, 1, 2, torch.Generator().manual_seed(3), order)
    b = fresh.draw(5, 1, 2, torch.Generator().manual_seed(3), order)
    assert a.domains == b.domains and all(torch.equal(x, y) for x, y in zip(a.support + a.query, b.support + b.query))
    assert (a.support_targets is None) == isinstance(strategy, TaskMemory)
    if a.support_targets is not None:
        assert torch.equal(a.support_targets, b.support_targets) and torch.equal(a.query_targets, b.query_targets)


@pytest.mark.parametrize("permute", [False, True])
def test_permute_maps_api_classes_to_outputs_in_a_task_order_and_the_boundary_student_back(
        registry, tmp_path, monkeypatch, permute) -> None:
    from torch.func import functional_call

    from dfml_plugins.methods.bidf_mkd import method as bidf_mkd
    from dfml_plugins.recoverers.generator.recoverer import GeneratorRecoverer

    order = torch.tensor([2, 0, 1, 4, 3])
    hosts, teachers, inner_targets, fast_params, students = [], [], [], [], []
    if permute:
        monkeypatch.setattr(bidf_mkd.BidfMkd, "_class_order", lambda self: order)
    task, probs, adapt, recover = (bidf_mkd.BidfMkd._api_task, bidf_mkd.api_probs, BilevelKD.adapt,
                                   GeneratorRecoverer.recover)
    monkeypatch.setattr(bidf_mkd.BidfMkd, "_api_task", lambda self, *a: hosts.append(self) or task(self, *a))
    monkeypatch.setattr(bidf_mkd, "api_probs", lambda *a: teachers.append(probs(*a)) or teachers[-1])

    def spy_adapt(self, model, params, x, y, **kw):
        inner_targets.append(y)
        fast_params.append(adapt(self, model, params, x, y, **kw))
        return fast_params[-1]

    def spy_recover(self, api, estimator, per_class, size, generator, student=None):
        found = recover(self, api, estimator, per_class, size, generator, student)
        if student is not None:
            students.append((fast_params[-1], found.images, student(found.images)))
        return found

    monkeypatch.setattr(BilevelKD, "adapt", spy_adapt)
    monkeypatch.setattr(GeneratorRecoverer, "recover", spy_recover)
    run(registry, tmp_path, "bidf_mkd", f"method.bidf_mkd.permute={permute}", "method.bidf_mkd.boundary_start=0",
        "train.meta_iterations=1")
    expected = order if permute else torch.arange(5)
    assert inner_targets and students
    for y, teacher in zip(inner_targets, teachers[::2]):  # support teachers: every API task's first api_probs
        assert torch.equal(y, teacher[:, expected])
    host = hosts[0]
    for fast, images, api_order_logits in students:  # the boundary term sees the student in the API's order
        with torch.no_grad():
            logits = functional_call(host.context.model, {k: v.detach() for k, v in fast.items()},
                                     (host.context.normalizers[0].from_unit(images),))
        assert torch.allclose(api_order_logits[:, expected], logits, atol=1e-5)


def test_inference_weights_are_detached_equal_and_channels_last_for_cpu_convolutions() -> None:
    from dfml_plugins.methods.bidf_mkd.method import inference_weights

    weights = {"conv.weight": torch.randn(4, 3, 3, 3, requires_grad=True), "conv.bias": torch.randn(4, requires_grad=True)}
    cpu = inference_weights(weights, torch.device("cpu"))
    assert not any(v.requires_grad for v in cpu.values())
    assert all(torch.equal(cpu[k], weights[k]) for k in weights)
    assert cpu["conv.weight"].is_contiguous(memory_format=torch.channels_last)
    assert not weights["conv.weight"].is_contiguous(memory_format=torch.channels_last)
    other = inference_weights(weights, torch.device("cuda"))  # layout left to the device's own kernels
    assert other["conv.weight"].is_contiguous() and not other["conv.weight"].requires_grad


# -- variants: names say what runs ---------------------------------------------------------------

def _resolved(registry, method: str, *sets: str, profile: str = "smoke") -> dict:
    return resolve_runs(build_raw_config(profile, sets=sets, flags={"method": method}), registry)[0]


@pytest.mark.parametrize("profile", ["smoke", "quick", "long", "paper"])
def test_bidf_mkd_is_the_protocols_method_in_every_profile(registry, profile) -> None:
    run = _resolved(registry, "bidf_mkd", profile=profile)
    params = run["method"]["params"]
    assert params["permute"] is False and params["boundary"] and not params["first_order"]
    assert (params["estimator"], params["recoverer"], params["api_learner"], params["replay_learner"]) == \
        ("zo_forward", "generator", "kd", "maml")
    assert params["replay"] == "task_memory" and run["components"]["replay"]["task_memory"]["remember"] == "all"
    plus = _resolved(registry, "bidf_mkd_plus", profile=profile)
    assert plus["method"]["params"] == {**params, "permute": True, "replay": "api_tasks"}  # the same sizes


def test_variants_take_their_bases_configured_values_except_what_they_change(registry) -> None:
    def params(method: str, *sets: str) -> dict:
        return _resolved(registry, method, *sets)["method"]["params"]

    for name in ("bidf_mkd_fo", "bidf_mkd_proto", "bidf_mkd_plus", "bidf_mkd_plus_no_filter"):
        assert params(name)["per_class"] == 2 and params(name)["patience"] == 1  # the profile's bidf_mkd block
        assert params(name, "method.bidf_mkd.per_class=3")["per_class"] == 3
    assert params("bidf_mkd_fo", "method.bidf_mkd.first_order=false")["first_order"] is True  # its own change
    assert params("bidf_mkd_fo", "method.bidf_mkd.replay=none")["replay"] == "none"
    assert params("bidf_mkd_plus", "method.bidf_mkd.replay=none")["replay"] == "api_tasks"
    # bidf_mkd_plus's values reach its ablations, not the paper method
    assert params("bidf_mkd_plus_no_filter", "method.bidf_mkd_plus.per_class=4")["per_class"] == 4
    assert params("bidf_mkd_plus_no_filter", "method.bidf_mkd_plus.permute=false")["permute"] is False
    assert params("bidf_mkd", "method.bidf_mkd_plus.per_class=4")["per_class"] == 2
    # a variant's own block wins, and concerns it alone
    assert params("bidf_mkd_fo", "method.bidf_mkd_fo.per_class=5", "method.bidf_mkd.per_class=3")["per_class"] == 5
    assert params("bidf_mkd_wb", "method.bidf_mkd_fo.per_class=5")["per_class"] == 2
    assert params("purer_fo", "method.purer.per_class=7")["per_class"] == 7


def test_a_variant_changes_a_replay_setting_for_itself_only(registry) -> None:
    sets = ("replay.api_tasks.keep=5",)
    own = _resolved(registry, "bidf_mkd_plus_no_filter", *sets)["components"]["replay"]
    assert own == {"api_tasks[keep_agreement=0]": {"keep": 5, "keep_agreement": 0.0, "replay_support": "shots"}}
    shared = _resolved(registry, "bidf_mkd_plus", *sets)["components"]["replay"]
    assert shared == {"api_tasks": {"keep": 5, "keep_agreement": 80.0, "replay_support": "shots"}}


def test_a_variant_runs_exactly_as_its_base_with_its_changes_set(registry, tmp_path) -> None:
    """bidf_mkd_plus_no_filter is bidf_mkd with two settings changed, draw for draw."""
    fast = ("train.meta_iterations=6",)
    variant = run(registry, tmp_path / "variant", "bidf_mkd_plus_no_filter", *fast)
    base = run(registry, tmp_path / "base", "bidf_mkd", *fast, "method.bidf_mkd.permute=true",
               "method.bidf_mkd.replay=api_tasks[keep_agreement=0]")

    def records(root: Path) -> list[dict]:
        (run_dir,) = (root / "results" / "runs").iterdir()
        return [{k: v for k, v in json.loads(line).items() if k != "wall_time"}
                for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    assert records(tmp_path / "variant") == records(tmp_path / "base")
    assert 0.0 in [r.get("api_task") for r in records(tmp_path / "base")]  # replay of kept API tasks ran
    assert variant["accuracy"] == base["accuracy"] and variant["queries"] == base["queries"]


def test_a_run_replaying_kept_api_tasks_resumes_to_the_uninterrupted_result(registry, tmp_path, monkeypatch) -> None:
    """The api_tasks strategy's kept tasks go into the checkpoint: a run that dies after it resumes exactly."""
    from dfml_bench import runner
    from dfml_bench.evaluation import evaluate

    sets = ("train.meta_iterations=8", "train.val_every=3", "train.log_every=1")
    whole = run(registry, tmp_path / "whole", "bidf_mkd_plus_no_filter", *sets)
    calls = []

    def dies_at_the_third_validation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # iteration 6; the checkpoint holds iterations 0-3 and the tasks kept by then
            raise RuntimeError("killed")
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(runner, "evaluate", dies_at_the_third_validation)
    with pytest.raises(RuntimeError, match="killed"):
        run(registry, tmp_path / "cut", "bidf_mkd_plus_no_filter", *sets)
    monkeypatch.setattr(runner, "evaluate", evaluate)
    resumed = run(registry, tmp_path / "cut", "bidf_mkd_plus_no_filter", *sets)

    def records(root: Path) -> list[dict]:
        (run_dir,) = (root / "results" / "runs").iterdir()
        return [{k: v for k, v in json.loads(line).items() if k != "wall_time"}
                for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    kinds = [r["api_task"] for r in records(tmp_path / "whole") if "api_task" in r]
    assert 0.0 in kinds[4:]  # replay after the checkpoint draws from the restored kept tasks
    assert records(tmp_path / "cut") == records(tmp_path / "whole")
    assert resumed["accuracy"] == whole["accuracy"] and resumed["queries"] == whole["queries"]


def _two_datasets() -> list:
    from dfml_bench.data import FewShotDataset, ImageSplit

    def dataset(name: str, classes: int, first: int) -> FewShotDataset:
        # image value = first + class id, so every image says which global class it belongs to
        labels = torch.arange(classes).repeat_interleave(4)
        images = (first + labels).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 8, 8).contiguous()
        return FewShotDataset(name, {"train": ImageSplit(images, labels, [f"c{i}" for i in range(classes)])}, 8)

    return [dataset("a", 5, 0), dataset("b", 6, 5)]


def test_class_images_draw_real_meta_train_images_of_a_global_class() -> None:
    from dfml_bench.data import ClassImages
    from dfml_bench.errors import DataError

    images = ClassImages(_two_datasets())
    g = torch.Generator().manual_seed(0)
    for global_class in (0, 4, 5, 10):
        drawn = images.sample(global_class, 3, g)
        assert drawn.shape == (3, 3, 8, 8) and (drawn == global_class).all()
    assert len({tuple(images.sample(7, 4, g)[:, 0, 0, 0].tolist())}) == 1  # 4 of 4: each image once
    assert (images.sample(7, 9, g) == 7).all()                             # more than the class has: repeats
    with pytest.raises(DataError, match="not a meta-train class"):
        images.sample(11, 1, g)


def test_real_images_recoverer_returns_the_api_classes_labelled_in_its_order_and_queries_once() -> None:
    from types import SimpleNamespace

    from dfml_bench.data import ClassImages
    from dfml_plugins.recoverers.real_images.recoverer import RealImagesRecoverer

    asked = []

    def query(x: torch.Tensor) -> torch.Tensor:  # recognises classes 9 and 2 by their pixel value
        asked.append(len(x))
        value = (x[:, 0, 0, 0] * 255).round()
        return torch.stack([(value == 9).float(), (value == 2).float(), torch.zeros(len(x))], 1)

    api = SimpleNamespace(classes=(9, 2, 6), query=query)
    recoverer = RealImagesRecoverer()
    recoverer.use_real_images(ClassImages(_two_datasets()))
    got = recoverer.recover(api, None, 2, 16, torch.Generator().manual_seed(0))
    assert got.images.shape == (6, 3, 16, 16) and asked == [6]
    assert got.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert (got.images[:, 0, 0, 0] * 255).round().tolist() == [9, 9, 2, 2, 6, 6]
    assert got.agreement == pytest.approx(100 * 4 / 6)  # the API misses class 6


@pytest.mark.parametrize("method", ["bidf_mkd_real", "bidf_mkd_plus_real"])
def test_real_images_probe_runs_as_an_oracle_and_is_refused_to_data_free_methods(registry, tmp_path, method) -> None:
    from dfml_bench.errors import AccessError

    result = run(registry, tmp_path, method)
    assert result["access"] == "real_data" and result["data_free"] is False and result["queries"] > 0
    (run_dir,) = (tmp_path / "results" / "runs").iterdir()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["api_task"] == 1.0 and 0 <= records[0]["agreement"] <= 100
    with pytest.raises(AccessError, match="registered as data-free"):
        run(registry, tmp_path / "free", "bidf_mkd", "method.bidf_mkd.recoverer=real_images")
