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
from dfml_plugins.meta_learners.kd import BilevelKD, kd_loss
from dfml_plugins.params import KDParams, TaskMemoryParams
from dfml_plugins.recoverers.generator import augment
from dfml_plugins.replay.task_memory import TaskMemory

VARIANTS = ["bidf_mkd", "bidf_mkd_fo", "bidf_mkd_wb", "bidf_mkd_no_boundary", "bidf_mkd_no_replay",
            "bidf_mkd_central", "bidf_mkd_noise"]


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
    assert mem.can_sample(5) and not mem.can_sample(6)
    draw = mem.sample(5, 1, 2, torch.Generator().manual_seed(0))
    assert len(draw.support) == 5 and all(s.shape[0] == 1 for s in draw.support)
    assert sorted(draw.domains) == [0, 0, 2, 2, 2]


def test_augmentation_is_drawn_per_sample() -> None:
    x = torch.rand(1, 3, 16, 16).repeat(64, 1, 1, 1)
    out = augment(x, pad=4, flip=True, generator=torch.Generator().manual_seed(0))
    distinct = {tuple(o.flatten()[:40].tolist()) for o in out}
    assert len(distinct) > 10  # one augmentation per batch would give a single distinct image
    assert out.shape == x.shape


def test_generator_width_defaults_to_the_protocol_and_scales_the_hidden_layers() -> None:
    from dfml_plugins.params import GeneratorRecovererParams
    from dfml_plugins.recoverers.generator import Generator

    assert GeneratorRecovererParams().width == 128  # docs/protocol.md section 5
    wide, narrow = Generator(16, 32, 128), Generator(16, 32, 32)
    z = torch.randn(4, 16)
    assert wide(z).shape == narrow(z).shape == (4, 3, 32, 32)
    assert [m.out_channels for m in narrow.modules() if isinstance(m, nn.Conv2d)] == [32, 16, 3]
    n_wide = sum(p.numel() for p in wide.parameters())
    assert sum(p.numel() for p in narrow.parameters()) < n_wide / 4


class _FakeAPI:
    """Answers with fixed logits per image value; counts queries."""

    def __init__(self, answers: dict[float, int], ways: int = 2):
        self.answers, self.ways, self.queried = answers, ways, 0

    def query(self, x: torch.Tensor) -> torch.Tensor:
        self.queried += len(x)
        out = torch.zeros(len(x), self.ways)
        for n, img in enumerate(x):
            out[n, self.answers[round(img.flatten()[0].item(), 1)]] = 1.0
        return out


def _memory_host(remember: str, pool: list[tuple[tuple[int, ...], _FakeAPI | None]]):
    from types import SimpleNamespace

    from dfml_plugins.methods.bidf_mkd import BidfMkd

    apis = SimpleNamespace(info=lambda i: SimpleNamespace(classes=pool[i][0]), get=lambda i: pool[i][1])
    host = SimpleNamespace(params=SimpleNamespace(remember=remember), memory=TaskMemory(TaskMemoryParams()),
                           apis=apis, cpu_generator=torch.Generator().manual_seed(0),
                           knowers={c: [i for i, (cs, _) in enumerate(pool) if c in cs] for cs, _ in pool for c in cs})
    host._peers_agree = lambda *a: BidfMkd._peers_agree(host, *a)  # type: ignore[arg-type]
    return host, BidfMkd._remember


def _stored(host) -> dict[int, list[float]]:
    return {c: [round(v, 1) for v in (x.float() / 255).flatten(1)[:, 0].tolist()] for c, x in host.memory.images.items()}


def test_remember_filters_the_replay_memory_by_the_api_and_by_a_peer_api() -> None:
    from dfml_bench.interfaces import RecoveredSet

    labels = torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [2.0, 0.0]])  # the API agrees on images 0 and 2
    images = torch.stack([torch.full((3, 4, 4), v) for v in (0.1, 0.2, 0.3, 0.4)])
    found = RecoveredSet(images, labels, 0.0, 50.0, scores)
    assert found.agreed().tolist() == [True, False, True, False]
    # API 0 knows global classes 7 and 9; API 1 knows 9 (at output 1) and labels image 0.3 as class 5
    peer = _FakeAPI({0.1: 0, 0.2: 0, 0.3: 0, 0.4: 1})
    pool = [((7, 9), None), ((5, 9), peer)]
    stored = {}
    for remember in ("all", "agreed", "consensus"):
        host, remember_fn = _memory_host(remember, pool)
        remember_fn(host, found, 0, 0)
        stored[remember] = _stored(host)
    assert stored["all"] == {7: [0.1, 0.2], 9: [0.3, 0.4]}
    assert stored["agreed"] == {7: [0.1], 9: [0.3]}
    # class 7 has no other API: kept on agreement; class 9's agreed image is rejected by its peer
    assert stored["consensus"] == {7: [0.1]}
    assert peer.queried == 1  # only the agreed image of a class a peer knows was sent
    # label-only APIs return predicted positions instead of scores; no agreement stores nothing
    host, remember_fn = _memory_host("agreed", pool)
    remember_fn(host, RecoveredSet(images, labels, 0.0, 0.0, torch.tensor([1, 1, 0, 0])), 0, 0)
    assert host.memory.num_classes() == 0


