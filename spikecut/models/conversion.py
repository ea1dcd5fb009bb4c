"""QCFS activation (Bu et al., ICLR 2022) and the conversion of a QCFS ANN into an IF SNN."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from spikecut.errors import ConfigError
from spikecut.models.network import StepNet
from spikecut.models.neurons import (
    CONVERTED_IF,
    PreActivation,
    SpikingNeuron,
    active_records,
    current_run,
)


def floor_ste(x: Tensor) -> Tensor:
    """floor(x) forward, identity gradient (straight-through estimator)."""
    return x + (torch.floor(x) - x).detach()


class QCFS(nn.Module):
    """Quantisation-clip-floor-shift: λ·clamp(floor(L·x/λ + 0.5)/L, 0, 1), trainable λ.

    Its input is recorded for the ANN form of RCS when `record_activations` is active.
    """

    def __init__(self, levels: int = 4, init: float = 8.0) -> None:
        super().__init__()
        if levels < 1:
            raise ConfigError(f"QCFS levels={levels!r}: must be >= 1")
        self.levels = int(levels)
        self.lam = nn.Parameter(torch.tensor(float(init)))

    def extra_repr(self) -> str:
        return f"levels={self.levels}, lam={float(self.lam):.4g}"

    def forward(self, x: Tensor) -> Tensor:
        records = active_records()
        if records is not None:
            run = current_run()
            steps = 1 if run is None else run.timesteps
            records.layers.append(PreActivation(x.reshape(steps, -1, *x.shape[1:])))
        y = floor_ste(x / self.lam * self.levels + 0.5) / self.levels
        return torch.clamp(y, 0, 1) * self.lam


def convert_to_snn(ann: StepNet) -> StepNet:
    """The IF-SNN twin of a QCFS ANN: every QCFS becomes an IF neuron with threshold λ, soft
    reset, initial membrane λ/2 and spikes of amplitude λ (method §4.1). `ann` is not changed."""
    if ann.spec.get("kwargs", {}).get("flavour") != "ann":
        raise ConfigError(f"convert_to_snn needs a QCFS ANN, got flavour {ann.spec.get('kwargs')}")
    snn = copy.deepcopy(ann)
    replaced = 0
    for parent in list(snn.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, QCFS):
                neuron = SpikingNeuron(CONVERTED_IF).to(child.lam)
                with torch.no_grad():
                    neuron.threshold.copy_(child.lam.detach())
                setattr(parent, name, neuron)
                replaced += 1
    if not replaced:
        raise ConfigError("convert_to_snn: the network has no QCFS activation to replace")
    kwargs = {k: v for k, v in snn.spec["kwargs"].items() if k not in ("qcfs_levels", "qcfs_init")}
    kwargs.update(flavour="snn", neuron=CONVERTED_IF.to_dict())
    snn.spec = {**snn.spec, "kwargs": kwargs, "converted_from": "qcfs"}
    snn.refresh()
    return snn
