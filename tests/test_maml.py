"""MAML second order vs first order, and the conv4 / MAML components' conformance."""

from __future__ import annotations

import torch
from torch import nn

from dfml_bench.data import Task
from dfml_bench.testing import check_architecture, check_meta_learner
from dfml_plugins.meta_learners.maml import MamlParams
from dfml_plugins.meta_learners.maml.learner import MAML


def tiny_task() -> Task:
    g = torch.Generator().manual_seed(0)
    return Task(torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 0, 1, 2]),
                torch.randn(9, 4, generator=g), torch.tensor([0, 1, 2] * 3))


def meta_grads(first_order: bool) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    params = dict(model.named_parameters())
    outcome = MAML(MamlParams(inner_steps=2, inner_lr=0.5, first_order=first_order)).task_outcome(model, params, tiny_task())
    return list(torch.autograd.grad(outcome.loss, list(params.values())))


def test_second_and_first_order_gradients_differ() -> None:
    second, first = meta_grads(False), meta_grads(True)
    assert max((a - b).abs().max().item() for a, b in zip(second, first)) > 1e-4


def test_first_order_gradient_is_the_query_gradient_at_the_adapted_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    params = dict(model.named_parameters())
    learner = MAML(MamlParams(inner_steps=2, inner_lr=0.5, first_order=True))
    task = tiny_task()
    fast = {k: v.detach().requires_grad_(True)
            for k, v in learner.adapt(model, params, task.support_x, task.support_y, create_graph=False).items()}
    query_loss = nn.functional.cross_entropy(torch.func.functional_call(model, fast, (task.query_x,)), task.query_y)
    expected = torch.autograd.grad(query_loss, list(fast.values()))
    for a, b in zip(meta_grads(True), expected):
        assert torch.allclose(a, b, atol=1e-6)


def test_first_order_builds_no_second_order_graph() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    params = dict(model.named_parameters())
    task = tiny_task()
    fast = MAML(MamlParams(inner_steps=2, first_order=True)).adapt(model, params, task.support_x, task.support_y,
                                                                   create_graph=False)
    # each fast weight is p - lr * g with g a constant: its graph reaches only the meta parameter
    for k, v in fast.items():
        (g,) = torch.autograd.grad(v.sum(), params[k], retain_graph=True)
        assert torch.allclose(g, torch.ones_like(g))


def test_builtin_components_conform(registry) -> None:
    check_architecture("conv4", registry)
    check_architecture("conv4", registry, image_size=None)  # mixed sizes -> global pooling
    check_meta_learner("maml", registry)
