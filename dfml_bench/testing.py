"""Conformance checks for plugin authors: run your component against its kind's contract.

One line per component in your plugin's own test suite::

    from dfml_bench.testing import check_component

    def test_my_estimator():
        check_component("estimator", "my_estimator")

    def test_my_method(tmp_path):
        check_component("method", "my_method", results=tmp_path)

Each check builds the component through the registry (``Component.build``, so the factory's
return type is checked too) with the smoke profile's settings for it unless `params` are
given, exercises its interface on tiny inputs with fixed seeds, and raises AssertionError
with a sentence saying what is wrong. Every check but the method's (a smoke run end to end)
and the scenario's (it builds the datasets) takes well under a second on a CPU.
See docs/components/ for each kind's contract.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dfml_bench.plugins import Registry, load_registry

#: A tiny scenario setting: letters at 20 instances per class, a few iterations and episodes.
SMOKE_PROFILE = "smoke"
#: The episode shape of the smoke profile: every dataset split must hold such episodes.
SMOKE_WAYS, SMOKE_SHOTS, SMOKE_QUERIES = 5, 1, 5


# ---------------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Torch on one thread while a check runs: its tensors are tiny, so threads only add overhead."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _single_threaded(check: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(check)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _one_thread():
            return check(*args, **kwargs)
    return run


def smoke_params(kind: str, name: str) -> dict[str, Any]:
    """The smoke profile's settings of a component (``{}`` when it sets none)."""
    from dfml_bench.config import load_profile

    section = load_profile(SMOKE_PROFILE).get(kind) or {}
    values = section.get(name) if isinstance(section, Mapping) else None
    return dict(values) if isinstance(values, Mapping) else {}


def _build(registry: Registry | None, kind: str, name: str, params: Mapping[str, Any] | None,
           *args: Any, seed: int | None = None, **kwargs: Any) -> Any:
    """Build a registered component with `params` (default: the smoke profile's) over its defaults;
    with `seed`, then seed it as the runner does (``reseed`` of a ``Seedable``)."""
    from dfml_bench.interfaces import Seedable
    from dfml_bench.params import build_params

    registry = registry or load_registry()
    comp = registry.get(kind, name)
    values = smoke_params(kind, name) if params is None else dict(params)
    built = comp.build(build_params(comp.params, values, f"{kind} '{name}'"), *args, **kwargs)
    if seed is not None and isinstance(built, Seedable):
        built.reseed(seed)
    return built


def _params_of(registry: Registry | None, kind: str, name: str, params: Mapping[str, Any] | None) -> Any:
    from dfml_bench.params import build_params

    comp = (registry or load_registry()).get(kind, name)
    values = smoke_params(kind, name) if params is None else dict(params)
    return build_params(comp.params, values, f"{kind} '{name}'")


def _state(obj: Any) -> dict[str, Any] | None:
    """A deep copy of `obj.state_dict()`, or None when it declares none."""
    fn = getattr(obj, "state_dict", None)
    return copy.deepcopy(dict(fn())) if callable(fn) else None


def _load(obj: Any, state: Mapping[str, Any] | None) -> None:
    fn = getattr(obj, "load_state_dict", None)
    if state is not None and callable(fn):
        fn(copy.deepcopy(dict(state)))


