"""`StepNet`: one network, run multi-step (training, offline evaluation) or single-step (streaming).

Multi-step: `o = net(frames)` with frames [T, B, C, H, W] gives per-step outputs o [T, B, classes];
stateless layers see the T·B frames as one batch, spiking layers unroll over T. Single-step:
`state = net.init_state()`, then `o_t, state = net.step(frames_t, state)` per timestep with
frames_t [B, C, H, W]; `state.y` is the cumulative output Y(t) and `state.t` the step count. Both
paths compute the same numbers. The output layer is non-spiking, so Y(t) = Σ_{τ≤t} o(τ).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikecut.errors import ModelInputError
from spikecut.models.neurons import RunContext, SpikingNeuron, current_run, running

#: Energy per operation in 45 nm CMOS, 32-bit float (Horowitz, ISSCC 2014), as used across the
#: SNN literature: an accumulate for a spike-driven synaptic event, a multiply-accumulate otherwise.
E_AC_PJ = 0.9
E_MAC_PJ = 4.6


@dataclass
class SynOps:
    """Synaptic operations per sample: [B] for one step, [T, B] for a multi-step run.

    `ac` counts accumulates driven by non-zero inputs of layers fed by spiking layers (exact: every
    non-zero input times every weight it reaches, padding and stride included). `mac` counts the
    dense multiply-accumulates of layers fed by analog values: the first layer of an SNN (it sees
    the event frames) and every layer of an ANN.
    """

    ac: Tensor
    mac: Tensor

    def energy_pj(self, e_ac_pj: float = E_AC_PJ, e_mac_pj: float = E_MAC_PJ) -> Tensor:
        return self.ac.double() * e_ac_pj + self.mac.double() * e_mac_pj


@dataclass
class NetState:
    """One stream's state: a membrane per spiking layer (None until its first step), the number
    of steps taken, the cumulative output Y(t) [B, classes], and the synaptic operations of the
    step just run (when `step(..., count_ops=True)`). `step` returns a new state and never changes
    the one passed in."""

    membranes: tuple[Tensor | None, ...]
    t: int = 0
    y: Tensor | None = None
    ops: SynOps | None = None


class WithBN(nn.Module):
    """A conv/linear layer followed by its BatchNorm; `fold_batchnorm` merges the two."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> None:
        super().__init__()
        self.layer = layer
        self.bn = bn

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.layer(x))

    def folded(self) -> nn.Conv2d | nn.Linear:
        """The layer with the BatchNorm's running statistics and affine map folded in."""
        layer, bn = self.layer, self.bn
        assert bn.running_mean is not None and bn.running_var is not None
        with torch.no_grad():
            scale = torch.rsqrt(bn.running_var + bn.eps)
            if bn.affine:
                scale = scale * bn.weight
            shift = -bn.running_mean * scale
            if bn.affine:
                shift = shift + bn.bias
            bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
            weight = layer.weight * scale.reshape(-1, *([1] * (layer.weight.dim() - 1)))
            layer.weight = nn.Parameter(weight)
            layer.bias = nn.Parameter(bias * scale + shift)
        return layer


def _weight_layers(module: nn.Module) -> Iterator[nn.Conv2d | nn.Linear]:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            yield m


def _count_ops_hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
    run = current_run()
    if run is None or run.ops is None:
        return
    x = args[0]
    if module._spikecut_dense:
        # Every output value is a sum over the weights feeding it: the weight count per output.
        fan_in = module.weight[0].numel()
        run.ops["mac"] += output[0].numel() * fan_in
        return
    # float64 sums of small integer products stay exact; `_synops` turns them into int64 counts.
    active = x != 0
    if isinstance(module, nn.Linear):
        run.ops["ac"].add_(active.sum(dim=-1, dtype=torch.float64), alpha=module.out_features)
    else:
        assert module.groups == 1, "synaptic-op count assumes groups=1 convolutions"
        per_pixel = active.sum(dim=1, dtype=torch.float64).flatten(1)  # [N, H·W]
        coverage = _coverage(module, output.shape[-2:], x.shape[-2:], x.device)
        run.ops["ac"].addmv_(per_pixel, coverage, alpha=module.out_channels)


def _synops(ops: dict[str, Tensor], shape: tuple[int, ...]) -> SynOps:
    return SynOps(ops["ac"].long().view(shape), ops["mac"].long().view(shape))


