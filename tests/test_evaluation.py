"""The evaluation protocol: CI formula, episodes, test-time fine-tuning."""

from __future__ import annotations

import math

import pytest
import torch

from dfml_bench.data import EpisodeSampler, ImageSplit, Normalizer
from dfml_bench.evaluation import finetune, mean_ci95


def test_ci95_matches_hand_computation() -> None:
    # values 1,2,3,4: mean 2.5, sample variance 5/3, CI = 1.96 * 1.2909944 / 2 = 1.2651746
    mean, ci = mean_ci95([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5)
    assert ci == pytest.approx(1.96 * math.sqrt(5 / 3) / 2) == pytest.approx(1.2651746)
    assert mean_ci95([7.0]) == (7.0, 0.0)
    # a few seeds: Student's t for n - 1 degrees of freedom, not 1.96
    assert mean_ci95([1.0, 2.0, 3.0, 4.0], student_t=True)[1] == pytest.approx(3.182 * math.sqrt(5 / 3) / 2)
    assert mean_ci95([1.0, 3.0], student_t=True)[1] == pytest.approx(12.706 * math.sqrt(2) / math.sqrt(2))


@pytest.mark.parametrize(("df", "exact"), [(30, 2.0423), (31, 2.0395), (40, 2.0211), (100, 1.9840), (599, 1.9639)])
def test_t_quantile_meets_the_table_and_tends_to_the_normal(df, exact) -> None:
    from dfml_bench.evaluation import t975

    assert t975(df) == pytest.approx(exact, abs=1e-3)


def toy_split(n_classes: int = 8, per_class: int = 10) -> ImageSplit:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_classes * per_class, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return ImageSplit(images, labels, [f"c{i}" for i in range(n_classes)])


def sampler(seed: int = 0, shots: int = 1) -> EpisodeSampler:
    return EpisodeSampler(toy_split(), 5, shots, 3, seed, Normalizer((0.5,) * 3, (0.5,) * 3, torch.device("cpu")))


def test_episodes_are_deterministic_and_well_formed() -> None:
    a, b = sampler(), sampler()
    for i in range(20):
        sa, qa = a.indices(i)
        sb, qb = b.indices(i)
        assert torch.equal(sa, sb) and torch.equal(qa, qb)
    s, q = a.indices(0)
    assert len(s) == 5 and len(q) == 15 and not set(s.tolist()) & set(q.tolist())
    labels = a.split.labels
    assert len(set(labels[s].tolist())) == 5 and set(labels[q].tolist()) == set(labels[s].tolist())
    task = a.episode(0)
    assert task.support_y.tolist() == [0, 1, 2, 3, 4] and task.query_y.tolist() == sorted([0, 1, 2, 3, 4] * 3)
    # support images of class j are the images labelled j within the episode
    assert torch.equal(labels[s].unique(), labels[q].unique())


def test_episodes_differ_across_indices_and_seeds() -> None:
    a = sampler()
    assert not all(torch.equal(a.indices(0)[0], a.indices(i)[0]) for i in range(1, 5))
    assert not torch.equal(a.indices(0)[1], sampler(seed=1).indices(0)[1])


def test_too_few_classes_is_a_clear_error() -> None:
    from dfml_bench.errors import DataError

    with pytest.raises(DataError, match="need 5 classes"):
        EpisodeSampler(toy_split(n_classes=4), 5, 1, 3, 0, Normalizer((0.5,) * 3, (0.5,) * 3, torch.device("cpu")))


def test_finetune_reduces_support_loss_and_keeps_no_graph() -> None:
    from torch import nn
    from torch.func import functional_call

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    task = sampler().episode(0)
    params = dict(model.named_parameters())
    before = nn.functional.cross_entropy(model(task.support_x), task.support_y).item()
    fast = finetune(model, params, task.support_x, task.support_y, steps=10, lr=0.1)
    after = nn.functional.cross_entropy(functional_call(model, fast, (task.support_x,)), task.support_y).item()
    assert after < before
    assert all(v.grad_fn is None and not v.requires_grad for v in fast.values())
    assert all(p.grad is None for p in model.parameters())  # the meta model is untouched


class Features(torch.nn.Module):
    """A toy network: the first two input pixels are its features, then a (useless) random head."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(2))
        self.head = torch.nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1)[:, :2] * self.scale)


def toy_task() -> "object":
    from dfml_bench.data import Task

    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    support = torch.cat([centres + 0.5, centres - 0.5])  # two shots per class around each centre
    query = torch.tensor([[9.0, 1.0], [1.0, 1.0], [0.5, 8.0], [6.0, 0.0], [0.0, 4.0]])
    as_images = lambda p: torch.cat([p, torch.zeros(len(p), 2)], 1).view(-1, 1, 2, 2)  # noqa: E731
    return Task(as_images(support), torch.tensor([0, 1, 2, 0, 1, 2]), as_images(query),
                torch.tensor([1, 0, 2, 1, 0]))


def test_prototype_rule_predicts_the_nearest_class_mean_of_the_features() -> None:
    from dfml_plugins.evaluation_rules.prototype.rule import PrototypeRule

    model, task = Features(), toy_task()
    params = {k: v.detach() for k, v in model.named_parameters()}
    pred = PrototypeRule().predict(model, params, task, steps=5, lr=0.1)
    assert pred.tolist() == [1, 0, 2, 1, 0]  # the head is never used, and [6, 0] is nearer (10, 0)
    from dfml_bench.evaluation import episode_accuracy

    assert episode_accuracy(model, params, task, 5, 0.1, PrototypeRule()) == 100.0


def test_finetune_rule_equals_fine_tuning_then_argmax_in_either_layout() -> None:
    from torch import nn
    from torch.func import functional_call

    from dfml_bench.evaluation import FinetuneRule, evaluate

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 5))
    model.train()
    s = sampler()
    params = {k: v.detach() for k, v in model.named_parameters()}
    by_hand = []
    for i in range(4):
        task = s.episode(i)
        fast = finetune(model, params, task.support_x, task.support_y, 3, 0.1)
        with torch.no_grad():
            pred = functional_call(model, fast, (task.query_x,)).argmax(1)
        assert torch.equal(FinetuneRule().predict(model, params, task, steps=3, lr=0.1), pred)
        by_hand.append(100.0 * (pred == task.query_y).float().mean().item())
    plain = evaluate(model, s, 4, 3, 0.1, layout="contiguous")
    assert plain.episode_accuracies == by_hand and plain.accuracy == pytest.approx(sum(by_hand) / 4)
    fast_layout = evaluate(model, s, 4, 3, 0.1, layout="channels_last")
    # channels-last changes the order of float sums only: an episode may flip a near-tie prediction
    assert sum(a != b for a, b in zip(fast_layout.episode_accuracies, by_hand)) <= 1
