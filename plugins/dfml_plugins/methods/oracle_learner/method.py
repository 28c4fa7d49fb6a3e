"""`maml_oracle` with the meta-learner named in the method's own params (e.g. `maml_oracle_proto`).

The same oracle (real meta-train episodes, NOT data-free); only the meta-learner differs, chosen
by config (`method.maml_oracle_proto.learner`), so a swapped meta-learner is one registration.
"""

from __future__ import annotations

import torch

from dfml_bench.interfaces import Method, MethodContext
from dfml_plugins.methods.maml_oracle.method import MamlOracle
from dfml_plugins.methods.oracle_learner import OracleLearnerParams


class OracleWithLearner(MamlOracle):
    def __init__(self, params: OracleLearnerParams, context: MethodContext):
        Method.__init__(self, params, context)
        self.samplers = context.real_train_samplers()
        self.meta_learner = context.meta_learner(params.learner)
        self.optimizer = torch.optim.Adam(context.model.parameters(), lr=context.train.meta_lr)