def tiny_net(num_classes: int, seed: int = 0) -> Any:
    """A small smooth classifier (conv, eval-mode BatchNorm, tanh, average pooling, linear) that
    stands in for an API: zero-order estimates converge to its true input gradient, and it counts
    the images its forward passes see (``net.seen``) so query accounting can be checked."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, num_classes))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() > 1 else 0.1))
        net[1].weight.add_(1.0)
        net[1].running_mean.copy_(torch.randn(4, generator=g) * 0.1)
        net[1].running_var.copy_(torch.rand(4, generator=g) + 0.5)
    net.seen = 0

    def count(module: Any, inputs: tuple[Any, ...]) -> None:
        module.seen += int(inputs[0].shape[0])

    net.register_forward_pre_hook(count)
    return net.eval()


def tiny_api(num_classes: int = 3, image_size: int = 8, *, ledger: Any = None, output: str = "logits",
             white_box: bool = True, seed: int = 0, classes: Sequence[int] | None = None,
             api_id: str = "tiny-0") -> tuple[Any, Any]:
    """(a real API handle around a :func:`tiny_net` that charges `ledger`, that net).

    A WhiteBoxAPI by default: a BlackBoxAPI subclass, so black-box code sees only ``query``.
    """
    from dfml_bench.apis import APIInfo, QueryLedger, make_api

    net = tiny_net(num_classes, seed)
    classes = tuple(classes if classes is not None else range(num_classes))
    info = APIInfo(api_id, "tiny", "tinynet", classes, tuple(str(c) for c in classes), image_size)
    api = make_api(net, info, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), ledger if ledger is not None else QueryLedger(),
                   output=output, white_box=white_box, channels_last=False, fold_bn=False)
    return api, net


class TinyPool:
    """`n` :func:`tiny_net` networks over consecutive class blocks: a pool that needs no training.

    It answers what a pool plugin must (``len``, ``info``, ``api``, ``close``), so it can be served
    over HTTP (``dfml_bench.serve.PoolServer``) to check a client pool against it.
    """

    def __init__(self, n: int = 2, classes_per_api: int = 3, image_size: int = 8):
        self.n, self.k, self.size = n, classes_per_api, image_size
        self.nets = [tiny_net(classes_per_api, seed=i) for i in range(n)]

    def __len__(self) -> int:
        return self.n

    def info(self, index: int) -> Any:
        from dfml_bench.apis import APIInfo

        classes = tuple(range(index * self.k, (index + 1) * self.k))
        return APIInfo(f"tiny-{index}", "tiny", "tinynet", classes, tuple(map(str, classes)), self.size)

    def api(self, index: int, ledger: Any, output: str = "logits", white_box: bool = False) -> Any:
        from dfml_bench.apis import make_api

        return make_api(self.nets[index], self.info(index), (0.5,) * 3, (0.5,) * 3, ledger, output=output,
                        white_box=white_box, channels_last=False, fold_bn=False)

    def close(self) -> None:
        return None


def tiny_scenario(classes: int = 10, per_class: int = 6, image_size: int = 8, output: str = "logits") -> Any:
    """A black-box ScenarioData over one synthetic dataset of random images (no pool spec)."""
    import torch

    from dfml_bench.data import FewShotDataset, ImageSplit
    from dfml_bench.interfaces import ScenarioData

    g = torch.Generator().manual_seed(0)
    splits = {}
    for i, split in enumerate(("train", "val", "test")):
        images = torch.randint(0, 256, (classes * per_class, 3, image_size, image_size), generator=g, dtype=torch.uint8)
        labels = torch.arange(classes).repeat_interleave(per_class)
        splits[split] = ImageSplit(images, labels, [f"{split}-{c}" for c in range(classes)])
    return ScenarioData("tiny", [FewShotDataset("tiny", splits, image_size)], access="black", output=output)


def _task(ways: int = 5, shots: int = 2, queries: int = 3, size: int = 16, seed: int = 0,
          targets: bool = True) -> Any:
    import torch

    from dfml_bench.data import Task

    g = torch.Generator().manual_seed(seed)
    ys, yq = torch.arange(ways).repeat_interleave(shots), torch.arange(ways).repeat_interleave(queries)
    task = Task(torch.randn(ways * shots, 3, size, size, generator=g), ys,
                torch.randn(ways * queries, 3, size, size, generator=g), yq)
    if targets:  # teacher probabilities leaning to the labels (distilling learners need them)
        task.support_t = (torch.nn.functional.one_hot(ys, ways) * 3 + torch.rand(len(ys), ways, generator=g)).softmax(1)
        task.query_t = (torch.nn.functional.one_hot(yq, ways) * 3 + torch.rand(len(yq), ways, generator=g)).softmax(1)
    return task


def _small_model(registry: Registry, ways: int, size: int = 16) -> Any:
    """A tiny conv4 meta model (deterministic initialisation)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _build(registry, "architecture", "conv4", {"width": 4}, ways, size)


def _same(a: Any, b: Any) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))


# ---------------------------------------------------------------------------------------------
# estimator


def _cosine(a: Any, b: Any) -> float:
    import torch

    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