def test_tv_prior_smooths_the_recovered_images_at_no_query_cost() -> None:
    from types import SimpleNamespace

    from dfml_bench.interfaces import Estimate
    from dfml_plugins.params import GeneratorRecovererParams
    from dfml_plugins.recoverers.generator import GeneratorRecoverer, total_variation

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
    result = run(registry, tmp_path, "bidf_mkd", "method.bidf_mkd.replay_tasks=api", "method.bidf_mkd.keep=1",
                 "train.meta_iterations=6")
    (run_dir,) = (tmp_path / "results" / "runs").iterdir()
    records = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "api_task" in r]
    kinds = [r["api_task"] for r in records]
    assert kinds[0] == 1.0 and 0.0 in kinds  # replay iterations happen once an API task is kept
    for before, r in zip(records, records[1:]):
        if r["api_task"] == 0.0:  # a replayed API task is distilled from its cached outputs
            assert r["queries"] == before["queries"] and 0 <= r["train_acc"] <= 100
    assert result["queries"] == records[-1]["queries"]


def test_no_replay_means_no_replay_of_kept_api_tasks_either(registry, tmp_path) -> None:
    run(registry, tmp_path, "bidf_mkd_no_replay", "method.bidf_mkd_no_replay.replay_tasks=api",
        "train.meta_iterations=3", "train.log_every=1")
    (run_dir,) = (tmp_path / "results" / "runs").iterdir()
    kinds = [r["api_task"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
             if "api_task" in r]
    assert kinds == [1.0, 1.0, 1.0]


def test_kept_api_tasks_survive_a_checkpoint() -> None:
    import io
    from collections import deque
    from types import SimpleNamespace

    from dfml_bench.images import to_uint8
    from dfml_plugins.methods.bidf_mkd import BidfMkd, KeptTask

    images = torch.rand(4, 3, 8, 8)
    assert (to_uint8(images).float() / 255 - images).abs().max() <= 0.5 / 255 + 1e-6

    def host(kept: list[KeptTask]) -> SimpleNamespace:
        return SimpleNamespace(optimizer=torch.optim.Adam([nn.Parameter(torch.zeros(1))]),
                               memory=TaskMemory(TaskMemoryParams()), best_acc=1.0, since_best=0, api_next=False,
                               generator=torch.Generator(), cpu_generator=torch.Generator(), estimator=object(),
                               last_images=None, kept=deque(kept, maxlen=2))

    task = KeptTask(1, to_uint8(images), torch.softmax(torch.randn(4, 2), 1), to_uint8(images.flip(0)),
                    torch.softmax(torch.randn(4, 2), 1))
    buffer = io.BytesIO()
    torch.save(BidfMkd.state_dict(host([task])), buffer)
    buffer.seek(0)
    restored = host([])
    BidfMkd.load_state_dict(restored, torch.load(buffer, weights_only=True))
    (back,) = restored.kept
    assert back.domain == 1 and all(torch.equal(getattr(back, f), getattr(task, f))
                                    for f in ("support", "support_targets", "query", "query_targets"))


@pytest.mark.parametrize("permute", [False, True])
def test_permute_maps_api_classes_to_outputs_in_a_task_order_and_the_boundary_student_back(
        registry, tmp_path, monkeypatch, permute) -> None:
    from torch.func import functional_call

    from dfml_plugins.methods import bidf_mkd
    from dfml_plugins.recoverers.generator import GeneratorRecoverer

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
    from dfml_plugins.methods.bidf_mkd import inference_weights

    weights = {"conv.weight": torch.randn(4, 3, 3, 3, requires_grad=True), "conv.bias": torch.randn(4, requires_grad=True)}
    cpu = inference_weights(weights, torch.device("cpu"))
    assert not any(v.requires_grad for v in cpu.values())
    assert all(torch.equal(cpu[k], weights[k]) for k in weights)
    assert cpu["conv.weight"].is_contiguous(memory_format=torch.channels_last)
    assert not weights["conv.weight"].is_contiguous(memory_format=torch.channels_last)
    other = inference_weights(weights, torch.device("cuda"))  # layout left to the device's own kernels
    assert other["conv.weight"].is_contiguous() and not other["conv.weight"].requires_grad
