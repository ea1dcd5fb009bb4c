"""Cutoff rules: when may a stream stop early (method §2)?

Everything here works on *cumulative* outputs Y(t) = Σ_{τ≤t} o(τ) (see `network.cumulative`);
timesteps are 1-based like the paper's t̂ (t = 1 after the first step, T at the last).

Online, per stream: `rule.should_stop(t, y_t)` with y_t = Y(t) [classes] (`state.y[i]` in the
stepwise runner) returns a `StopCheck` that is truthy when the stream may stop. Offline, over stored
outputs: `rule.stop_steps(y)` with y [T, N, classes] gives the same stop step for every sample.
`evaluate_stops` turns stop steps into accuracy / mean timesteps / reduction factor, and
`oct_steps` is the label-aware oracle every rule is measured against.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from spikecut.errors import ConfigError
from spikecut.models.network import StepNet, cumulative
from spikecut.models.neurons import calibration_dropout

CALIBRATION_DROPOUT = 0.3
GRID_POINTS = 100
_NUMPY_FLOATS = (torch.float32, torch.float64)


def topk_gap(y: Tensor) -> Tensor:
    """Top₁(Y) − Top₂(Y) over the last (class) axis of raw cumulative outputs."""
    top = torch.topk(y, 2, dim=-1).values
    return top[..., 0] - top[..., 1]


def stream_gap(y_t: Tensor) -> float:
    """`topk_gap` of one stream's Y(t) [classes], bit for bit, as a float. Taken after every step
    of every stream: on CPU a numpy sort of 10-odd classes costs ~1 µs against ~15 µs of torch
    dispatch, and subtracts the same two values in the same dtype."""
    if y_t.device.type != "cpu" or y_t.dtype not in _NUMPY_FLOATS or y_t.shape[-1] < 2:
        return float(topk_gap(y_t))
    top = np.sort(y_t.detach().numpy())
    return float(top[-1] - top[-2])


def max_softmax(y: Tensor) -> Tensor:
    """Largest softmax probability of Y over the class axis (float64)."""
    return torch.softmax(y.double(), dim=-1).max(dim=-1).values


def softmax_entropy(y: Tensor) -> Tensor:
    """Entropy (nats) of softmax(Y) over the class axis (float64)."""
    logp = torch.log_softmax(y.double(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def oct_steps(y: Tensor, labels: Tensor) -> Tensor:
    """Optimal cutoff timestep g per sample: the first t after which argmax Y stays right, and T
    for samples wrong at T (so OCT accuracy equals the accuracy at T). y [T, N, C] cumulative,
    labels [N] → [N] int64, 1-based."""
    correct = y.argmax(dim=-1) == labels.to(y.device)  # [T, N]
    suffix = correct.flip(0).to(torch.int64).cumprod(dim=0).flip(0)  # P_t = Π_{t'≥t} c_t'
    suffix[-1] = 1  # P_T forced to 1: a sample wrong at T has P_t = 0 for every t < T
    return suffix.argmax(dim=0) + 1


def accuracy_per_step(y: Tensor, labels: Tensor) -> Tensor:
    """Accuracy of argmax Y(t) at every t: the fixed-timestep baseline curve [T]."""
    return (y.argmax(dim=-1) == labels.to(y.device)).double().mean(dim=1)


@dataclass(frozen=True)
class StopCheck:
    """One online decision. Truthy when the stream may stop. `forced` means t reached T; `score`
    is the rule's statistic at t and `threshold` what it was compared with (NaN if unused)."""

    stop: bool
    forced: bool
    score: float
    threshold: float

    def __bool__(self) -> bool:
        return self.stop


