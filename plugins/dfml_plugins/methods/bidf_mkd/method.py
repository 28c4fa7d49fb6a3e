"""BiDf-MKD (Hu et al., ICML 2023): black-box data-free meta-learning from a pool of APIs.

One meta-iteration is either a batch of API tasks or a batch of replay tasks:

* API task: draw an API (uniformly, with replacement), recover a support set by inverting it
  with the configured estimator and recoverer, query the API ONCE for its outputs on it, adapt
  the meta model by KD on it (inner level), recover a query set (with the boundary term against
  the adapted model once `boundary_start` is reached), and take KD on the query set as the
  outer loss. The replay strategy then keeps what it replays of the task. With `permute` (not
  in docs/protocol.md) the API's classes take a random order over the meta model's outputs in each
  task, as MAML shuffles labels, so that the few APIs of a pool do not become a few fixed tasks
  whose label maps the meta model can memorise instead of adapting.
* replay task: drawn by the replay strategy without queries: labelled images (`task_memory`,
  docs/protocol.md: classes mixed across APIs, trained by the replay learner on the recovery
  labels) or a kept API task with its cached API outputs (`api_tasks`: bi-level KD again).

The schedule (docs/protocol.md section 8): the first meta-iteration is an API one; then replay until
the meta-batch's mean train accuracy has not set a new maximum for `patience` meta-iterations,
then one API meta-iteration (counter and maximum reset). Task losses are averaged over the
meta-batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call

from dfml_bench.data import Task
from dfml_bench.errors import ConfigError
from dfml_bench.interfaces import ApiTask, Method, MethodContext
from dfml_bench.seeding import derive_seed
from dfml_plugins.meta_learners.kd.learner import kd_loss
from dfml_plugins.methods.bidf_mkd import BidfMkdParams
from dfml_plugins.recoverers.api_loss import api_probs


def inference_weights(weights: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Detached weights for no-grad forwards of the meta model on many images (the boundary term's
    student sees every point of every ZO call). On CPU the conv kernels go channels-last, which
    the convolutions then follow: 2-2.4x faster student forwards on conv4 (benchmarks/bidf_iteration.py)."""
    channels_last = device.type == "cpu"
    return {k: v.detach().contiguous(memory_format=torch.channels_last) if channels_last and v.dim() == 4
            else v.detach() for k, v in weights.items()}


