"""RCS regulariser (method §3): pushes early-timestep representations toward late ones.

Training loop:

    with record_activations() as records:
        outputs = net(frames)                      # [T, B, classes]
    loss = tet_loss(outputs, labels) + alpha * rcs_loss(records, outputs, labels)

SNN records (direct training) use the spiking form, ANN records (QCFS, for conversion) the ANN
form. Both reduce as L = (1/L) Σ_l max_b m_b·R_b^l over correctly classified samples b.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from spikecut.errors import ConfigError
from spikecut.models.neurons import ActivationRecords, PreActivation, SpikeRecord

DEFAULT_ALPHA = 0.002
DEFAULT_RCS_N = 0.3
EPS = 1e-5


def tail_length(steps: int, fraction: float = DEFAULT_RCS_N) -> int:
    """⌊fraction·T⌋ timesteps, or all T when that is 0 (as a Python [-0:] slice would)."""
    return math.floor(fraction * steps) or steps


def snn_penalty(record: SpikeRecord, fraction: float = DEFAULT_RCS_N) -> Tensor:
    """R_b = 1 / (mean_t cos(r(t), r_ref) + 1e-5) per sample, r(t) = s(t) + ReLU(u(t)/θ), r_ref
    the stop-gradient mean of r over the last ⌊fraction·T⌋ steps. Returns [B]."""
    r = record.spikes + torch.relu(record.membrane / record.threshold)
    r = r.flatten(2)  # [T, B, F]
    ref = r[-tail_length(r.shape[0], fraction) :].mean(dim=0).detach()  # [B, F]
    dot = (r * ref).sum(dim=-1)
    norms = torch.sqrt((r * r).sum(dim=-1) + EPS) * torch.sqrt((ref * ref).sum(dim=-1) + EPS)
    return 1.0 / ((dot / norms).mean(dim=0) + EPS)


def ann_penalty(record: PreActivation) -> Tensor:
    """R_b = max(ReLU(x) over the whole batch) / sqrt(mean(ReLU(x_b)²) + 1e-5). Returns [B].

    The per-sample mean runs over every non-batch value, time included (T = 1 for static images).
    """
    x = torch.relu(record.x).transpose(0, 1).flatten(1)  # [B, T·F]
    return x.max() / torch.sqrt((x * x).mean(dim=1) + EPS)


def snn_correct_mask(outputs: Tensor, labels: Tensor, fraction: float = DEFAULT_RCS_N) -> Tensor:
    """1 where the per-step output o(t) is right at every one of the last ⌊fraction·T⌋ steps."""
    tail = outputs[-tail_length(outputs.shape[0], fraction) :]
    return (tail.argmax(dim=-1) == labels).all(dim=0).detach()


def ann_correct_mask(outputs: Tensor, labels: Tensor) -> Tensor:
    """1 where the ANN's time-averaged output is right (T = 1 for static images)."""
    return (outputs.mean(dim=0).argmax(dim=-1) == labels).detach()


def reduce_penalties(penalties: Tensor, mask: Tensor) -> Tensor:
    """(1/L) Σ_l max_b mask_b · R_b^l for penalties [B, L] and a boolean mask [B]."""
    return (penalties * mask.to(penalties.dtype)[:, None]).max(dim=0).values.mean()


def rcs_loss(
    records: ActivationRecords, outputs: Tensor, labels: Tensor, fraction: float = DEFAULT_RCS_N
) -> Tensor:
    """L_reg for one forward pass; multiply by α (default 0.002) and add to the task loss."""
    layers = records.layers
    if not layers:
        raise ConfigError(
            "rcs_loss: no activations were recorded (run the forward pass inside "
            "record_activations())"
        )
    if all(isinstance(rec, SpikeRecord) for rec in layers):
        penalties = torch.stack([snn_penalty(rec, fraction) for rec in layers], dim=1)
        mask = snn_correct_mask(outputs, labels, fraction)
    elif all(isinstance(rec, PreActivation) for rec in layers):
        penalties = torch.stack([ann_penalty(rec) for rec in layers], dim=1)
        mask = ann_correct_mask(outputs, labels)
    else:
        raise ConfigError("rcs_loss: records mix spiking and ANN layers (two models recorded?)")
    return reduce_penalties(penalties, mask)