class CutoffRule:
    """A stopping rule over cumulative outputs, with a horizon of `timesteps` steps.

    Subclasses define `_score` (per-sample statistic, any leading shape) and `_crossed`
    (elementwise comparison with the threshold at 1-based step t); online and offline decisions
    both go through these two, so they agree exactly.
    """

    name = ""

    def __init__(self, timesteps: int) -> None:
        if int(timesteps) < 1:
            raise ConfigError(f"{self.name} cutoff: timesteps={timesteps!r} must be >= 1")
        self.timesteps = int(timesteps)

    def _score(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def _threshold(self, t: int) -> float:
        raise NotImplementedError

    def _crossed(self, score: Tensor, threshold: Tensor) -> Tensor:
        return score > threshold

    def should_stop(self, t: int, y_t: Tensor) -> StopCheck:
        """Decide for one stream after its t-th step (1-based); y_t = Y(t), shape [classes]."""
        if t < 1:
            raise ValueError(f"t={t}: timesteps are 1-based")
        if y_t.dim() != 1:
            raise ValueError(f"y_t must be one stream's Y(t) [classes], got {list(y_t.shape)}")
        forced = t >= self.timesteps
        score = self._online_score(y_t.detach())
        if t > self.timesteps:
            return StopCheck(True, True, score, math.nan)
        threshold = self._threshold(t)
        crossed = bool(self._crossed(score, threshold))  # float64 on both sides, as offline
        return StopCheck(crossed or forced, forced and not crossed, score, threshold)

    def _online_score(self, y_t: Tensor) -> float:
        """`_score` of one stream's Y(t) as a Python float (float64, like the tensor path)."""
        return float(self._score(y_t[None])[0])

    def stop_steps(self, y: Tensor) -> Tensor:
        """Vectorised `should_stop` over stored cumulative outputs y [T, N, C] → [N] (1-based)."""
        if y.dim() != 3 or y.shape[0] != self.timesteps:
            raise ValueError(
                f"{self.name} cutoff: expected y [T={self.timesteps}, N, classes], "
                f"got {list(y.shape)}"
            )
        score = self._score(y.detach().flatten(0, 1)).view(y.shape[0], y.shape[1])
        thresholds = torch.tensor(
            [self._threshold(t) for t in range(1, self.timesteps + 1)], dtype=torch.float64
        ).to(y.device)
        crossed = self._crossed(score, thresholds[:, None])
        crossed[-1] = True
        return crossed.to(torch.int8).argmax(dim=0) + 1

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


class TopKRule(CutoffRule):
    """The paper's rule: stop at the first t with Top₁(Y(t)) − Top₂(Y(t)) > β[t], else at T."""

    name = "topk"

    def __init__(self, beta: Sequence[float] | Tensor, epsilon: float | None = None) -> None:
        values = [float(b) for b in (beta.tolist() if isinstance(beta, Tensor) else beta)]
        super().__init__(len(values))
        if not all(math.isfinite(b) for b in values):
            raise ConfigError(f"topk cutoff: beta must be finite numbers, got {values}")
        self.beta = values
        self.epsilon = epsilon

    def _score(self, y: Tensor) -> Tensor:
        return topk_gap(y).double()

    def _online_score(self, y_t: Tensor) -> float:
        return stream_gap(y_t)

    def _threshold(self, t: int) -> float:
        return self.beta[t - 1]

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.name, "beta": list(self.beta), "epsilon": self.epsilon}


class FixedStepRule(CutoffRule):
    """Stop every stream at step `step` (the "accuracy at t" baseline). Its score is a constant 0
    and its threshold +inf before `step`, −inf from `step` on."""

    name = "fixed"

    def __init__(self, step: int, timesteps: int) -> None:
        super().__init__(timesteps)
        if not 1 <= int(step) <= self.timesteps:
            raise ConfigError(f"fixed cutoff: step={step!r} must be in 1..{self.timesteps}")
        self.step = int(step)

    def _score(self, y: Tensor) -> Tensor:
        return torch.zeros(y.shape[:-1], dtype=torch.float64, device=y.device)

    def _threshold(self, t: int) -> float:
        return -math.inf if t >= self.step else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.name, "step": self.step, "timesteps": self.timesteps}


class ConfidenceRule(CutoffRule):
    """Stop when max softmax(Y(t)) > `threshold` (the library's `conf`, threshold = 1 − ε)."""

    name = "confidence"

    def __init__(self, threshold: float, timesteps: int) -> None:
        super().__init__(timesteps)
        if not 0 <= threshold <= 1:
            raise ConfigError(f"confidence cutoff: threshold={threshold!r} must be in [0, 1]")
        self.threshold = float(threshold)

    def _score(self, y: Tensor) -> Tensor:
        return max_softmax(y)

    def _threshold(self, t: int) -> float:
        return self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.name, "threshold": self.threshold, "timesteps": self.timesteps}


class EntropyRule(CutoffRule):
    """Stop when the entropy of softmax(Y(t)) drops below `threshold` nats."""

    name = "entropy"

    def __init__(self, threshold: float, timesteps: int) -> None:
        super().__init__(timesteps)
        if not threshold >= 0:
            raise ConfigError(f"entropy cutoff: threshold={threshold!r} must be >= 0")
        self.threshold = float(threshold)

    def _score(self, y: Tensor) -> Tensor:
        return softmax_entropy(y)

    def _threshold(self, t: int) -> float:
        return self.threshold

    def _crossed(self, score: Tensor, threshold: Tensor) -> Tensor:
        return score < threshold

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.name, "threshold": self.threshold, "timesteps": self.timesteps}


def rule_from_dict(data: dict[str, Any]) -> CutoffRule:
    """Rebuild a rule from `rule.to_dict()` (as stored in checkpoints)."""
    if not isinstance(data, dict) or "rule" not in data:
        raise ConfigError(f"cutoff rule must be a mapping with a 'rule' field, got {data!r}")
    fields = {k: v for k, v in data.items() if k != "rule"}
    kind = data["rule"]
    try:
        if kind == TopKRule.name:
            return TopKRule(**fields)
        if kind == FixedStepRule.name:
            return FixedStepRule(**fields)
        if kind == ConfidenceRule.name:
            return ConfidenceRule(**fields)
        if kind == EntropyRule.name:
            return EntropyRule(**fields)
    except TypeError as exc:
        raise ConfigError(f"cutoff rule {kind!r}: bad fields {sorted(fields)}: {exc}") from None
    raise ConfigError(f"unknown cutoff rule {kind!r}; known: topk, fixed, confidence, entropy")


