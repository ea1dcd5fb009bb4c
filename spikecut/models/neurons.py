"""Spiking neurons with explicit state, and the per-call context that drives them.

A network runs either multi-step (all T timesteps in one call, for training) or single-step (one
timestep per call, for streaming). The neurons themselves hold no membrane between calls: the
calling `StepNet` publishes a `RunContext` in a context variable for the duration of one call, and
each neuron reads its membrane from, and writes it back to, that context. The state therefore lives
in an object the caller owns, so two streams (or two threads, or two asyncio tasks) sharing one
network never see each other's membranes.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikecut.errors import ConfigError, ModelInputError

KINDS = ("lif", "if")
RESETS = ("hard", "soft")
V_INITS = ("zero", "half")
AMPLITUDES = ("one", "threshold")


@dataclass(frozen=True)
class NeuronConfig:
    """Parameters of an IF/LIF neuron (method §4.2).

    Per step: u = v + I; s = H(u − θ); u ← u·(1−s) (hard) or u − θ·s (soft); v ← τ·u. The leak τ
    is applied after the reset. `tau=None` means 0.5 for LIF and 1.0 for IF. `v_init` is the
    membrane before the first input (0 or θ/2); `amplitude` is the value of an emitted spike
    (1 or θ). The surrogate gradient is the triangle max(0, γ − |u − θ|)/γ² with γ =
    `surrogate_width`.
    """

    kind: str = "lif"
    threshold: float = 1.0
    tau: float | None = None
    reset: str = "hard"
    v_init: str = "zero"
    amplitude: str = "one"
    surrogate_width: float = 1.0

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("kind", self.kind, KINDS),
            ("reset", self.reset, RESETS),
            ("v_init", self.v_init, V_INITS),
            ("amplitude", self.amplitude, AMPLITUDES),
        ):
            if value not in allowed:
                raise ConfigError(f"neuron {name}={value!r}: expected one of {allowed}")
        if not self.threshold > 0:
            raise ConfigError(f"neuron threshold={self.threshold!r}: must be > 0")
        if self.tau is not None and not 0 < self.tau <= 1:
            raise ConfigError(f"neuron tau={self.tau!r}: must be in (0, 1]")
        if self.kind == "if" and self.tau not in (None, 1.0):
            raise ConfigError(f"neuron tau={self.tau!r}: an IF neuron has no leak (tau 1.0)")
        if not self.surrogate_width > 0:
            raise ConfigError(f"neuron surrogate_width={self.surrogate_width!r}: must be > 0")

    @property
    def leak(self) -> float:
        if self.tau is not None:
            return float(self.tau)
        return 0.5 if self.kind == "lif" else 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NeuronConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"neuron config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"neuron config: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


#: Direct training (method §4.2): LIF, θ = 1, τ = 0.5, hard reset, v0 = 0, unit spikes.
DIRECT_LIF = NeuronConfig()
#: QCFS conversion (method §4.1): IF, soft reset, v0 = θ/2, spikes of amplitude θ (θ = λ per layer).
CONVERTED_IF = NeuronConfig(kind="if", reset="soft", v_init="half", amplitude="threshold")


class _TriangleSpike(torch.autograd.Function):
    """Heaviside forward; triangle surrogate max(0, γ − |x|)/γ² backward (x = u − θ)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, width: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.width = width
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        width = ctx.width
        return grad * (width - x.abs()).clamp(min=0) / (width * width), None


def spike(x: Tensor, width: float = 1.0) -> Tensor:
    """H(x) with the triangle surrogate gradient; x is u − θ. Spikes when u ≥ θ."""
    if x.requires_grad and torch.is_grad_enabled():
        return _TriangleSpike.apply(x, width)
    return (x >= 0).to(x.dtype)


@dataclass
class RunContext:
    """What one network call tells its neurons: how many timesteps the batch dimension holds
    (multi-step) or which membranes to start from and where to put the new ones (single-step), and
    where synaptic-operation counts go (None: not counting)."""

    timesteps: int
    membranes_in: Sequence[Tensor | None] | None = None
    membranes_out: list[Tensor | None] | None = None
    ops: dict[str, Tensor] | None = None


_RUN: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "spikecut_run", default=None
)


def current_run() -> RunContext | None:
    return _RUN.get()


@contextmanager
def running(context: RunContext) -> Iterator[RunContext]:
    token = _RUN.set(context)
    try:
        yield context
    finally:
        _RUN.reset(token)


@dataclass
class SpikeRecord:
    """One spiking layer's activity in a multi-step pass, for the RCS regulariser.

    `spikes` are the binary spikes s(t) (before amplitude scaling and calibration dropout),
    `membrane` is u(t) after reset and before the leak, both [T, B, ...]; `threshold` is θ.
    """

    spikes: Tensor
    membrane: Tensor
    threshold: Tensor


@dataclass
class PreActivation:
    """The input of one ANN activation (QCFS) in a pass, [T, B, ...] (T = 1 for static images)."""

    x: Tensor


@dataclass
class ActivationRecords:
    """Per-layer records gathered by `record_activations`, in the order the layers ran."""

    layers: list[SpikeRecord | PreActivation] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.layers)


_RECORDS: contextvars.ContextVar[ActivationRecords | None] = contextvars.ContextVar(
    "spikecut_records", default=None
)


