"""`random`: the randomly initialised meta model, adapted only at test time."""

from __future__ import annotations

from collections.abc import Mapping

from dfml_bench.interfaces import Method


class RandomInit(Method):
    """Nothing to train: the runner evaluates the seed's random initialisation."""

    trains = False

    def train_step(self, iteration: int) -> Mapping[str, float]:
        raise RuntimeError("the random method has no training step")