@_single_threaded
def check_estimator(name: str, registry: Registry | None = None, params: Mapping[str, Any] | None = None, *,
                    directions: str = "q", draws: int = 200) -> None:
    """A gradient estimator's contract on a small smooth black box (:func:`tiny_net`, 3x4x4 images).

    * shapes: ``Estimate.loss`` [B] is the true per-sample loss, ``grad`` has the images' shape,
      finite, on their device;
    * query accounting: the images the ledger was charged equal the images the network saw;
    * unbiasedness: the mean of `draws` estimates is within twice its standard error (from the
      draws' own spread) plus 10% of the gradient's norm of the true (autograd) input gradient.
      Zero-order estimators estimate the gradient of a smoothed loss, close to the true one at a
      small radius; an unbiased estimator's squared error is about its variance over `draws`, so
      the factor 4 on it leaves a wide margin whatever the number of directions, and the seeds
      are fixed: the check does not flake. A deterministic estimator is held to the 10%;
    * more directions, less error: when the params have a `directions` field (e.g. ``q``), the
      mean squared error of one estimate at 4x the directions is below 0.6x that at 1x
      (about 0.25x expected);
    * exact resume: an estimator whose draws differ between calls keeps its randomness in a
      generator it returns from ``state_dict``; a fresh instance built with the same seed and
      given that state draws exactly the same next estimate.
    """
    import torch

    from dfml_bench.apis import QueryLedger
    from dfml_bench.interfaces import GradientEstimator

    registry = registry or load_registry()
    values = smoke_params("estimator", name) if params is None else dict(params)

    def build(extra: Mapping[str, Any] | None = None, seed: int = 7) -> Any:
        return _build(registry, "estimator", name, {**values, **(extra or {})}, seed=seed)

    est = build()
    assert isinstance(est, GradientEstimator), f"estimator '{name}' must subclass GradientEstimator"
    ways, size, batch = 3, 4, 4
    ledger = QueryLedger()
    api, net = tiny_api(ways, size, ledger=ledger, white_box=True)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    targets = torch.tensor([0, 1, 2, 0])

    def loss_fn(inputs: Any, scores: Any, index: Any) -> Any:
        return torch.nn.functional.cross_entropy(scores, targets[index.to(targets.device)], reduction="none")

    with torch.enable_grad():  # the true gradient, through the network itself
        xg = x.clone().requires_grad_(True)
        true_loss = loss_fn(xg, net((xg - 0.5) / 0.5), torch.arange(batch))
        (true_grad,) = torch.autograd.grad(true_loss.sum(), xg)
    net.seen = 0

    first = est.estimate(api, x, loss_fn)
    assert first.grad.shape == x.shape, f"estimator '{name}' returned a gradient of shape {tuple(first.grad.shape)}, " \
                                        f"expected {tuple(x.shape)}"
    assert first.loss.shape == (batch,), f"estimator '{name}' must return one loss per image ([{batch}])"
    assert first.grad.device == x.device and first.loss.device == x.device, \
        f"estimator '{name}' must return its estimate on the images' device"
    assert bool(torch.isfinite(first.grad).all()), f"estimator '{name}' returned a non-finite gradient"
    assert torch.allclose(first.loss, true_loss.detach(), rtol=1e-4, atol=1e-5), \
        f"estimator '{name}' must return the true loss at the base points as Estimate.loss"
    assert ledger.total == net.seen > 0, f"estimator '{name}': the ledger was charged {ledger.total} images but " \
                                         f"the API answered {net.seen}; query only through api.query / forward"

    # exact resume: the generator state after one draw reproduces the next draw in a fresh instance
    state = _state(est)
    second = est.estimate(api, x, loss_fn)
    if not _same(first.grad, second.grad):
        assert state, f"estimator '{name}' draws differently on every call but returns no state from " \
                      "state_dict(); keep its randomness in a seeded generator and return that generator's " \
                      "state, or a resumed run is not exact"
        fresh = build()
        _load(fresh, state)
        again = fresh.estimate(api, x, loss_fn)
        assert _same(again.grad, second.grad), f"estimator '{name}': restoring state_dict() into a fresh " \
                                               "instance does not reproduce its next draw"
        other = build().estimate(api, x, loss_fn)
        assert _same(other.grad, first.grad), f"estimator '{name}' built with the same seed draws differently; " \
                                              "derive every random draw from the seed given to reseed()"

    # unbiasedness against the true gradient: the mean of the draws must be as close to it as their
    # own spread allows (expected squared error of an unbiased mean: trace(cov) / n), plus 10% of
    # its norm for the smoothing bias; a deterministic estimator is held to the 10% alone
    stochastic = not _same(first.grad, second.grad)
    grads = [first.grad, second.grad]
    while stochastic and len(grads) < draws:
        grads.append(est.estimate(api, x, loss_fn).grad)
    stack = torch.stack(grads).double()
    mean, n, g = stack.mean(0), len(grads), true_grad.double()
    error = float(((mean - g) ** 2).sum())
    noise = float(((stack - mean) ** 2).sum()) / (n - 1) / n if stochastic else 0.0
    allowed = 4 * noise + 0.01 * float((g ** 2).sum())
    assert error <= allowed, f"estimator '{name}': the mean of {n} estimates is {error ** 0.5:.3g} from the true " \
                             f"gradient (cosine similarity {_cosine(mean, g):.3f}), more than its spread and " \
                             f"smoothing allow ({allowed ** 0.5:.3g}): it is biased"

    settings = _params_of(registry, "estimator", name, values)
    fields = {f.name for f in dataclasses.fields(settings)} if dataclasses.is_dataclass(settings) else set()
    if directions in fields and stochastic:
        base = int(getattr(settings, directions))

        def mse(n_dir: int) -> float:
            e = build({directions: n_dir}, seed=11)
            err = [float(((e.estimate(api, x, loss_fn).grad - true_grad) ** 2).sum()) for _ in range(40)]
            return sum(err) / len(err)

        few, many = mse(base), mse(4 * base)
        assert many < 0.6 * few, f"estimator '{name}': 4x the {directions} gave a mean squared error of {many:.3g} " \
                                 f"against {few:.3g}; more directions must shrink the error"


# ---------------------------------------------------------------------------------------------
# recoverer


