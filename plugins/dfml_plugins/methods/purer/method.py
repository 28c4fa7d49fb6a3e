"""PURER (Hu et al., 2023), white-box data-free meta-learning (docs/protocol.md section 10).

Every task of a meta-iteration draws an API (uniformly, with replacement) and takes ONE inversion
step on that API's learnable images (the `deepinversion` recoverer keeps them between visits);
an episode (K shots + Q queries per class, drawn from the API's current images, labelled by the
API's output positions) then trains the meta model with the configured meta-learner (MAML by
default, second order unless `first_order`). Task losses are averaged over the meta-batch. With
`permute` (off by default) each episode maps the API's classes onto the outputs in a random
order, as MAML shuffles labels; otherwise class i of the API is output i.

Adversarial episode curriculum: from `curriculum_start` on, the inversion step gets a student
- the meta model adapted (first order, no graph) on the first K images per class of the images
being inverted - and pushes the images toward where that adapted model errs while the API
still labels them right, so episodes get harder as the meta model improves.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call

from dfml_bench.data import Task
from dfml_bench.errors import ConfigError
from dfml_bench.interfaces import Method, MethodContext
from dfml_bench.seeding import derive_seed
from dfml_plugins.methods.purer import PurerParams


class Purer(Method):
    def __init__(self, params: PurerParams, context: MethodContext):
        super().__init__(params, context)
        self.apis = context.apis()
        if len({len(self.apis.info(i).classes) for i in range(len(self.apis))} | {context.ways}) != 1:
            raise ConfigError(f"PURER builds {context.ways}-way episodes from each API's classes; set "
                              f"scenario.classes_per_api={context.ways}.")
        fo = {"first_order": True} if params.first_order else {}
        self.learner = context.component("meta_learner", params.learner, **fo)
        self.recoverer = context.component("recoverer", params.recoverer)
        self.optimizer = torch.optim.Adam(context.model.parameters(), lr=context.train.meta_lr)
        self.domain_of = {d.name: i for i, d in enumerate(context.scenario.datasets)}
        self.generator = torch.Generator(device=context.device)
        self.generator.manual_seed(derive_seed("purer", context.seed))
        self.cpu_generator = torch.Generator().manual_seed(derive_seed("purer-tasks", context.seed))
        self.last_images: torch.Tensor | None = None

    def _student(self, norm: Any, params: dict[str, torch.Tensor]) -> Any:
        """x ([0,1], K*per_class in class order) -> logits of the meta model adapted on x's first K shots."""
        ctx, per = self.context, self.params.per_class
        idx = torch.arange(ctx.ways, device=ctx.device).mul(per).unsqueeze(1) + torch.arange(
            min(ctx.shots, per), device=ctx.device)
        ys = torch.arange(ctx.ways, device=ctx.device).repeat_interleave(idx.shape[1])

        def student(x: torch.Tensor) -> torch.Tensor:
            inputs = norm.from_unit(x)
            with torch.enable_grad():
                leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
                fast = self.learner.adapt(ctx.model, leaves, inputs[idx.flatten()].detach(), ys, create_graph=False)
            return functional_call(ctx.model, {k: v.detach() for k, v in fast.items()}, (inputs,))

        return student

    def _episode(self, images: torch.Tensor, norm: Any) -> Task:
        ctx, per = self.context, self.params.per_class
        need = ctx.shots + ctx.queries
        picks = []
        for c in range(ctx.ways):
            if per >= need:
                local = torch.randperm(per, generator=self.cpu_generator)[:need]
            else:  # fewer learnable images than an episode needs: with replacement
                local = torch.randint(per, (need,), generator=self.cpu_generator)
            picks.append(c * per + local)
        pick = torch.stack(picks).to(ctx.device)  # [ways, shots + queries]
        x = norm.from_unit(images)
        # API class c -> output label[c]: the API's own order, or one drawn per episode with `permute`
        label = (torch.randperm(ctx.ways, generator=self.cpu_generator) if self.params.permute
                 else torch.arange(ctx.ways)).to(ctx.device)
        ys = label.repeat_interleave(ctx.shots)
        yq = label.repeat_interleave(ctx.queries)
        return Task(x[pick[:, :ctx.shots].flatten()], ys, x[pick[:, ctx.shots:].flatten()], yq)

    def train_step(self, iteration: int) -> Mapping[str, float]:
        ctx, p = self.context, self.params
        ctx.model.train()
        params = dict(ctx.model.named_parameters())
        losses, accs, agreements, inv_losses = [], [], [], []
        for _ in range(ctx.train.meta_batch_size):
            index = self.apis.sample(self.cpu_generator)
            info, api = self.apis.info(index), self.apis.get(index)
            norm = ctx.normalizers[self.domain_of[info.dataset]]
            student = self._student(norm, params) if p.curriculum and iteration >= p.curriculum_start else None
            rec = self.recoverer.recover(api, None, p.per_class, info.input_size, self.generator, student)
            outcome = self.learner.task_outcome(ctx.model, params, self._episode(rec.images, norm))
            losses.append(outcome.loss)
            accs.append(outcome.accuracy)
            agreements.append(rec.agreement)
            inv_losses.append(rec.loss)
            self.last_images = rec.images.detach().cpu()
        loss = torch.stack(losses).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        n = len(losses)
        return {"loss": loss.item(), "train_acc": sum(accs) / n, "agreement": sum(agreements) / n,
                "recovery_loss": sum(inv_losses) / n, "queries": float(self.apis.queries_used)}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "recoverer": self.recoverer.state_dict(),
                "generator": self.generator.get_state(), "cpu_generator": self.cpu_generator.get_state(),
                "last_images": self.last_images}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.recoverer.load_state_dict(state["recoverer"])
        self.generator.set_state(state["generator"].cpu())  # generator states are CPU byte tensors
        self.cpu_generator.set_state(state["cpu_generator"].cpu())
        last = state.get("last_images")
        self.last_images = last.cpu() if last is not None else None

    def save_artifacts(self, run_dir: Path) -> None:
        """A PNG grid of the last inverted images."""
        if self.last_images is not None:
            from dfml_bench.images import save_grid

            save_grid(self.last_images, run_dir / "recovered.png", nrow=self.params.per_class)
