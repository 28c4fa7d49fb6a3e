"""Transfer probe: does data recovered from a pool's APIs teach features that help on real tasks?

Fills a task memory with `--per` images per class of every API in a built glyphs pool, taken
from one SOURCE, then meta-trains a fresh conv4 with first-order MAML on replay tasks drawn
from that memory (the replay half of BiDf-MKD, isolated) and prints the meta-VAL accuracy
before and after. Sources, side by side:

  real           the APIs' own meta-train images (an upper reference: what the classes hold)
  noise          uniform noise, labelled by position (a floor: "meta-training on anything")
  generator-zo   BiDf-MKD's generator inversion with the zo_forward estimator (black box)
  generator-wb   the same inversion with exact input gradients (white box)
  deepinversion  pixels optimised with CE + BatchNorm-statistics matching + TV (white box,
                 PURER-style prior)

If a source's "after" is not above its "before", meta-learning from it cannot beat `random`
on this pool, whatever the rest of the method does.

`--learner kd` probes the other half of BiDf-MKD instead: every meta-training task is one API's
set (half of each class's images as the support set, the other half as the query set), and the
model is meta-trained with first-order bi-level KD against the API's soft outputs on them (the
API task of BiDf-MKD, replayed from cached outputs), not with cross-entropy on recovery labels.

    dfml-bench pool build --scenario SS     # prints the pool hash
    python benchmarks/transfer_probe.py --pool <hash> --source real,noise,generator-wb
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dfml_bench.apis import QueryLedger
from dfml_bench.data import EpisodeSampler, Normalizer, Task
from dfml_bench.evaluation import evaluate
from dfml_bench.plugins import load_registry
from dfml_bench.pool import APIPool, default_pool_dir
from dfml_plugins.datasets.glyphs import GlyphsParams
from dfml_plugins.datasets.glyphs.dataset import build_glyphs
from dfml_plugins.estimators.zeroth_order import ZOParams
from dfml_plugins.estimators.zeroth_order.estimator import WhiteBoxGradient, ZOForward
from dfml_plugins.meta_learners.kd import KDParams
from dfml_plugins.meta_learners.kd.learner import BilevelKD
from dfml_plugins.meta_learners.maml import MamlParams
from dfml_plugins.meta_learners.maml.learner import MAML
from dfml_plugins.models.conv4 import Conv4Params
from dfml_plugins.models.conv4.model import build_conv4
from dfml_plugins.recoverers.api_loss import api_probs
from dfml_plugins.recoverers.generator import GeneratorRecovererParams
from dfml_plugins.recoverers.generator.recoverer import GeneratorRecoverer, augment
from dfml_plugins.replay.task_memory import TaskMemoryParams
from dfml_plugins.replay.task_memory.replay import TaskMemory

SOURCES = ("real", "noise", "generator-zo", "generator-wb", "deepinversion")


def deep_inversion(api: object, per: int, size: int, iters: int, g: torch.Generator) -> torch.Tensor:
    """CE + BN running-statistics matching + total variation, on sigmoid-parametrised pixels."""
    module = api.module  # type: ignore[attr-defined]
    terms: list[torch.Tensor] = []

    def hook(mod: nn.BatchNorm2d, inp: tuple[torch.Tensor], _out: torch.Tensor) -> None:
        x = inp[0]
        terms.append((x.mean((0, 2, 3)) - mod.running_mean).norm()
                     + (x.var((0, 2, 3), unbiased=False) - mod.running_var).norm())

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    y = torch.arange(api.num_classes).repeat_interleave(per)  # type: ignore[attr-defined]
    logit = (0.5 * torch.randn(len(y), 3, size, size, generator=g)).requires_grad_(True)
    opt = torch.optim.Adam([logit], lr=0.05)
    try:
        for _ in range(iters):
            terms.clear()
            img = torch.sigmoid(logit)
            tv = (img[..., 1:, :] - img[..., :-1, :]).abs().mean() + (img[..., 1:] - img[..., :-1]).abs().mean()
            loss = F.cross_entropy(api.forward(augment(img, 2, False, g)), y) + sum(terms) + 0.05 * tv  # type: ignore[attr-defined]
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        for h in handles:
            h.remove()
    return torch.sigmoid(logit).detach()


def fill_memory(source: str, pool: APIPool, chosen: list[int], split: object, per: int, iters: int, seed: int,
                recovery: GeneratorRecovererParams, q: int
                ) -> tuple[TaskMemory, list[tuple[torch.Tensor, torch.Tensor]], float]:
    """`per` images per class of each chosen API from `source`: a task memory of them, the per-API
    sets with the API's output probabilities (for `--learner kd`), and the mean API agreement."""
    mem, ledger, g = TaskMemory(TaskMemoryParams()), QueryLedger(), torch.Generator().manual_seed(seed)
    agreements, sets = [], []
    for i in chosen:
        info = pool.info(i)
        api = pool.api(i, ledger, white_box=source in ("generator-wb", "deepinversion"))
        labels = torch.arange(len(info.classes)).repeat_interleave(per)
        if source == "real":
            x = torch.cat([split.images[torch.nonzero(split.labels == c).flatten()[:per]]  # type: ignore[attr-defined]
                           for c in info.classes]).float() / 255
        elif source == "noise":
            x = torch.rand(len(labels), 3, info.input_size, info.input_size, generator=g)
        elif source == "deepinversion":
            x = deep_inversion(api, per, info.input_size, iters, g)
        else:
            estimator = WhiteBoxGradient() if source == "generator-wb" else ZOForward(ZOParams(q=q), seed)
            x = GeneratorRecoverer(recovery).recover(api, estimator, per, info.input_size, g).images
        with torch.no_grad():
            probs = api_probs(api.query(x), len(info.classes), api.output)
        agreements.append((probs.argmax(1) == labels).float().mean().item() * 100)
        mem.add(x, torch.tensor(info.classes)[labels], 0)
        sets.append((x, probs))
    return mem, sets, sum(agreements) / len(agreements)