@_single_threaded
def check_recoverer(name: str, registry: Registry | None = None, params: Mapping[str, Any] | None = None, *,
                    estimator: str | None = "zo_forward", estimator_params: Mapping[str, Any] | None = None) -> None:
    """A data recoverer on a small white-box API (3 classes, 8 px) with the named estimator.

    Images [K*per_class, 3, S, S] in [0, 1] on the generator's device, labels in [0, K), the API's
    outputs on exactly those images as `scores`, agreement in [0, 100]; every image the API saw
    was charged; the same generator state (and, for a recoverer with state, the same
    ``state_dict``) gives the same images. A recoverer that `needs_real_images` gets those of
    :func:`tiny_scenario`.
    """
    import torch

    from dfml_bench.apis import QueryLedger
    from dfml_bench.data import ClassImages
    from dfml_bench.interfaces import DataRecoverer, RecoveredSet

    registry = registry or load_registry()
    est_values = {"q": 2} if estimator_params is None and estimator in ("zo_forward", "zo_central") \
        else dict(estimator_params or {})
    ways, size, per_class = 3, 8, 2

    def run(rec: Any, est_state: Any, g_state: Any) -> tuple[Any, Any, int, int]:
        ledger = QueryLedger()
        api, net = tiny_api(ways, size, ledger=ledger, white_box=True)
        est = _build(registry, "estimator", estimator, est_values, seed=5) if estimator else None
        _load(est, est_state)
        g = torch.Generator()
        g.set_state(g_state)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            out = rec.recover(api, est, per_class, size, g)
        return out, g, ledger.total, net.seen

    def build() -> Any:
        rec = _build(registry, "recoverer", name, params)
        if getattr(rec, "needs_real_images", False):
            rec.use_real_images(ClassImages(tiny_scenario(image_size=size).datasets))
        return rec

    rec = build()
    assert isinstance(rec, DataRecoverer), f"recoverer '{name}' must subclass DataRecoverer"
    g0 = torch.Generator().manual_seed(0).get_state()
    out, g, charged, seen = run(rec, None, g0)
    assert isinstance(out, RecoveredSet), f"recoverer '{name}' must return a RecoveredSet"
    n = ways * per_class
    assert out.images.shape == (n, 3, size, size), f"recoverer '{name}' returned images of shape " \
                                                   f"{tuple(out.images.shape)}, expected {(n, 3, size, size)}"
    assert out.images.dtype.is_floating_point and float(out.images.min()) >= 0 and float(out.images.max()) <= 1, \
        f"recoverer '{name}' must return float images in [0, 1]"
    assert out.images.device == g.device, f"recoverer '{name}' must return images on the generator's device"
    assert out.labels.shape == (n,) and not out.labels.dtype.is_floating_point, \
        f"recoverer '{name}' must return one integer label per image"
    assert int(out.labels.min()) >= 0 and int(out.labels.max()) < ways, "labels are API output positions [0, K)"
    assert out.scores.shape[0] == n, f"recoverer '{name}' must return the API's outputs on its images as scores"
    assert 0.0 <= out.agreement <= 100.0, "agreement is a percentage in [0, 100]"
    assert charged == seen > 0, f"recoverer '{name}': the ledger was charged {charged} images but the API " \
                                f"answered {seen}; query only through the API handle"
    check_api, _ = tiny_api(ways, size, white_box=False)
    expect = check_api.query(out.images)
    assert torch.allclose(out.scores.float(), expect.float(), atol=1e-4), \
        f"recoverer '{name}': scores must be the API's outputs on the returned images"
    # determinism and state: fresh instance, same generator state -> the same images; the state
    # after one call, loaded into a fresh instance, reproduces the second call
    out_b, _, _, _ = run(build(), None, g0)
    assert _same(out.images, out_b.images), f"recoverer '{name}' is not deterministic under a seeded generator " \
                                            "(draw only from the generator it is given, or torch's global RNG)"
    state = _state(rec)
    g1 = g.get_state()
    second, _, _, _ = run(rec, None, g1)
    fresh = build()
    _load(fresh, state)
    again, _, _, _ = run(fresh, None, g1)
    assert _same(second.images, again.images), f"recoverer '{name}' keeps state across calls that its " \
                                               "state_dict() does not return; a resumed run would differ"


# ---------------------------------------------------------------------------------------------
# meta-learner, evaluation rule


@_single_threaded
def check_meta_learner(name: str, registry: Registry | None = None, params: Mapping[str, Any] | None = None) -> None:
    """``task_outcome`` returns a finite scalar loss with a
    gradient w.r.t. the meta parameters and an accuracy in [0, 100], the same twice on one task;
    the meta parameters are not changed in place. Tasks carry labels and teacher probabilities."""
    import torch

    from dfml_bench.interfaces import MetaLearner

    registry = registry or load_registry()
    learner = _build(registry, "meta_learner", name, params)
    assert isinstance(learner, MetaLearner), f"meta-learner '{name}' must subclass dfml_bench.interfaces.MetaLearner"
    model = _small_model(registry, 5)
    task = _task()
    p = dict(model.named_parameters())
    before = {k: v.detach().clone() for k, v in p.items()}
    outcome = learner.task_outcome(model, p, task)
    assert outcome.loss.dim() == 0 and math.isfinite(outcome.loss.item()), "the task loss must be a finite scalar"
    assert 0.0 <= outcome.accuracy <= 100.0, "accuracy is a percentage in [0, 100]"
    grads = torch.autograd.grad(outcome.loss, list(p.values()), allow_unused=True)
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads), \
        f"meta-learner '{name}' produced a loss with no gradient w.r.t. the meta parameters"
    assert all(torch.equal(before[k], v.detach()) for k, v in p.items()), \
        f"meta-learner '{name}' changed the meta parameters in place; return new fast weights instead"
    again = learner.task_outcome(model, p, task)
    assert torch.allclose(outcome.loss.detach(), again.loss.detach(), rtol=1e-5, atol=1e-6), \
        f"meta-learner '{name}' gives different losses for the same task and parameters"


