import pytest
import torch
from torch import nn

from spikecut.errors import ConfigError
from spikecut.models.network import StepNet
from spikecut.models.neurons import (
    CONVERTED_IF,
    DIRECT_LIF,
    NeuronConfig,
    SpikingNeuron,
    calibration_dropout,
    spike,
)


def single_neuron_net(config: NeuronConfig) -> StepNet:
    """A StepNet whose body is one neuron on 1×1×1 'frames', so outputs are its spikes."""
    body = nn.Sequential(SpikingNeuron(config), nn.Flatten())
    return StepNet(body, input_shape=(1, 1, 1), num_classes=1, spec={"arch": "test"})


def run_currents(config: NeuronConfig, currents: list[float]) -> list[float]:
    net = single_neuron_net(config)
    x = torch.tensor(currents, dtype=torch.float64).reshape(-1, 1, 1, 1, 1)
    return net.double()(x).flatten().tolist()


def test_lif_hard_reset_leak_after_reset():
    # θ=1, τ=0.5, v0=0. u1 = 0.8 → no spike, v = 0.4; u2 = 0.4+0.7 = 1.1 → spike, reset to 0,
    # v = 0; u3 = 0.9 → no spike, v = 0.45; u4 = 0.45 + 0.6 = 1.05 → spike.
    assert run_currents(DIRECT_LIF, [0.8, 0.7, 0.9, 0.6]) == [0, 1, 0, 1]


def test_lif_spikes_at_exact_threshold():
    assert run_currents(DIRECT_LIF, [1.0]) == [1]
    assert run_currents(DIRECT_LIF, [0.999]) == [0]


def test_if_soft_reset_half_init_threshold_amplitude():
    config = NeuronConfig(
        kind="if", threshold=2.0, reset="soft", v_init="half", amplitude="threshold"
    )
    # v0 = 1. u1 = 1 + 1.5 = 2.5 → spike (amplitude 2), v = 0.5; u2 = 0.5 + 0.5 = 1 → none;
    # u3 = 1 + 3.5 = 4.5 → spike, v = 2.5 (soft reset keeps the excess); u4 = 2.5 → spike.
    assert run_currents(config, [1.5, 0.5, 3.5, 0.0]) == [2.0, 0.0, 2.0, 2.0]


def test_soft_vs_hard_reset_keep_excess():
    hard = NeuronConfig(kind="if", reset="hard")
    soft = NeuronConfig(kind="if", reset="soft")
    assert run_currents(hard, [1.7, 0.5]) == [1, 0]
    assert run_currents(soft, [1.7, 0.5]) == [1, 1]


def test_neuron_config_defaults_and_validation():
    assert DIRECT_LIF.leak == 0.5 and DIRECT_LIF.reset == "hard" and DIRECT_LIF.threshold == 1.0
    assert CONVERTED_IF.leak == 1.0 and CONVERTED_IF.v_init == "half"
    assert NeuronConfig.from_dict(CONVERTED_IF.to_dict()) == CONVERTED_IF
    for bad in (
        {"kind": "izhikevich"},
        {"reset": "none"},
        {"threshold": 0},
        {"tau": 1.5},
        {"kind": "if", "tau": 0.5},
        {"amplitude": "two"},
    ):
        with pytest.raises(ConfigError):
            NeuronConfig(**bad)
    with pytest.raises(ConfigError, match="unknown field"):
        NeuronConfig.from_dict({"thresh": 1.0})


def test_neuron_outside_a_network_call_is_an_error():
    with pytest.raises(RuntimeError, match="StepNet"):
        SpikingNeuron()(torch.zeros(2))


@pytest.mark.parametrize("width", [1.0, 0.5])
def test_surrogate_gradient_is_the_triangle(width):
    x = torch.linspace(-2, 2, 81, dtype=torch.float64, requires_grad=True)
    s = spike(x, width)
    assert torch.equal(s, (x >= 0).double())
    (grad,) = torch.autograd.grad(s.sum(), x)
    expected = torch.clamp(width - x.detach().abs(), min=0) / width**2
    torch.testing.assert_close(grad, expected)
    assert grad[40] == pytest.approx(1 / width)  # peak at u = θ


def test_bptt_gradient_matches_hand_derivation():
    """Unrolled LIF (hard reset, τ = 0.5, θ = 1) over 3 steps; d(Σ s)/dI by hand, chain rule
    through the surrogate and through the reset u·(1−s)."""
    currents = torch.tensor([0.7, 0.6, 0.3], dtype=torch.float64, requires_grad=True)
    net = single_neuron_net(DIRECT_LIF).double()
    out = net(currents.reshape(3, 1, 1, 1, 1)).sum()
    (grad,) = torch.autograd.grad(out, currents)

    def sg(u):
        return max(0.0, 1 - abs(u - 1))

    i1, i2, i3 = currents.tolist()
    u1 = i1  # 0.7, no spike
    s1 = 0.0
    u2 = 0.5 * u1 * (1 - s1) + i2  # 0.95, no spike
    s2 = 0.0
    u3 = 0.5 * u2 * (1 - s2) + i3  # 0.775, no spike
    # ds_t/du_t = sg(u_t); du2/du1 = 0.5·((1−s1) − u1·ds1/du1); du3/du2 likewise.
    d21 = 0.5 * ((1 - s1) - u1 * sg(u1))
    d32 = 0.5 * ((1 - s2) - u2 * sg(u2))
    g3 = sg(u3)
    g2 = sg(u2) + g3 * d32
    g1 = sg(u1) + g2 * d21
    torch.testing.assert_close(grad, torch.tensor([g1, g2, g3], dtype=torch.float64))


def test_calibration_dropout_is_scoped_and_scales():
    net = single_neuron_net(NeuronConfig(kind="if", reset="soft"))
    x = torch.full((1, 4000, 1, 1, 1), 5.0)  # every neuron spikes at t=1
    torch.manual_seed(0)
    with calibration_dropout(net, 0.3):
        out = net(x)
    assert out.unique().tolist() == [0.0, pytest.approx(1 / 0.7)]
    assert 0.25 < (out == 0).double().mean() < 0.35
    assert torch.equal(net(x), torch.ones_like(out))  # gone after the block
    with (
        pytest.raises(ConfigError, match="no spiking layers"),
        calibration_dropout(nn.Linear(2, 2)),
    ):
        pass


@pytest.mark.parametrize("config", [DIRECT_LIF, CONVERTED_IF])
def test_training_and_inference_paths_compute_the_same_spikes(config):
    """Under autograd the neuron uses the surrogate Function; without it, a cheaper op sequence.
    Both must produce identical spikes and membranes, or a trained network would act differently
    when it is deployed."""
    torch.manual_seed(0)
    net = single_neuron_net(config)
    currents = torch.randn(12, 500, 1, 1, 1) * 1.5
    currents[0, :50] = 1.0  # u = θ exactly at t = 1 for the LIF (v0 = 0)
    with torch.no_grad():
        fast = net(currents)
    slow = net(currents.clone().requires_grad_(True))
    assert slow.requires_grad
    assert torch.equal(fast, slow.detach())