@dataclass
class TopKCalibration:
    """β[t] and the table it was read from: `confidence` [grid, T] (NaN for empty bins; the last
    row forced to 1), `counts` [grid, T] samples with gap > β_m, `grid` [grid] the β_m values."""

    beta: Tensor
    epsilon: float
    grid: Tensor
    confidence: Tensor
    counts: Tensor

    def rule(self) -> TopKRule:
        return TopKRule(self.beta, self.epsilon)


def calibrate_topk(
    y: Tensor, labels: Tensor, epsilon: float = 0.0, grid_points: int = GRID_POINTS
) -> TopKCalibration:
    """Per-timestep Top-K thresholds (method §2.3) from calibration outputs.

    y [T, N, C] are *cumulative* outputs Y(t), labels [N]. β_m = m·max(gap)/grid for m = 0..grid−1
    (max over all samples and steps); β[t] is the smallest β_m whose confidence rate
    |gap(t) > β_m and OCT ≤ t| / |gap(t) > β_m| is ≥ 1 − ε. Empty bins fail; the last grid point
    always qualifies.
    """
    if not 0 <= epsilon < 1:
        raise ConfigError(f"calibrate_topk: epsilon={epsilon!r} must be in [0, 1)")
    if grid_points < 1:
        raise ConfigError(f"calibrate_topk: grid_points={grid_points!r} must be >= 1")
    if y.dim() != 3 or labels.shape != (y.shape[1],):
        raise ValueError(
            f"calibrate_topk: y [T, N, C] and labels [N], got {list(y.shape)} "
            f"and {list(labels.shape)}"
        )
    y = y.detach().cpu()
    labels = labels.cpu()
    steps = y.shape[0]
    gap = topk_gap(y).double()  # [T, N]
    good = oct_steps(y, labels)[None, :] <= torch.arange(1, steps + 1)[:, None]  # [T, N]
    grid = torch.arange(grid_points, dtype=torch.float64) * gap.max() / grid_points
    counts = torch.empty(grid_points, steps, dtype=torch.int64)
    hits = torch.empty(grid_points, steps, dtype=torch.int64)
    for m in range(grid_points):
        above = gap > grid[m]
        counts[m] = above.sum(dim=1)
        hits[m] = (above & good).sum(dim=1)
    confidence = hits.double() / counts.double()  # 0/0 → NaN
    confidence[-1] = 1.0
    qualifies = confidence >= 1 - epsilon  # NaN compares False: empty bins fail
    first = qualifies.to(torch.int8).argmax(dim=0)
    return TopKCalibration(grid[first], float(epsilon), grid, confidence, counts)


@dataclass
class CutoffResult:
    """Outcome of a cutoff over a labelled set: accuracy at the stop step, mean stop step and
    reduction factor T / mean; per-sample stop steps (1-based) and correctness."""

    accuracy: float
    mean_steps: float
    reduction: float
    stop_steps: Tensor
    correct: Tensor


def evaluate_stops(y: Tensor, labels: Tensor, stop_steps: Tensor) -> CutoffResult:
    """Score per-sample stop steps (from a rule, or `oct_steps`) on cumulative outputs y."""
    steps = y.shape[0]
    picked = y[stop_steps.to(y.device) - 1, torch.arange(y.shape[1], device=y.device)]
    correct = picked.argmax(dim=-1) == labels.to(y.device)
    mean_steps = float(stop_steps.double().mean())
    return CutoffResult(
        accuracy=float(correct.double().mean()),
        mean_steps=mean_steps,
        reduction=steps / mean_steps,
        stop_steps=stop_steps,
        correct=correct,
    )


def collect_outputs(
    net: StepNet,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    dropout: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Run `net` multi-step over (frames [T, B, C, H, W], labels [B]) batches in eval mode and
    return the cumulative outputs Y [T, N, classes] and labels [N] on the CPU.

    `dropout` > 0 keeps calibration dropout (p = 0.3 in the paper) active after every spiking
    layer, as Top-K calibration does; test-time evaluation uses 0.
    """
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    outputs, all_labels = [], []
    try:
        with torch.no_grad(), calibration_dropout(net, dropout) if dropout else nullcontext():
            for frames, labels in batches:
                outputs.append(cumulative(net(frames.to(device))).cpu())
                all_labels.append(labels.cpu())
    finally:
        net.train(was_training)
    if not outputs:
        raise ValueError("collect_outputs: no batches")
    return torch.cat(outputs, dim=1), torch.cat(all_labels)