class BidfMkd(Method):
    def __init__(self, params: BidfMkdParams, context: MethodContext):
        super().__init__(params, context)
        self.apis = context.apis()
        if len({len(self.apis.info(i).classes) for i in range(len(self.apis))} | {context.ways}) != 1:
            raise ConfigError(f"BiDf-MKD distils K-way APIs into {context.ways}-way tasks; set "
                              f"scenario.classes_per_api={context.ways}.")
        self.estimator = context.component("estimator", params.estimator)
        if self.estimator.needs_white_box and not self.apis.white_box:
            raise ConfigError(f"estimator '{params.estimator}' needs white-box APIs; register the method "
                              "with access='white' or use a zero-order estimator.")
        self.recoverer = context.component("recoverer", params.recoverer)
        if self.recoverer.needs_real_images:  # the transfer probe (bidf_mkd_real); refused to data-free methods
            self.recoverer.use_real_images(context.real_class_images())
        # `first_order` is the one switch of both inner loops: it replaces the learners' own
        self.api_learner = context.component("meta_learner", params.api_learner, first_order=params.first_order)
        self.replay_learner = context.component("meta_learner", params.replay_learner,
                                                first_order=params.first_order)
        self.replay = context.component("replay", params.replay)
        self.optimizer = torch.optim.Adam(context.model.parameters(), lr=context.train.meta_lr)
        self.domain_of = {d.name: i for i, d in enumerate(context.scenario.datasets)}
        self.generator = torch.Generator(device=context.device)
        self.generator.manual_seed(derive_seed("bidf_mkd", context.seed))
        self.cpu_generator = torch.Generator().manual_seed(derive_seed("bidf_mkd-replay", context.seed))
        self.best_acc, self.since_best, self.api_next = float("-inf"), 0, True
        self.last_images: torch.Tensor | None = None

    # -- schedule ---------------------------------------------------------------------------
    def _is_api_iteration(self, iteration: int) -> bool:
        """Whether meta-iteration `iteration` is an API one: by the schedule, or for want of replay tasks."""
        return self.api_next or not self.replay.ready(self.context.ways)

    def _update_schedule(self, was_api: bool, train_acc: float) -> None:
        if was_api:
            self.best_acc, self.since_best, self.api_next = float("-inf"), 0, False
            return
        if train_acc > self.best_acc:
            self.best_acc, self.since_best = train_acc, 0
        else:
            self.since_best += 1
        self.api_next = self.since_best >= self.params.patience

    # -- tasks ------------------------------------------------------------------------------
    def _api_task(self, iteration: int, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        ctx, p = self.context, self.params
        index = self.apis.sample(self.cpu_generator)
        info, api = self.apis.info(index), self.apis.get(index)
        domain = self.domain_of[info.dataset]
        norm = ctx.normalizers[domain]
        model = ctx.model
        support = self.recoverer.recover(api, self.estimator, p.per_class, info.input_size, self.generator)
        support_t = api_probs(support.scores, ctx.ways, api.output)  # queried once, cached for all inner steps
        order = self._class_order()  # model output j <- API class order[j]
        sx = norm.from_unit(support.images)
        fast = self.api_learner.adapt(model, params, sx, support_t[:, order], create_graph=not p.first_order)
        student = None
        if p.boundary and iteration >= p.boundary_start:
            frozen = inference_weights(fast, ctx.device)
            api_order = torch.argsort(order)  # the student's logits in the API's class order

            def student(x: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    return functional_call(model, frozen, (norm.from_unit(x),))[:, api_order]

        query = self.recoverer.recover(api, self.estimator, p.per_class, info.input_size, self.generator, student)
        query_t = api_probs(query.scores, ctx.ways, api.output)
        logits = functional_call(model, fast, (norm.from_unit(query.images),))
        targets = query_t[:, order]
        loss, acc = kd_loss(logits, targets), _agreement(logits, targets)
        self.replay.observe(ApiTask(tuple(info.classes), domain, support, support_t.detach(), query,
                                    query_t.detach()))
        self.last_images = support.images.detach().cpu()
        return loss, {"train_acc": acc, "recovery_loss": (support.loss + query.loss) / 2,
                      "agreement": (support.agreement + query.agreement) / 2}

    def _class_order(self) -> torch.Tensor:
        """The API classes' order over the model's outputs for one task: random with `permute`."""
        ways, device = self.context.ways, self.context.device
        if not self.params.permute:
            return torch.arange(ways, device=device)
        return torch.randperm(ways, generator=self.cpu_generator).to(device)

    def _replay_task(self, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """A replay task drawn by the strategy: distilled from its targets when it has them (bi-level
        KD with the API learner), else trained by the replay learner on its class labels."""
        ctx = self.context
        draw = self.replay.draw(ctx.ways, ctx.shots, ctx.queries, self.cpu_generator, self._class_order)
        size = max(x.shape[-1] for x in draw.support)  # MH mixes resolutions: one size per task
        xs = self._inputs(draw.support, draw.domains, size)
        xq = self._inputs(draw.query, draw.domains, size)
        if draw.support_targets is not None and draw.query_targets is not None:
            fast = self.api_learner.adapt(ctx.model, params, xs, draw.support_targets,
                                          create_graph=not self.params.first_order)
            logits = functional_call(ctx.model, fast, (xq,))
            return kd_loss(logits, draw.query_targets), {"train_acc": _agreement(logits, draw.query_targets)}
        ys = torch.cat([torch.full((len(x),), c, device=ctx.device) for c, x in enumerate(draw.support)])
        yq = torch.cat([torch.full((len(x),), c, device=ctx.device) for c, x in enumerate(draw.query)])
        outcome = self.replay_learner.task_outcome(ctx.model, params, Task(xs, ys, xq, yq))
        return outcome.loss, {"train_acc": outcome.accuracy}

    def _inputs(self, chunks: list[torch.Tensor], domains: list[int], size: int) -> torch.Tensor:
        """Stored uint8 images -> model inputs, each chunk normalised as its own dataset, at one size."""
        norms = self.context.normalizers
        return torch.cat([norms[d].from_unit(x.to(self.context.device).float().div_(255), size)
                          for x, d in zip(chunks, domains)])

    # -- one meta-iteration --------------------------------------------------------------------
    def train_step(self, iteration: int) -> Mapping[str, float]:
        ctx = self.context
        ctx.model.train()
        params = dict(ctx.model.named_parameters())
        was_api = self._is_api_iteration(iteration)
        losses, stats = [], []
        for _ in range(ctx.train.meta_batch_size):
            loss, st = self._api_task(iteration, params) if was_api else self._replay_task(params)
            losses.append(loss)
            stats.append(st)
        loss = torch.stack(losses).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        out = {k: sum(s[k] for s in stats) / len(stats) for k in stats[0]}
        self._update_schedule(was_api, out["train_acc"])
        out.update(loss=loss.item(), api_task=float(was_api), queries=float(self.apis.queries_used))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "replay": self.replay.state_dict(),
                "schedule": [self.best_acc, self.since_best, self.api_next],
                "generator": self.generator.get_state(), "cpu_generator": self.cpu_generator.get_state(),
                # the estimator's own seeded generators (zero-order directions), when it has any
                "estimator": self.estimator.state_dict(),
                "last_images": self.last_images}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.replay.load_state_dict(state["replay"])
        self.best_acc, self.since_best, self.api_next = state["schedule"]
        self.generator.set_state(state["generator"].cpu())  # generator states are CPU byte tensors
        self.cpu_generator.set_state(state["cpu_generator"].cpu())
        if state.get("estimator"):
            self.estimator.load_state_dict(state["estimator"])
        last = state.get("last_images")
        self.last_images = last.cpu() if last is not None else None

    def save_artifacts(self, run_dir: Path) -> None:
        """A PNG grid of the last recovered support set."""
        if self.last_images is not None:
            from dfml_bench.images import save_grid

            save_grid(self.last_images, run_dir / "recovered.png", nrow=self.params.per_class)


def _agreement(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """% of images on which the model's argmax is the teacher's."""
    return 100.0 * (logits.argmax(1) == targets.argmax(1)).float().mean().item()
