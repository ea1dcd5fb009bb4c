"""Direct-training losses over per-step outputs o [T, B, classes]."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def mean_ce_loss(outputs: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of the time-averaged output (plain BPTT, "mean" loss)."""
    return F.cross_entropy(outputs.mean(dim=0), labels)


def tet_loss(outputs: Tensor, labels: Tensor, lamb: float = 1e-3, phi: float = 1.0) -> Tensor:
    """TET (Deng et al. 2022): (1−λ)·mean_t CE(o(t), y) + λ·MSE(o, φ)."""
    steps = outputs.shape[0]
    per_step = F.cross_entropy(outputs.flatten(0, 1), labels.repeat(steps))
    regular = F.mse_loss(outputs, outputs.new_full((), phi).expand_as(outputs))
    return (1 - lamb) * per_step + lamb * regular