def kd_task(sets: list[tuple[torch.Tensor, torch.Tensor]], per: int, norm: Normalizer, g: torch.Generator,
            permute: bool) -> Task:
    """One API's set as a bi-level KD task: the first half of each class's images as support, the rest as
    query; with `permute`, the API's classes take a random order over the model's outputs."""
    x, probs = sets[int(torch.randint(len(sets), (1,), generator=g))]
    if permute:
        probs = probs[:, torch.randperm(probs.shape[1], generator=g)]
    first = (torch.arange(len(x)) % per) < per // 2
    return Task(norm.from_unit(x[first]), probs[first].argmax(1), norm.from_unit(x[~first]), probs[~first].argmax(1),
                support_t=probs[first], query_t=probs[~first])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", required=True, help="pool hash (dfml-bench pool ls) of a single-domain glyphs conv4 pool")
    ap.add_argument("--source", default="real,noise,generator-wb", help=f"comma-separated, from {SOURCES}")
    ap.add_argument("--per", type=int, default=10, help="images per API class")
    ap.add_argument("--iters", type=int, default=30,
                    help="inversion iterations (generator / deepinversion; 30: the quick profile)")
    ap.add_argument("--train", type=int, default=200, help="meta-iterations (4 tasks each, first-order MAML)")
    ap.add_argument("--episodes", type=int, default=100, help="meta-val episodes (5-way 1-shot)")
    ap.add_argument("--replay-pad", type=int, default=0,
                    help="random translation (pixels) of every replayed image, to test whether diversity helps")
    ap.add_argument("--arch", default=None, help="only the pool's APIs of this architecture (e.g. resnet18), as in "
                                                 "`dfml-bench pool show`")
    ap.add_argument("--apis", type=int, default=None, help="at most this many APIs (default: all chosen)")
    ap.add_argument("--width", type=int, default=32, help="generator width (the quick profile's)")
    ap.add_argument("--lr", type=float, default=0.01, help="generator learning rate (the quick profile's)")
    ap.add_argument("--q", type=int, default=20, help="zo_forward directions (the quick profile's)")
    ap.add_argument("--pad", type=int, default=4, help="random-crop padding of the recovery augmentation, px")
    ap.add_argument("--flip", action="store_true", help="random horizontal flips in the recovery augmentation")
    ap.add_argument("--tv", type=float, default=0.0, help="weight of the generator recoverer's total-variation prior")
    ap.add_argument("--learner", choices=("maml", "kd"), default="maml",
                    help="maml: cross-entropy replay tasks from the memory (the replay half); kd: first-order "
                         "bi-level KD on one API's set against its outputs (the API half)")
    ap.add_argument("--permute", action="store_true",
                    help="--learner kd: draw a random order of the API's classes over the model's outputs per task")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    registry = load_registry()
    pool = APIPool(default_pool_dir() / a.pool, registry, torch.device("cpu"))
    chosen = [i for i in range(len(pool)) if a.arch is None or pool.info(i).architecture == a.arch]
    chosen = chosen[:a.apis] if a.apis else chosen
    if not chosen:
        raise SystemExit(f"pool {a.pool} has no API of architecture '{a.arch}'; see `dfml-bench pool show {a.pool}`.")
    recovery = GeneratorRecovererParams(iterations=a.iters, width=a.width, lr=a.lr, pad=a.pad, flip=a.flip, tv=a.tv)
    dataset = pool.info(0).dataset
    if not dataset.startswith("glyphs-"):
        raise SystemExit(f"the probe reads glyphs pools; pool {a.pool} is on {dataset}.")
    ds = build_glyphs(GlyphsParams(domain=dataset.removeprefix("glyphs-")), None, default_pool_dir().parent)
    norm = Normalizer(ds.mean, ds.std, torch.device("cpu"))
    val = EpisodeSampler(ds.splits["val"], 5, 1, 15, a.seed, norm)
    for source in a.source.split(","):
        if source not in SOURCES:
            raise SystemExit(f"unknown source '{source}'; choose from {', '.join(SOURCES)}.")
        t0 = time.perf_counter()
        mem, sets, agreement = fill_memory(source, pool, chosen, ds.splits["train"], a.per, a.iters, a.seed, recovery, a.q)
        t_fill = time.perf_counter() - t0
        torch.manual_seed(a.seed)
        model = build_conv4(Conv4Params(), 5, ds.image_size)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        learner = BilevelKD(KDParams(inner_steps=5, first_order=True)) if a.learner == "kd" \
            else MAML(MamlParams(first_order=True))
        g = torch.Generator().manual_seed(a.seed + 1)
        before = evaluate(model, val, a.episodes, 10, 0.01)
        for _ in range(a.train):
            params, losses = dict(model.named_parameters()), []
            for _ in range(4):
                if a.learner == "kd":
                    losses.append(learner.task_outcome(model, params, kd_task(sets, a.per, norm, g, a.permute)).loss)
                    continue
                d = mem.sample(5, 1, 15, g)
                xs = torch.cat([norm.from_unit(augment(x.float() / 255, a.replay_pad, False, g)) for x in d.support])
                xq = torch.cat([norm.from_unit(augment(x.float() / 255, a.replay_pad, False, g)) for x in d.query])
                task = Task(xs, torch.arange(5), xq, torch.arange(5).repeat_interleave(15))
                losses.append(learner.task_outcome(model, params, task).loss)
            opt.zero_grad()
            torch.stack(losses).mean().backward()
            opt.step()
        after = evaluate(model, val, a.episodes, 10, 0.01)
        print(json.dumps({"source": source, "seed": a.seed, "learner": a.learner, "permute": a.permute,
                          "arch": a.arch, "apis": len(chosen), "per": a.per, "tv": a.tv, "pad": a.pad,
                          "replay_pad": a.replay_pad, "classes": mem.num_classes(), "api_agreement": round(agreement, 1),
                          "val_before": round(before.accuracy, 2), "val_after": round(after.accuracy, 2),
                          "ci95": round(after.ci95, 2), "fill_s": round(t_fill, 1),
                          "total_s": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