@_single_threaded
def check_evaluation_rule(name: str, registry: Registry | None = None, params: Mapping[str, Any] | None = None) -> None:
    """``predict`` returns [Q] integer labels in [0, ways) for the task's query images, leaves the
    parameters as they were, and gives the same labels twice (with fine-tuning steps and without)."""
    import torch

    from dfml_bench.interfaces import EvaluationRule

    registry = registry or load_registry()
    rule = _build(registry, "evaluation_rule", name, params)
    assert isinstance(rule, EvaluationRule), f"evaluation rule '{name}' must subclass EvaluationRule"
    model = _small_model(registry, 5).train()
    task = _task(targets=False)
    p = {k: v.detach().clone() for k, v in model.named_parameters()}
    before = {k: v.clone() for k, v in p.items()}
    for steps in (0, 2):
        pred = rule.predict(model, p, task, steps=steps, lr=0.01)
        assert pred.shape == task.query_y.shape, f"evaluation rule '{name}' returned {tuple(pred.shape)} labels " \
                                                 f"for {len(task.query_y)} query images"
        assert not pred.dtype.is_floating_point, f"evaluation rule '{name}' must return integer labels, not scores"
        assert int(pred.min()) >= 0 and int(pred.max()) < 5, "predicted labels index the task's classes [0, ways)"
        assert all(torch.equal(before[k], v) for k, v in p.items()), \
            f"evaluation rule '{name}' modified the meta model's parameters in place"
        assert torch.equal(pred, rule.predict(model, p, task, steps=steps, lr=0.01)), \
            f"evaluation rule '{name}' predicts differently for the same episode"


# ---------------------------------------------------------------------------------------------
# replay strategy


def _api_task(classes: tuple[int, ...], per_class: int, size: int, seed: int, domain: int = 0) -> Any:
    import torch

    from dfml_bench.interfaces import ApiTask, RecoveredSet

    g = torch.Generator().manual_seed(seed)
    k = len(classes)
    labels = torch.arange(k).repeat_interleave(per_class)

    def found() -> Any:
        scores = torch.nn.functional.one_hot(labels, k).float() * 4 + torch.rand(len(labels), k, generator=g)
        return RecoveredSet(torch.rand(len(labels), 3, size, size, generator=g), labels.clone(), 0.5, 100.0, scores)

    support, query = found(), found()
    return ApiTask(classes, domain, support, support.scores.softmax(1), query, query.scores.softmax(1))


@_single_threaded
def check_replay(name: str, registry: Registry | None = None, params: Mapping[str, Any] | None = None) -> None:
    """A replay strategy: nothing to draw before it observed a task; after observing API tasks, a
    ready strategy draws `ways` uint8 chunks of `shots` / `queries` images (or targets rows per
    image), with dataset indices; ``state_dict`` restored into a fresh instance draws the same task."""
    import torch

    from dfml_bench.interfaces import ReplayDraw, ReplayStrategy

    registry = registry or load_registry()
    replay = _build(registry, "replay", name, params)
    assert isinstance(replay, ReplayStrategy), f"replay strategy '{name}' must subclass ReplayStrategy"
    ways, shots, queries, size = 5, 2, 3, 8
    assert not replay.ready(ways), f"replay strategy '{name}' is ready before it observed any task"
    for i in range(3):
        replay.observe(_api_task(tuple(range(i * ways, (i + 1) * ways)), 4, size, seed=i))
    if not replay.ready(ways):
        return  # a strategy that never replays (`none`) has nothing more to check
    state = _state(replay)

    def draw(strategy: Any) -> Any:
        g, order = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
        return strategy.draw(ways, shots, queries, g, lambda: torch.randperm(ways, generator=order))

    out = draw(replay)
    assert isinstance(out, ReplayDraw), f"replay strategy '{name}' must return a ReplayDraw"
    assert len(out.domains) == len(out.support) == len(out.query), "one dataset index per chunk"
    assert all(d == 0 for d in out.domains), "domains index the scenario's datasets (all tasks were from dataset 0)"
    for chunk in list(out.support) + list(out.query):
        assert chunk.dtype == torch.uint8 and chunk.dim() == 4 and chunk.shape[1] == 3, \
            f"replay strategy '{name}' must draw uint8 [N, 3, H, W] image chunks"
    n_support, n_query = sum(len(c) for c in out.support), sum(len(c) for c in out.query)
    if out.support_targets is None:
        assert len(out.support) == ways, f"a labelled replay task has one chunk per class ({ways})"
        assert all(len(c) == shots for c in out.support) and all(len(c) == queries for c in out.query), \
            f"replay strategy '{name}': a labelled task has {shots} support and {queries} query images per class"
    else:
        assert out.query_targets is not None, "a distilled replay task carries support and query targets"
        for t, n in ((out.support_targets, n_support), (out.query_targets, n_query)):
            assert t.shape == (n, ways), f"replay targets must be [{n}, {ways}] (one row per image), not {tuple(t.shape)}"
            assert torch.allclose(t.sum(1), torch.ones(n), atol=1e-4), "replay targets are probabilities (rows sum to 1)"
    fresh = _build(registry, "replay", name, params)
    _load(fresh, state)
    assert fresh.ready(ways), f"replay strategy '{name}' is not ready after loading its state_dict()"
    again = draw(fresh)
    assert all(_same(a, b) for a, b in zip(list(out.support) + list(out.query), list(again.support) + list(again.query))), \
        f"replay strategy '{name}': a fresh instance given its state_dict() draws a different task"


# ---------------------------------------------------------------------------------------------
# pool, launcher, logger, lifecycle hooks


