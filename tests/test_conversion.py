import pytest
import torch
from torch import nn

from spikecut.errors import ConfigError
from spikecut.models import (
    CONVERTED_IF,
    QCFS,
    StepNet,
    build_from_spec,
    build_model,
    convert_to_snn,
    cumulative,
    record_activations,
)


def test_qcfs_matches_its_formula_and_has_straight_through_gradients():
    q = QCFS(levels=4, init=2.0).double()
    x = torch.linspace(-1, 3, 400, dtype=torch.float64, requires_grad=True)
    y = q(x)
    lam, levels = 2.0, 4
    expected = lam * torch.clamp(torch.floor(levels * torch.relu(x) / lam + 0.5) / levels, 0, 1)
    torch.testing.assert_close(y, expected.detach())
    assert set((y / 0.5).detach().round().tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}  # L + 1 levels
    y.sum().backward()
    # Straight-through floor: slope 1 wherever the floored value lies in [0, 1] (the clamp comes
    # after the floor), 0 where it clips.
    inside = (x.detach() >= -lam / (2 * levels)) & (x.detach() < lam * (1 + 0.5 / levels))
    torch.testing.assert_close(x.grad, inside.double())
    assert q.lam.grad is not None and q.lam.grad != 0
    with pytest.raises(ConfigError):
        QCFS(levels=0)


def one_layer_ann(levels: int) -> StepNet:
    body = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), QCFS(levels, 1.5), nn.Flatten(),
                         nn.Linear(6 * 5 * 5, 4))  # fmt: skip
    spec = {"arch": "one_layer", "kwargs": {"flavour": "ann"}, "bn_folded": False}
    return StepNet(body, input_shape=(2, 5, 5), num_classes=4, spec=spec).double().eval()


@pytest.mark.parametrize("levels", [2, 4, 8])
def test_one_layer_conversion_is_exact_at_t_equals_l(levels):
    """For a constant input current I, an IF neuron with θ = λ, v0 = λ/2 and soft reset fires
    floor(T·I/λ + 1/2) times in T steps (clipped to T): at T = L that is exactly QCFS's count."""
    torch.manual_seed(0)
    ann = one_layer_ann(levels)
    snn = convert_to_snn(ann)
    x = torch.randn(1, 3, 2, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        expected = ann(x)[0]
        y = cumulative(snn(x.expand(levels, -1, -1, -1, -1)))[-1] / levels
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("name", "shape"), [("nmnist_small", None), ("resnet20", (3, 16, 16))])
def test_converted_network_approaches_the_ann_as_t_grows(name, shape):
    """Deep nets: with fine quantisation (L = 256, so QCFS ≈ clip) the converted IF net's mean
    output Y(T)/T converges to the ANN's, roughly as 1/T."""
    torch.manual_seed(1)
    ann = build_model(name, flavour="ann", input_shape=shape, qcfs_levels=256).double().eval()
    x = torch.rand(1, 4, *ann.input_shape, dtype=torch.float64)
    with torch.no_grad(), record_activations() as records:
        ann(x)
    qcfs = [m for m in ann.modules() if isinstance(m, QCFS)]
    for q, record in zip(qcfs, records.layers, strict=True):  # λ at the 99th percentile
        q.lam.data.fill_(float(torch.quantile(record.x.flatten(), 0.99).clamp(min=1e-3)))
    snn = convert_to_snn(ann)
    with torch.no_grad():
        target = ann(x)[0]
        errors = []
        for steps in (8, 32, 128):
            y = cumulative(snn(x.expand(steps, -1, -1, -1, -1)))[-1] / steps
            errors.append(float((y - target).abs().mean() / target.abs().mean()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.25 * errors[0] and errors[2] < 0.05


def test_conversion_sets_thresholds_and_spec_and_leaves_the_ann_alone():
    torch.manual_seed(2)
    ann = build_model("resnet20", flavour="ann", input_shape=(3, 16, 16), qcfs_levels=8)
    lams = []
    for i, q in enumerate(m for m in ann.modules() if isinstance(m, QCFS)):
        q.lam.data.fill_(1.0 + 0.1 * i)
        lams.append(1.0 + 0.1 * i)
    snn = convert_to_snn(ann)
    assert not ann.is_spiking and any(isinstance(m, QCFS) for m in ann.modules())
    assert [float(n.threshold) for n in snn.neurons] == pytest.approx(lams)
    assert all(n.config == CONVERTED_IF for n in snn.neurons)
    assert snn.spec["kwargs"]["flavour"] == "snn" and snn.spec["converted_from"] == "qcfs"
    assert "qcfs_levels" not in snn.spec["kwargs"]
    rebuilt = build_from_spec(snn.spec)
    rebuilt.load_state_dict(snn.state_dict())
    x = torch.rand(3, 2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), snn.eval()(x))
    with pytest.raises(ConfigError, match="QCFS ANN"):
        convert_to_snn(snn)
