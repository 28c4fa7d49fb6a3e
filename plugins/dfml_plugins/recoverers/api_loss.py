"""Per-sample losses on API outputs, shared by recoverers (whatever the API's output mode)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def api_log_probs(scores: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Log-probabilities from logits [N,K], probabilities [N,K] or hard labels [N] (smoothed one-hot)."""
    if scores.dim() == 1:  # hard labels: a harder setting than the paper; smooth to keep the loss finite
        onehot = F.one_hot(scores, num_classes).float()
        return (onehot * 0.9 + 0.1 / num_classes).log()
    if torch.all(scores >= 0) and torch.allclose(scores.sum(1), torch.ones(1, device=scores.device), atol=1e-4):
        return scores.clamp_min(1e-8).log()
    return F.log_softmax(scores, dim=1)


def api_probs(scores: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Teacher probabilities for distillation, from any output mode."""
    return api_log_probs(scores, num_classes).exp()