@_single_threaded
def check_pool(name: str, registry: Registry | None = None, params: Mapping[str, Any] | None = None,
               scenario: Any = None, device: str = "cpu") -> None:
    """A pool plugin (``factory(params, scenario, device)``): ``len`` >= 1, ``info(i)`` an APIInfo,
    ``api(i, ledger, output=scenario.output)`` handles whose ``query`` answers [B, K] logits or
    probabilities or [B] labels, charging the ledger exactly B images to ``info(i).api_id``, the
    same answers for the same images; then ``close()``. `scenario` defaults to :func:`tiny_scenario`
    (logits); pass scenarios of other output modes to check those."""
    import torch

    from dfml_bench.apis import APIInfo, QueryLedger

    registry = registry or load_registry()
    scenario = scenario if scenario is not None else tiny_scenario()
    output = scenario.output  # a pool answers in the scenario's output mode (a served one in no other)
    pool = _build(registry, "pool", name, params, scenario, torch.device(device))
    try:
        assert len(pool) >= 1, f"pool '{name}' holds no API"
        for i in range(min(len(pool), 3)):
            info = pool.info(i)
            assert isinstance(info, APIInfo), f"pool '{name}': info({i}) must be a dfml_bench.apis.APIInfo"
            k = len(info.classes)
            x = torch.rand(5, 3, info.input_size, info.input_size, generator=torch.Generator().manual_seed(i))
            ledger = QueryLedger()
            answer = pool.api(i, ledger, output=output, white_box=False).query(x)
            assert ledger.total == 5 and ledger.per_api == {info.api_id: 5}, \
                f"pool '{name}': a query of 5 images must charge the ledger 5 images to '{info.api_id}', " \
                f"not {ledger.per_api}"
            if output == "label":
                assert answer.shape == (5,) and int(answer.min()) >= 0 and int(answer.max()) < k, \
                    f"pool '{name}': output='label' must answer one class position in [0, {k}) per image"
            else:
                assert answer.shape == (5, k) and bool(torch.isfinite(answer).all()), \
                    f"pool '{name}': API {i} must answer finite [5, {k}] {output} for 5 images"
            if output == "probs":
                assert torch.allclose(answer.sum(1).cpu(), torch.ones(5), atol=1e-4), "output='probs' rows must sum to 1"
            again = pool.api(i, ledger, output=output, white_box=False).query(x)
            assert torch.allclose(answer.float(), again.float(), atol=1e-5), \
                f"pool '{name}': API {i} answers the same images differently"
    finally:
        pool.close()


def _double(job: Any) -> Any:
    """What the launcher check executes: picklable, at module level."""
    return {"job": job, "twice": 2 * job}


def check_launcher(name: str, registry: Registry | None = None, params: Mapping[str, Any] | None = None,
                   jobs: int = 3, execute: Callable[[Any], Any] | None = None) -> None:
    """``run_all(jobs, execute)`` calls the picklable ``execute`` once per job and returns what it
    returned, in the jobs' order."""
    from dfml_bench.interfaces import Launcher

    registry = registry or load_registry()
    launcher = _build(registry, "launcher", name, params)
    assert isinstance(launcher, Launcher), f"launcher '{name}' must subclass dfml_bench.interfaces.Launcher"
    work = list(range(jobs))
    out = launcher.run_all(work, execute or _double)
    assert isinstance(out, list) and len(out) == jobs, f"launcher '{name}' must return one value per job"
    if execute is None:
        assert out == [_double(j) for j in work], f"launcher '{name}' returned {out}; expected execute(job) per job, " \
                                                  "in order"


def _default_cache(fallback: Path) -> Path:
    """The cache a run would use (``DFML_BENCH_CACHE``, ...), so rendered data is reused."""
    from dfml_bench.runner import Environment

    try:
        return Environment(fallback).resolved_cache_dir()
    except Exception:  # noqa: BLE001 - an unusable cache setting: check in a scratch directory
        return fallback


def _run_info(run_dir: Path) -> Any:
    from dfml_bench.interfaces import RunInfo

    config = {"method": {"name": "random", "params": {}}, "scenario": {"name": "SS", "params": {}},
              "shots": 1, "seed": 0, "train": {}, "eval": {}}
    return RunInfo("0123456789abcdef", run_dir, config)


_EVENTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("on_run_start", {}),
    ("on_metrics", {"record": {"iteration": 0, "queries": 0, "loss": 1.5, "wall_time": 0.1}}),
    ("on_evaluation", {"split": "val", "result": {"iteration": 0, "accuracy": 20.0}}),
    ("on_metrics", {"record": {"iteration": 1, "queries": 10, "val_acc": 20.0, "wall_time": 0.2}}),
    ("on_evaluation", {"split": "test", "result": {"dataset": "glyphs-letters", "accuracy": 21.0, "ci95": 1.0}}),
    ("on_run_end", {"result": {"run_id": "0123456789abcdef", "method": "random", "scenario": "SS", "shots": 1,
                                "seed": 0, "accuracy": 21.0, "ci95": 1.0, "queries": 10, "per_dataset": {},
                                "wall_time_s": 1.0}}),
)


def check_logger(name: str, registry: Registry | None = None, run_dir: Path | None = None) -> None:
    """A logger component (``factory(params, run_dir)``) takes a run's events in order without
    failing and writes nothing outside its run directory."""
    registry = registry or load_registry()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = Path(run_dir) if run_dir is not None else root / "runs" / "random-SS-1shot-s0-0123456789abcdef"
        path.mkdir(parents=True, exist_ok=True)
        comp = registry.get("logger", name)
        logger = comp.build(_params_of(registry, "logger", name, {}) if comp.params else None, path)
        info = _run_info(path)
        for event, kwargs in _EVENTS:
            getattr(logger, event)(info, *kwargs.values())
        if run_dir is None:
            outside = [p for p in root.rglob("*") if p.is_file() and path not in p.parents]
            assert not outside, f"logger '{name}' wrote outside the run directory: {outside}"


