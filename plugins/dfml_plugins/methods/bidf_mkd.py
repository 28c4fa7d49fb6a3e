"""BiDf-MKD (Hu et al., ICML 2023): black-box data-free meta-learning from a pool of APIs.

One meta-iteration is either a batch of API tasks or a batch of replay tasks:

* API task: draw an API (uniformly, with replacement), recover a support set by inverting it
  with the configured estimator and recoverer, query the API ONCE for its outputs on it, adapt
  the meta model by KD on it (inner level), recover a query set (with the boundary term against
  the adapted model once `boundary_start` is reached), and take KD on the query set as the
  outer loss. Both sets enter the replay memory under the API's global class ids (filtered
  by `remember`: all, agreed by the API, or agreed by the API and by another API of the class).
  With `permute` (not in PROTOCOL.md) the API's classes take a random order over the meta
  model's outputs in each task, as MAML shuffles labels, so that the few APIs of a pool do not
  become a few fixed tasks whose label maps the meta model can memorise instead of adapting.
* replay task: a task drawn from the memory, trained with MAML on the recovery labels; or, with
  `replay_tasks=api` (not in PROTOCOL.md), one of the last `keep` API tasks again: bi-level KD
  on its recovered support and query sets against their cached API outputs (no queries); with
  `keep_agreement`, only tasks whose support set the API labels as its targets often enough.
  `replay_first_order` (not in PROTOCOL.md) makes replay tasks of either kind first order;
  `replay_support=shots` (not in PROTOCOL.md) adapts a replayed API task on the run's K shots
  per class of its support set, drawn afresh per replay, instead of on all of them.

The schedule (PROTOCOL.md section 8): the first meta-iteration is an API one; then replay until
the meta-batch's mean train accuracy has not set a new maximum for `patience` meta-iterations,
then one API meta-iteration (counter and maximum reset). `schedule=interval` is the fixed
alternative. Task losses are averaged over the meta-batch.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call

from dfml_bench.data import Task
from dfml_bench.errors import ConfigError
from dfml_bench.images import to_uint8
from dfml_bench.interfaces import Method, MethodContext, RecoveredSet
from dfml_bench.seeding import derive_seed
from dfml_plugins.meta_learners.kd import kd_loss
from dfml_plugins.params import BidfMkdParams
from dfml_plugins.recoverers.api_loss import api_probs


@dataclasses.dataclass
class KeptTask:
    """An API task kept for replay: uint8 support / query images and their cached API outputs."""

    domain: int
    support: torch.Tensor
    support_targets: torch.Tensor
    query: torch.Tensor
    query_targets: torch.Tensor
    support_labels: torch.Tensor | None = None  # target class per support image (None: checkpoints before it)


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
        fo = {"first_order": True} if params.first_order else {}
        replay_fo = {"first_order": True} if self._replay_first_order else {}
        self.estimator = context.component("estimator", params.estimator)
        if self.estimator.needs_white_box and not self.apis.white_box:
            raise ConfigError(f"estimator '{params.estimator}' needs white-box APIs; register the method "
                              "with access='white' or use a zero-order estimator.")
        self.recoverer = context.component("recoverer", params.recoverer)
        self.api_learner = context.component("meta_learner", params.api_learner, **fo)
        self.replay_learner = context.component("meta_learner", params.replay_learner, **replay_fo)
        self.memory = context.component("replay", params.replay)
        self.optimizer = torch.optim.Adam(context.model.parameters(), lr=context.train.meta_lr)
        self.domain_of = {d.name: i for i, d in enumerate(context.scenario.datasets)}
        self.generator = torch.Generator(device=context.device)
        self.generator.manual_seed(derive_seed("bidf_mkd", context.seed))
        self.cpu_generator = torch.Generator().manual_seed(derive_seed("bidf_mkd-replay", context.seed))
        self.best_acc, self.since_best, self.api_next = float("-inf"), 0, True
        self.last_images: torch.Tensor | None = None
        self.kept: deque[KeptTask] = deque(maxlen=params.keep)  # replay_tasks=api: recent API tasks
        self.knowers: dict[int, list[int]] = {}  # global class -> the APIs trained on it (consensus checks)
        for i in range(len(self.apis)):
            for c in self.apis.info(i).classes:
                self.knowers.setdefault(c, []).append(i)

    # -- schedule ---------------------------------------------------------------------------
    def _is_api_iteration(self, iteration: int) -> bool:
        if self.params.replay == "none":  # no replay of either kind (bidf_mkd_no_replay)
            return True
        if not (self.kept if self.params.replay_tasks == "api" else self.memory.can_sample(self.context.ways)):
            return True
        if self.params.schedule == "interval":
            return iteration % max(self.params.interval, 1) == 0
        return self.api_next

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
        loss, acc = self._outer_kd(fast, norm, query.images, query_t[:, order])
        if p.replay_tasks == "api":
            if support.agreement >= p.keep_agreement:
                self.kept.append(KeptTask(domain, to_uint8(support.images), support_t.detach(),
                                          to_uint8(query.images), query_t.detach(), support.labels.cpu()))
        else:
            self._remember(support, index, domain)
            self._remember(query, index, domain)
        self.last_images = support.images.detach().cpu()
        return loss, {"train_acc": acc, "recovery_loss": (support.loss + query.loss) / 2,
                      "agreement": (support.agreement + query.agreement) / 2}

    def _class_order(self) -> torch.Tensor:
        """The API classes' order over the model's outputs for one task: random with `permute`."""
        ways, device = self.context.ways, self.context.device
        if not self.params.permute:
            return torch.arange(ways, device=device)
        return torch.randperm(ways, generator=self.cpu_generator).to(device)

    def _outer_kd(self, fast: dict[str, torch.Tensor], norm: Any, images: torch.Tensor,
                  targets: torch.Tensor) -> tuple[torch.Tensor, float]:
        """KD of the adapted model on a query set: the outer loss and the argmax agreement, %."""
        logits = functional_call(self.context.model, fast, (norm.from_unit(images),))
        return kd_loss(logits, targets), 100.0 * (logits.argmax(1) == targets.argmax(1)).float().mean().item()

    @property
    def _replay_first_order(self) -> bool:
        return self.params.first_order or self.params.replay_first_order

    def _replay_api_task(self, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Bi-level KD again on a kept API task (uniformly drawn), from its cached API outputs."""
        kept = self.kept[int(torch.randint(len(self.kept), (1,), generator=self.cpu_generator))]
        norm, order = self.context.normalizers[kept.domain], self._class_order()
        pick = self._replay_support(kept)
        fast = self.api_learner.adapt(self.context.model, params, norm.from_unit(kept.support[pick].float() / 255),
                                      kept.support_targets[pick][:, order], create_graph=not self._replay_first_order)
        loss, acc = self._outer_kd(fast, norm, kept.query.float() / 255, kept.query_targets[:, order])
        return loss, {"train_acc": acc}

    def _replay_support(self, kept: KeptTask) -> torch.Tensor | slice:
        """Indices of the support images a replay uses: all, or K shots per class drawn afresh."""
        if self.params.replay_support == "all" or kept.support_labels is None:
            return slice(None)
        shots = self.context.shots
        picks = []
        for c in kept.support_labels.unique().tolist():
            members = torch.nonzero(kept.support_labels == c).flatten()
            chosen = torch.randperm(len(members), generator=self.cpu_generator)[:shots]
            picks.append(members[chosen])
        return torch.cat(picks).to(kept.support.device)

    def _remember(self, found: RecoveredSet, index: int, domain: int) -> None:
        """Store a set recovered from API `index` under global class ids, filtered by `remember`:
        agreed keeps the images the API labels as their target (no query); consensus also asks
        one other API trained on the same class (drawn at random) and keeps those it labels so."""
        glob = torch.tensor(self.apis.info(index).classes)[found.labels.cpu()]
        keep = torch.ones(len(glob), dtype=torch.bool) if self.params.remember == "all" else found.agreed().cpu()
        if self.params.remember == "consensus":
            keep &= self._peers_agree(index, found.images, glob, keep)
        if keep.any():
            self.memory.add(found.images[keep.to(found.images.device)], glob[keep], domain)

    def _peers_agree(self, index: int, images: torch.Tensor, glob: torch.Tensor, ask: torch.Tensor) -> torch.Tensor:
        """Per image: does another API that knows its class label it so? True where none knows it."""
        ok = torch.ones(len(glob), dtype=torch.bool)
        for c in glob[ask].unique().tolist():
            peers = [j for j in self.knowers.get(c, []) if j != index]
            if not peers:
                continue
            j = peers[int(torch.randint(len(peers), (1,), generator=self.cpu_generator))]
            sel = ask & (glob == c)
            with torch.no_grad():
                out = self.apis.get(j).query(images[sel.to(images.device)])
            pred = (out if out.dim() == 1 else out.argmax(1)).cpu()
            ok[sel] = torch.tensor(self.apis.info(j).classes)[pred] == c
        return ok

    def _replay_task(self, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        if self.params.replay_tasks == "api":
            return self._replay_api_task(params)
        ctx = self.context
        draw = self.memory.sample(ctx.ways, ctx.shots, ctx.queries, self.cpu_generator)
        size = max(x.shape[-1] for x in draw.support)  # MH mixes resolutions: one size per task
        xs = self._inputs(draw.support, draw.domains, size)
        xq = self._inputs(draw.query, draw.domains, size)
        ys = torch.arange(ctx.ways, device=ctx.device).repeat_interleave(ctx.shots)
        yq = torch.arange(ctx.ways, device=ctx.device).repeat_interleave(ctx.queries)
        outcome = self.replay_learner.task_outcome(ctx.model, params, Task(xs, ys, xq, yq))
        return outcome.loss, {"train_acc": outcome.accuracy}

    def _inputs(self, per_class: list[torch.Tensor], domains: list[int], size: int) -> torch.Tensor:
        """Stored uint8 images -> model inputs, each normalised as its own dataset, at one size."""
        norms = self.context.normalizers
        return torch.cat([norms[d].from_unit(x.to(self.context.device).float().div_(255), size)
                          for x, d in zip(per_class, domains)])

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
        return {"optimizer": self.optimizer.state_dict(), "memory": self.memory.state_dict(),
                "schedule": [self.best_acc, self.since_best, self.api_next],
                "generator": self.generator.get_state(), "cpu_generator": self.cpu_generator.get_state(),
                # the estimator's own seeded generators (zero-order directions), when it has any
                "estimator": self.estimator.state_dict() if hasattr(self.estimator, "state_dict") else {},
                "last_images": self.last_images, "kept": [dataclasses.astuple(k) for k in self.kept]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.memory.load_state_dict(state["memory"])
        self.best_acc, self.since_best, self.api_next = state["schedule"]
        self.generator.set_state(state["generator"].cpu())  # generator states are CPU byte tensors
        self.cpu_generator.set_state(state["cpu_generator"].cpu())
        if state.get("estimator") and hasattr(self.estimator, "load_state_dict"):
            self.estimator.load_state_dict(state["estimator"])
        self.kept.clear()
        self.kept.extend(KeptTask(*k) for k in state.get("kept", []))
        last = state.get("last_images")
        self.last_images = last.cpu() if last is not None else None

    def save_artifacts(self, run_dir: Path) -> None:
        """A PNG grid of the last recovered support set."""
        if self.last_images is not None:
            from dfml_bench.images import save_grid

            save_grid(self.last_images, run_dir / "recovered.png", nrow=self.params.per_class)

