"""`maml_oracle`: MAML on the REAL meta-train images. An upper bound, not data-free."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from dfml_bench.interfaces import Method, MethodContext
from dfml_bench.seeding import derive_seed


class MamlOracle(Method):
    """Meta-trains the configured meta-learner on episodes of the scenario's real meta-train split.

    With several datasets (MH) each task's dataset is drawn uniformly.
    """

    def __init__(self, params: Any, context: MethodContext):
        super().__init__(params, context)
        self.samplers = context.real_train_samplers()
        self.meta_learner = context.meta_learner()
        self.optimizer = torch.optim.Adam(context.model.parameters(), lr=context.train.meta_lr)

    def train_step(self, iteration: int) -> Mapping[str, float]:
        ctx = self.context
        model = ctx.model
        model.train()
        params = dict(model.named_parameters())
        batch = ctx.train.meta_batch_size
        losses, accs = [], []
        for b in range(batch):
            index = iteration * batch + b
            pick = derive_seed("dataset", ctx.seed, index) % len(self.samplers)
            outcome = self.meta_learner.task_outcome(model, params, self.samplers[pick].episode(index))
            losses.append(outcome.loss)
            accs.append(outcome.accuracy)
        loss = torch.stack(losses).mean()  # averaged, not summed (reference defect 11)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "train_acc": sum(accs) / len(accs)}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