def check_hooks(plugin: Any, run_dir: Path | None = None) -> None:
    """A plugin module's lifecycle hooks: their names and arguments match dfml-bench's hookspecs
    (pluggy refuses them otherwise), and each runs on a run's events, in order, without failing."""
    import pluggy

    from dfml_bench import hookspecs

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(plugin, name="plugin-under-check")
    pm.check_pending()
    with tempfile.TemporaryDirectory() as tmp:
        info = _run_info(Path(run_dir) if run_dir is not None else Path(tmp))
        for event, kwargs in _EVENTS:
            getattr(pm.hook, event)(run=info, **kwargs)


# ---------------------------------------------------------------------------------------------
# dataset, architecture, scenario, method


def check_dataset(name: str, registry: Registry | None = None, params: Mapping[str, Any] | None = None,
                  data_root: Path | None = None, cache_dir: Path | None = None) -> None:
    """A dataset builds into train / val / test splits of uint8 [N, 3, S, S] images (S the declared
    image_size) with disjoint classes, each split able to hold smoke-profile episodes (5 classes
    with >= 6 images), and builds the same again."""
    import torch

    from dfml_bench.data import SPLITS, FewShotDataset

    registry = registry or load_registry()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(cache_dir) if cache_dir is not None else _default_cache(Path(tmp))
        d = _build(registry, "dataset", name, params, data_root, cache)
        assert isinstance(d, FewShotDataset), f"dataset '{name}' must build a dfml_bench.data.FewShotDataset"
        assert set(SPLITS) <= set(d.splits), f"dataset '{name}' needs the splits {SPLITS}, has {sorted(d.splits)}"
        names: list[set[str]] = []
        for split in SPLITS:
            s = d.split(split)
            assert s.images.shape[1:] == (3, d.image_size, d.image_size), \
                f"dataset '{name}' {split} images are {tuple(s.images.shape[1:])}, expected (3, {d.image_size}, " \
                f"{d.image_size})"
            assert int(s.labels.min()) >= 0 and int(s.labels.max()) < s.num_classes, \
                f"dataset '{name}' {split} labels must index its class_names"
            counts = torch.bincount(s.labels, minlength=s.num_classes)
            assert int((counts >= SMOKE_SHOTS + SMOKE_QUERIES).sum()) >= SMOKE_WAYS, \
                f"dataset '{name}' {split} split cannot hold {SMOKE_WAYS}-way {SMOKE_SHOTS}-shot episodes"
            names.append(set(s.class_names))
        assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2]), \
            f"dataset '{name}' shares classes between its meta-splits"
        assert len(d.mean) == 3 and len(d.std) == 3 and min(d.std) > 0, "mean and std are 3 channels, std > 0"
        again = _build(registry, "dataset", name, params, data_root, cache)
        assert all(_same(d.split(s).images, again.split(s).images) for s in SPLITS), \
            f"dataset '{name}' builds different images from the same params"