@contextmanager
def record_activations() -> Iterator[ActivationRecords]:
    """Collect every activation site's values during the forward passes run inside the block.

    Used by the training loop for RCS: `with record_activations() as rec: out = net(x)`, then
    `rcs_loss(rec, out, labels)`. The records keep the autograd graph.
    """
    records = ActivationRecords()
    token = _RECORDS.set(records)
    try:
        yield records
    finally:
        _RECORDS.reset(token)


def active_records() -> ActivationRecords | None:
    return _RECORDS.get()


class SpikingNeuron(nn.Module):
    """An IF/LIF layer. It keeps no membrane between calls (see the module docstring).

    `update(v, current) -> (spikes, membrane after reset, next v)` is the functional form with the
    state passed explicitly, for use outside a network.
    `threshold` is a buffer, so a converted network stores its per-layer θ = λ in its weights.
    `dropout` > 0 applies inverted dropout to the emitted spikes (calibration only; see
    `calibration_dropout`).
    """

    def __init__(self, config: NeuronConfig = DIRECT_LIF) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("threshold", torch.tensor(float(config.threshold)))
        self.leak = config.leak
        # A tensor multiplies faster than a Python float; not saved (it is in the config).
        self.register_buffer("leak_factor", torch.tensor(self.leak), persistent=False)
        self.soft_reset = config.reset == "soft"
        self.half_init = config.v_init == "half"
        self.scaled_spikes = config.amplitude == "threshold"
        self.width = config.surrogate_width
        self.dropout = 0.0
        self.index = -1  # slot in the network's state; assigned by StepNet

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"{c.kind}, threshold={float(self.threshold):g}, tau={self.leak:g}, reset={c.reset}, "
            f"v_init={c.v_init}, amplitude={c.amplitude}"
        )

    def initial_membrane(self, like: Tensor) -> Tensor | None:
        """v before the first input; None stands for zeros (saves an addition)."""
        if self.half_init:
            return (self.threshold * 0.5).to(like.dtype).expand(like.shape)
        return None

    def update(self, v: Tensor | None, current: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One timestep: returns (binary spikes, membrane after reset, next v after the leak)."""
        u = current if v is None else v + current
        if u.requires_grad and torch.is_grad_enabled():
            s = spike(u - self.threshold, self.width)
            u_reset = u - self.threshold * s if self.soft_reset else u * (1.0 - s)
        else:  # inference: same values (u ≥ θ ⇔ u − θ ≥ 0 in IEEE arithmetic), fewer ops
            s = u.clone().ge_(self.threshold)
            u_reset = u - self.threshold * s if self.soft_reset else u - u * s
        v_next = u_reset if self.leak == 1.0 else u_reset * self.leak_factor
        return s, u_reset, v_next

    def _emit(self, s: Tensor) -> Tensor:
        out = s * self.threshold if self.scaled_spikes else s
        if self.dropout > 0:
            out = F.dropout(out, self.dropout, training=True)
        return out

    def forward(self, current: Tensor) -> Tensor:
        run = _RUN.get()
        if run is None:
            raise RuntimeError(
                "a SpikingNeuron runs only inside a StepNet call (net(x) or net.step(x, state))"
            )
        if run.membranes_in is None:
            return self._multistep(current, run.timesteps)
        return self._single_step(current, run)

    def _multistep(self, current: Tensor, timesteps: int) -> Tensor:
        seq = current.reshape(timesteps, -1, *current.shape[1:])
        records = _RECORDS.get()
        v = self.initial_membrane(seq[0])
        spikes, membranes = [], []
        for t in range(timesteps):
            s, u_reset, v = self.update(v, seq[t])
            spikes.append(s)
            if records is not None:
                membranes.append(u_reset)
        s = torch.stack(spikes)
        if records is not None:
            records.layers.append(SpikeRecord(s, torch.stack(membranes), self.threshold))
        return self._emit(s.flatten(0, 1))

    def _single_step(self, current: Tensor, run: RunContext) -> Tensor:
        assert run.membranes_out is not None
        v = run.membranes_in[self.index]
        if v is None:
            v = self.initial_membrane(current)
        elif v.shape != current.shape:
            raise ModelInputError(
                f"spiking layer {self.index}: the state holds a membrane of shape "
                f"{tuple(v.shape)} but the input current has shape {tuple(current.shape)} "
                "(a state belongs to one batch size; start a new one with net.init_state())"
            )
        s, u_reset, v_next = self.update(v, current)
        run.membranes_out[self.index] = v_next
        records = _RECORDS.get()
        if records is not None:
            records.layers.append(SpikeRecord(s[None], u_reset[None], self.threshold))
        return self._emit(s)


@contextmanager
def calibration_dropout(model: nn.Module, p: float = 0.3) -> Iterator[None]:
    """Inverted dropout with rate p after every spiking layer, for the duration of the block.

    The paper calibrates the Top-K thresholds with this active (method §2.3); test inference runs
    without it. Not thread-safe: it sets an attribute on the shared neuron modules.
    """
    if not 0 <= p < 1:
        raise ConfigError(f"calibration dropout p={p!r}: must be in [0, 1)")
    neurons = [m for m in model.modules() if isinstance(m, SpikingNeuron)]
    if not neurons:
        raise ConfigError("calibration dropout: the model has no spiking layers")
    previous = [n.dropout for n in neurons]
    for n in neurons:
        n.dropout = p
    try:
        yield
    finally:
        for n, old in zip(neurons, previous, strict=True):
            n.dropout = old
