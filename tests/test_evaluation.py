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