@_single_threaded
def check_architecture(name: str, registry: Registry | None = None, image_size: int | None = 32,
                       params: Mapping[str, Any] | None = None) -> None:
    """The architecture maps [B, 3, H, W] to [B, classes], works with ``functional_call``, keeps no
    BatchNorm running statistics unless ``running_stats=True``, and with ``image_size=None``
    takes inputs of several sizes."""
    import torch
    from torch.func import functional_call

    registry = registry or load_registry()
    model = _build(registry, "architecture", name, params, 5, image_size)
    size = image_size or 40
    x = torch.randn(6, 3, size, size, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == (6, 5), f"architecture '{name}' returned shape {tuple(out.shape)}, expected (6, 5)"
    params_ = {k: v.detach().clone() for k, v in model.named_parameters()}
    out2 = functional_call(model, params_, (x,))
    assert torch.allclose(out, out2, atol=1e-5), f"architecture '{name}' does not support functional_call"
    assert not any(b.dtype.is_floating_point for _, b in model.named_buffers() if b.numel() > 1), \
        f"architecture '{name}' keeps running statistics; meta models must use batch statistics"
    api = _build(registry, "architecture", name, params, 5, image_size, running_stats=True)
    api.eval()
    assert api(x).shape == (6, 5), f"architecture '{name}' with running_stats=True must still map to (6, 5)"
    if image_size is not None:
        mixed = _build(registry, "architecture", name, params, 5, None)
        for s in (24, 40):
            got = mixed(torch.randn(2, 3, s, s)).shape
            assert got == (2, 5), f"architecture '{name}' built with image_size=None maps {s} px inputs to {tuple(got)}"


def check_scenario(name: str, registry: Registry | None = None, sets: Sequence[str] = (),
                   cache_dir: Path | None = None, data_root: Path | None = None) -> Any:
    """The scenario builds on the smoke profile (``--scenario NAME``; `sets` are ``--set`` items):
    a ScenarioData with FewShotDatasets that hold smoke episodes in every split, an access of
    black or white, an API output mode, and a pool spec (PoolSpec whose architectures are
    registered, PoolSource of a registered pool, or None). Returns the ScenarioData."""
    from dfml_bench.apis import OUTPUT_MODES
    from dfml_bench.config import build_raw_config, resolve_runs
    from dfml_bench.data import SPLITS, FewShotDataset
    from dfml_bench.interfaces import ScenarioData
    from dfml_bench.pool import PoolSource, PoolSpec
    from dfml_bench.runner import Environment, build_scenario
    from dfml_bench.selection import parse_selection

    registry = registry or load_registry()
    raw = build_raw_config(SMOKE_PROFILE, sets=list(sets), flags={"method": "random", "scenario": name})
    [resolved] = resolve_runs(raw, registry)
    with tempfile.TemporaryDirectory() as tmp:
        env = Environment(Path(tmp), device="cpu", cache_dir=cache_dir, data_root=data_root)
        data = build_scenario(registry, resolved, env)
    assert isinstance(data, ScenarioData), f"scenario '{name}' must build a dfml_bench.interfaces.ScenarioData"
    assert data.datasets and all(isinstance(d, FewShotDataset) for d in data.datasets), \
        f"scenario '{name}' must hold at least one FewShotDataset"
    assert len({d.name for d in data.datasets}) == len(data.datasets), f"scenario '{name}' lists a dataset twice"
    assert data.access in ("black", "white"), f"scenario '{name}' access must be black or white, not {data.access!r}"
    assert data.output in OUTPUT_MODES, f"scenario '{name}' output must be one of {OUTPUT_MODES}"
    for d in data.datasets:
        for split in SPLITS:
            s = d.split(split)
            enough = sum(1 for c in range(s.num_classes) if int((s.labels == c).sum()) >= SMOKE_SHOTS + SMOKE_QUERIES)
            assert enough >= SMOKE_WAYS, f"scenario '{name}': dataset '{d.name}' {split} cannot hold smoke episodes"
    spec = data.pool_spec
    assert spec is None or isinstance(spec, (PoolSpec, PoolSource)), \
        f"scenario '{name}' pool_spec must be a PoolSpec, a PoolSource or None"
    if isinstance(spec, PoolSpec):
        for sel in spec.architectures:
            registry.get("architecture", parse_selection(sel)[0])
        train_classes = min(d.split("train").num_classes for d in data.datasets)
        assert 2 <= spec.classes_per_api <= train_classes, \
            f"scenario '{name}': classes_per_api {spec.classes_per_api} must be in [2, {train_classes}]"
    elif isinstance(spec, PoolSource):
        registry.get("pool", spec.kind)
    return data


def check_method(name: str, results: Path, registry: Registry | None = None, scenario: str = "SS",
                 sets: Sequence[str] = (), cache_dir: Path | None = None) -> dict[str, Any]:
    """Run the method end to end on the smoke profile; check the stored result; return it.

    Accuracy in [0, 100], a finite CI, result.json written, the registered evaluation rule
    recorded, queries only for methods that declare API access, and re-running is a no-op.
    """
    from dfml_bench.config import build_raw_config, resolve_runs
    from dfml_bench.runner import Environment, execute_run, run_path

    registry = registry or load_registry()
    comp = registry.get("method", name)
    raw = build_raw_config(SMOKE_PROFILE, sets=list(sets), flags={"method": name, "scenario": scenario})
    runs = resolve_runs(raw, registry)
    # pools of smoke scenarios are tiny: building them in this process beats starting workers
    env = Environment(results_root=Path(results), device="cpu", cache_dir=cache_dir, workers=1)
    result: dict[str, Any] = {}
    for resolved in runs:
        result = execute_run(resolved, registry, env)
        assert 0.0 <= result["accuracy"] <= 100.0, f"accuracy {result['accuracy']} is not a percentage"
        assert math.isfinite(result["ci95"]) and result["ci95"] >= 0, "the 95% CI must be finite and >= 0"
        assert (run_path(env, resolved) / "result.json").exists(), "the run wrote no result.json"
        assert result["evaluation"] == comp.meta.get("evaluation", "finetune"), "the run used another evaluation rule"
        if comp.meta.get("access", "black") not in ("black", "white"):
            assert result["queries"] == 0, f"method '{name}' has no API access but {result['queries']} queries were charged"
        again = execute_run(resolved, registry, env)
        assert again.get("skipped"), "re-running a finished run must be a no-op"
    return result


# ---------------------------------------------------------------------------------------------

CHECKS: dict[str, Callable[..., Any]] = {
    "estimator": check_estimator,
    "recoverer": check_recoverer,
    "meta_learner": check_meta_learner,
    "replay": check_replay,
    "evaluation_rule": check_evaluation_rule,
    "pool": check_pool,
    "launcher": check_launcher,
    "logger": check_logger,
    "dataset": check_dataset,
    "architecture": check_architecture,
    "scenario": check_scenario,
    "method": check_method,
}


def check_component(kind: str, name: str, **kwargs: Any) -> Any:
    """Run `kind`'s conformance check on component `name` (keyword arguments go to that check:
    ``results=`` for a method, ``params=`` for most, ``sets=`` for a scenario)."""
    try:
        check = CHECKS[kind]
    except KeyError:
        raise ValueError(f"no conformance check for component kind {kind!r}; kinds: {sorted(CHECKS)}") from None
    return check(name, **kwargs)