def _coverage(
    conv: nn.Conv2d, out_hw: torch.Size, in_hw: torch.Size, device: torch.device
) -> Tensor:
    """How many output positions each input pixel feeds, [H·W] float64: a spike's accumulates
    are this times the output channels. It depends only on the geometry, so it is computed once
    (a transposed convolution of ones) instead of convolving every step's spikes again."""
    key = (tuple(out_hw), tuple(in_hw), device)
    cached = getattr(conv, "_spikecut_coverage", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    padding = conv.padding if conv.padding_mode == "zeros" else (0, 0)
    sizes = [
        (o - 1) * s - 2 * p + d * (k - 1) + 1
        for o, s, p, d, k in zip(
            out_hw, conv.stride, padding, conv.dilation, conv.kernel_size, strict=True
        )
    ]
    # input rows/columns that no window reaches:
    extra = [i - size for i, size in zip(in_hw, sizes, strict=True)]
    ones_out = torch.ones(1, 1, *out_hw, dtype=torch.float64, device=device)
    ones_kernel = torch.ones(1, 1, *conv.kernel_size, dtype=torch.float64, device=device)
    coverage = F.conv_transpose2d(
        ones_out, ones_kernel, None, conv.stride, padding, extra, 1, conv.dilation
    ).flatten()
    conv._spikecut_coverage = (key, coverage)
    return coverage


class StepNet(nn.Module):
    """A network whose `body` maps [N, C, H, W] frames to [N, classes] outputs.

    `spec` is the JSON-able recipe `build_model` made it from (architecture name, resolved keyword
    arguments, whether BatchNorm is folded); checkpoints store it to rebuild the network.
    """

    def __init__(
        self,
        body: nn.Module,
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        spec: dict[str, Any],
    ) -> None:
        super().__init__()
        self.body = body
        self.input_shape = tuple(int(v) for v in input_shape)
        self.num_classes = int(num_classes)
        self.spec = spec
        self.refresh()

    def refresh(self) -> None:
        """Re-index the spiking layers after their modules were replaced (conversion, folding)."""
        self._neurons = [m for m in self.body.modules() if isinstance(m, SpikingNeuron)]
        for i, neuron in enumerate(self._neurons):
            neuron.index = i
        self._ops_ready = False

    @property
    def neurons(self) -> list[SpikingNeuron]:
        return list(self._neurons)

    @property
    def is_spiking(self) -> bool:
        return bool(self._neurons)

    def init_state(self) -> NetState:
        """A fresh state for one stream (any batch size; membranes start at v0 on first step)."""
        return NetState(membranes=(None,) * len(self._neurons))

    def _check_frames(self, frames: Tensor, leading: int, what: str) -> None:
        if frames.dim() != leading + 3 or tuple(frames.shape[leading:]) != self.input_shape:
            raise ModelInputError(
                f"{what}: expected frames of shape [{', '.join('TB'[:leading])}, "
                f"{', '.join(map(str, self.input_shape))}], got {list(frames.shape)}"
            )

    def forward(self, frames: Tensor) -> Tensor:
        """Multi-step: frames [T, B, C, H, W] → per-step outputs [T, B, classes]."""
        return self._multistep(frames, count_ops=False)[0]

    def forward_with_ops(self, frames: Tensor) -> tuple[Tensor, SynOps]:
        """Multi-step with synaptic-operation counts per step and sample ([T, B])."""
        out, ops = self._multistep(frames, count_ops=True)
        assert ops is not None
        return out, ops

    def _multistep(self, frames: Tensor, count_ops: bool) -> tuple[Tensor, SynOps | None]:
        self._check_frames(frames, 2, "multi-step input")
        steps, batch = frames.shape[:2]
        ops = self._new_ops(steps * batch, frames.device) if count_ops else None
        with running(RunContext(timesteps=steps, ops=ops)):
            out = self.body(frames.flatten(0, 1))
        out = out.reshape(steps, batch, -1)
        if ops is None:
            return out, None
        return out, _synops(ops, (steps, batch))

    def step(
        self, frames: Tensor, state: NetState, *, count_ops: bool = False
    ) -> tuple[Tensor, NetState]:
        """Single step: frames [B, C, H, W] → (o(t) [B, classes], the stream's next state)."""
        self._check_frames(frames, 1, "single-step input")
        if len(state.membranes) != len(self._neurons):
            raise ModelInputError(
                f"the state holds {len(state.membranes)} membranes but this network has "
                f"{len(self._neurons)} spiking layers (a state from another network?)"
            )
        ops = self._new_ops(frames.shape[0], frames.device) if count_ops else None
        run = RunContext(
            timesteps=1,
            membranes_in=state.membranes,
            membranes_out=list(state.membranes),
            ops=ops,
        )
        with running(run):
            out = self.body(frames)
        y = out if state.y is None else state.y + out
        step_ops = None if ops is None else _synops(ops, (-1,))
        return out, NetState(tuple(run.membranes_out), state.t + 1, y, step_ops)

    def _new_ops(self, n: int, device: torch.device) -> dict[str, Tensor]:
        if not self._ops_ready:
            layers = list(_weight_layers(self.body))
            for i, layer in enumerate(layers):
                # In an SNN only the first layer sees analog values (the frames).
                layer._spikecut_dense = not self.is_spiking or i == 0
                if not getattr(layer, "_spikecut_counted", False):
                    layer.register_forward_hook(_count_ops_hook)
                    layer._spikecut_counted = True
            self._ops_ready = True
        zeros = torch.zeros(n, dtype=torch.float64, device=device)
        return {"ac": zeros, "mac": zeros.clone()}


def cumulative(outputs: Tensor) -> Tensor:
    """Y(t) = Σ_{τ≤t} o(τ) along the leading time axis: [T, ...] per-step → [T, ...] cumulative."""
    return outputs.cumsum(dim=0)


def fold_batchnorm(net: StepNet) -> StepNet:
    """A copy of `net` in eval mode with every BatchNorm folded into the layer before it."""
    folded = copy.deepcopy(net).eval()
    for parent in list(folded.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, WithBN):
                setattr(parent, name, child.folded())
    folded.spec = {**folded.spec, "bn_folded": True}
    folded.refresh()
    return folded
