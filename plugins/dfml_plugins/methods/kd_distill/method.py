"""`kd`: data-free multi-teacher knowledge distillation, no meta-learning.

Each recovery draws an API (uniformly, with replacement) and inverts it with the same estimator
and recoverer BiDf-MKD uses (generator + zero-order by default: black box); the API is queried
once on the kept images and its outputs are cached. The meta model's features feed a distillation
head over ALL global classes of the pool; each set is distilled with KL(p_api || p_student)
restricted to that API's classes (softmax over the student's logits of those classes only).
Recovery happens every `recover_every` meta-iterations (meta_batch_size sets); in between, the
kept sets are distilled again at no query cost. No inner loop: the meta model is only adapted at
test time, like every method, from its distilled features (its own K-way head is not trained).
This isolates what BiDf-MKD's bi-level meta structure adds over plain distillation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfml_bench.interfaces import Method, MethodContext
from dfml_bench.seeding import derive_seed
from dfml_plugins.meta_learners.kd.learner import kd_loss
from dfml_plugins.methods.kd_distill import KDDistillParams
from dfml_plugins.models.head import features, head
from dfml_plugins.recoverers.api_loss import api_probs


class KDDistill(Method):
    def __init__(self, params: KDDistillParams, context: MethodContext):
        super().__init__(params, context)
        self.apis = context.apis()
        self.estimator = context.component("estimator", params.estimator)
        self.recoverer = context.component("recoverer", params.recoverer)
        num_global = 1 + max(max(self.apis.info(i).classes) for i in range(len(self.apis)))
        with torch.random.fork_rng(devices=[]):  # a seeded head that leaves the global RNG alone
            torch.manual_seed(derive_seed("kd-head", context.seed))
            self.head = nn.Linear(head(context.model).in_features, num_global).to(context.device)
        self.optimizer = torch.optim.Adam(list(context.model.parameters()) + list(self.head.parameters()),
                                          lr=context.train.meta_lr)
        self.domain_of = {d.name: i for i, d in enumerate(context.scenario.datasets)}
        self.generator = torch.Generator(device=context.device)
        self.generator.manual_seed(derive_seed("kd", context.seed))
        self.cpu_generator = torch.Generator().manual_seed(derive_seed("kd-sets", context.seed))
        #: kept sets: (images in [0,1], global class ids of the API's outputs, teacher probs, domain)
        self.kept: deque[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = deque(maxlen=params.keep)
        self.last_images: torch.Tensor | None = None

    def _recover(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        index = self.apis.sample(self.cpu_generator)
        info, api = self.apis.info(index), self.apis.get(index)
        rec = self.recoverer.recover(api, self.estimator, self.params.per_class, info.input_size, self.generator)
        probs = api_probs(rec.scores, len(info.classes), api.output)
        self.last_images = rec.images.detach().cpu()
        entry = (rec.images.detach(), torch.tensor(info.classes, device=rec.images.device), probs.detach(),
                 self.domain_of[info.dataset])
        self.kept.append(entry)
        return entry

    def distill_loss(self, images: torch.Tensor, classes: torch.Tensor, probs: torch.Tensor,
                     domain: int) -> torch.Tensor:
        """KL(p_api || softmax of the student's logits on the API's classes), batch mean."""
        ctx = self.context
        feats = features(ctx.model, dict(ctx.model.named_parameters()), ctx.normalizers[domain].from_unit(images))
        return kd_loss(self.head(feats)[:, classes], probs, self.params.temperature)

    def train_step(self, iteration: int) -> Mapping[str, float]:
        ctx = self.context
        ctx.model.train()
        batch = ctx.train.meta_batch_size
        recovering = iteration % self.params.recover_every == 0 or not self.kept
        if recovering:
            sets = [self._recover() for _ in range(batch)]
        else:
            pick = torch.randint(len(self.kept), (batch,), generator=self.cpu_generator).tolist()
            sets = [self.kept[i] for i in pick]
        losses = [self.distill_loss(*s) for s in sets]
        loss = torch.stack(losses).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "api_task": float(recovering), "queries": float(self.apis.queries_used)}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "head": self.head.state_dict(),
                "kept": [list(s) for s in self.kept],
                "generator": self.generator.get_state(), "cpu_generator": self.cpu_generator.get_state(),
                "last_images": self.last_images,
                "estimator": self.estimator.state_dict() if hasattr(self.estimator, "state_dict") else {}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.kept.clear()
        self.kept.extend((x, c, p, int(d)) for x, c, p, d in state["kept"])
        self.generator.set_state(state["generator"].cpu())  # generator states are CPU byte tensors
        self.cpu_generator.set_state(state["cpu_generator"].cpu())
        last = state.get("last_images")
        self.last_images = last.cpu() if last is not None else None
        if state.get("estimator") and hasattr(self.estimator, "load_state_dict"):
            self.estimator.load_state_dict(state["estimator"])

    def save_artifacts(self, run_dir: Path) -> None:
        """A PNG grid of the last recovered set."""
        if self.last_images is not None:
            from dfml_bench.images import save_grid

            save_grid(self.last_images, run_dir / "recovered.png", nrow=self.params.per_class)
