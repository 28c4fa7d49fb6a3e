"""Per-sample losses on API outputs, shared by recoverers (whatever the API's output mode)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def api_log_probs(scores: torch.Tensor, num_classes: int, output: str) -> torch.Tensor:
    """Log-probabilities from an API's `output` mode: logits [N,K], probs [N,K] or label [N].

    Hard labels (a harder setting than the paper) become a smoothed one-hot so the loss stays finite.
    """
    if output == "label":
        onehot = F.one_hot(scores, num_classes).float()
        return (onehot * 0.9 + 0.1 / num_classes).log()
    if output == "probs":
        return scores.clamp_min(1e-8).log()
    return F.log_softmax(scores, dim=1)


def api_probs(scores: torch.Tensor, num_classes: int, output: str) -> torch.Tensor:
    """Teacher probabilities for distillation, from any output mode."""
    return api_log_probs(scores, num_classes, output).exp()
