import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikecut.errors import ConfigError, ModelInputError
from spikecut.models import (
    ARCHITECTURES,
    NeuronConfig,
    SpikingNeuron,
    StepNet,
    build_from_spec,
    build_model,
    cumulative,
    fold_batchnorm,
    mean_ce_loss,
    record_activations,
    tet_loss,
)
from spikecut.models.network import WithBN


def frames(shape, steps, batch, seed=0, dtype=torch.float32):
    """Sparse event-count-like frames."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.poisson(torch.full((steps, batch, *shape), 0.6, dtype=torch.float64), g)
    return counts.to(dtype)


def randomise_bn(net: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics, so folding and eval-mode behaviour are really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.8)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.3 + 0.7)


def run_steps(net, x, state=None):
    state = state or net.init_state()
    outs = []
    for t in range(x.shape[0]):
        o, state = net.step(x[t], state)
        outs.append(o)
    return torch.stack(outs), state


@pytest.mark.parametrize(
    ("name", "shape"),
    [("nmnist_small", None), ("resnet20", (3, 16, 16)), ("vgg11", (3, 32, 32))],
)
@pytest.mark.parametrize(
    "neuron",
    [NeuronConfig(), NeuronConfig(kind="if", reset="soft", v_init="half", amplitude="threshold")],
)
def test_multistep_equals_single_step(name, shape, neuron):
    torch.manual_seed(1)
    net = build_model(name, input_shape=shape, neuron=neuron).double().eval()
    randomise_bn(net)
    x = frames(net.input_shape, steps=5, batch=3, dtype=torch.float64) * 3
    with torch.no_grad(), record_activations() as records:
        multi = net(x)
    with torch.no_grad():
        single, state = run_steps(net, x)
    assert multi.shape == (5, 3, net.num_classes)
    torch.testing.assert_close(single, multi, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state.y, cumulative(multi)[-1], rtol=1e-10, atol=1e-10)
    assert state.t == 5
    # The network really spikes, and differently from step to step.
    assert all(0 < rec.spikes.mean() < 1 for rec in records.layers[:3])
    assert any((rec.spikes[1:] != rec.spikes[:-1]).any() for rec in records.layers)


def test_interleaved_streams_and_threads_never_share_state():
    torch.manual_seed(2)
    net = build_model("nmnist_small").eval()
    randomise_bn(net)
    a = frames(net.input_shape, 6, 1, seed=1) * 2
    b = frames(net.input_shape, 6, 1, seed=2) * 2
    with torch.no_grad():
        alone_a, _ = run_steps(net, a)
        alone_b, _ = run_steps(net, b)
        state_a, state_b = net.init_state(), net.init_state()
        inter_a, inter_b = [], []
        for t in range(6):
            o, state_a = net.step(a[t], state_a)
            inter_a.append(o)
            o, state_b = net.step(b[t], state_b)
            inter_b.append(o)
    assert torch.equal(torch.stack(inter_a), alone_a)
    assert torch.equal(torch.stack(inter_b), alone_b)
    assert not torch.equal(alone_a, alone_b)

    results = {}

    def worker(key, x):
        with torch.no_grad():
            outs = [run_steps(net, x)[0] for _ in range(20)]
        results[key] = outs

    threads = [threading.Thread(target=worker, args=(k, x)) for k, x in (("a", a), ("b", b))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(torch.equal(o, alone_a) for o in results["a"])
    assert all(torch.equal(o, alone_b) for o in results["b"])


def test_step_returns_new_state_and_leaves_old_one_alone():
    net = build_model("nmnist_small").eval()
    x = frames(net.input_shape, 3, 2) * 4
    with torch.no_grad():
        s0 = net.init_state()
        _, s1 = net.step(x[0], s0)
        snapshot = [m.clone() for m in s1.membranes]
        o2, s2 = net.step(x[1], s1)
        o2_again, _ = net.step(x[1], s1)  # replaying from s1 gives the same step
    assert s0.t == 0 and s0.y is None and all(m is None for m in s0.membranes)
    assert all(torch.equal(a, b) for a, b in zip(snapshot, s1.membranes, strict=True))
    assert torch.equal(o2, o2_again) and s2.t == 2


def test_bad_inputs_and_states_are_clear_errors():
    net = build_model("nmnist_small").eval()
    other = build_model("resnet20").eval()
    x = frames(net.input_shape, 2, 2)
    with torch.no_grad():
        with pytest.raises(ModelInputError, match=r"\[T, B, 2, 34, 34\]"):
            net(x[0])
        with pytest.raises(ModelInputError, match="single-step"):
            net.step(x, net.init_state())
        _, state = net.step(x[0], net.init_state())
        with pytest.raises(ModelInputError, match="batch size"):
            net.step(x[0, :1], state)
        with pytest.raises(ModelInputError, match="another network"):
            net.step(x[0], other.init_state())


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_builds_and_runs_at_nominal_size(name):
    arch = ARCHITECTURES[name]
    torch.manual_seed(0)
    for flavour in ("snn", "ann"):
        net = build_model(name, flavour=flavour).eval()
        assert net.input_shape == arch.input_shape and net.num_classes == arch.num_classes
        assert net.is_spiking == (flavour == "snn")
        x = frames(arch.input_shape, steps=2, batch=1)
        with torch.no_grad():
            out = net(x)
            o1, state = net.step(x[0], net.init_state())
        assert out.shape == (2, 1, arch.num_classes)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(o1, out[0], rtol=1e-4, atol=1e-4)
        assert state.y.shape == (1, arch.num_classes)


def test_architecture_shapes_follow_the_paper():
    ncaltech = build_model("vgg_ncaltech101")
    assert ncaltech.body[-1].in_features == 512 * 2 * 3 and ncaltech.num_classes == 101
    cifar10dvs = build_model("vgg_cifar10dvs")
    first = cifar10dvs.body[0].layer
    assert first.kernel_size == (4, 4) and first.stride == (4, 4) and first.padding == (0, 0)
    assert cifar10dvs.body[-1].in_features == 512 * 2 * 2
    assert len(cifar10dvs.neurons) == 9
    gesture = build_model("vgg_gesture")
    assert gesture.body[-1].in_features == 512 and gesture.num_classes == 11
    assert isinstance(gesture.body[-3].bn, nn.BatchNorm1d)
    assert build_model("vgg16").body[-1].in_features == 4096
    assert len(build_model("resnet18").neurons) == 1 + 2 * 8
    assert len(build_model("resnet20").neurons) == 1 + 2 * 9
    imagenet = build_model("resnet18", input_shape=(3, 64, 64), stem="imagenet")
    assert imagenet.spec["kwargs"]["stem"] == "imagenet"


def test_build_errors_and_spec_round_trip():
    with pytest.raises(ConfigError, match="unknown architecture"):
        build_model("alexnet")
    with pytest.raises(ConfigError, match="flavour"):
        build_model("nmnist_small", flavour="cnn")
    with pytest.raises(ConfigError, match="unknown option"):
        build_model("nmnist_small", stem="cifar")
    with pytest.raises(ConfigError, match="no neuron config"):
        build_model("nmnist_small", flavour="ann", neuron=NeuronConfig())
    with pytest.raises(ConfigError, match="too small"):
        build_model("vgg_cifar10dvs", input_shape=(2, 32, 32))
    net = build_model("resnet20", num_classes=7, neuron={"kind": "if", "reset": "soft"})
    again = build_from_spec(net.spec)
    assert again.spec == net.spec
    assert again.neurons[0].config == NeuronConfig(kind="if", reset="soft")
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in net.state_dict().items()
    }


@pytest.mark.parametrize(
    ("name", "shape"), [("nmnist_small", None), ("resnet20", (3, 16, 16)), ("vgg_gesture", None)]
)
@pytest.mark.parametrize("flavour", ["snn", "ann"])
def test_batchnorm_folding_preserves_outputs(name, shape, flavour):
    torch.manual_seed(3)
    net = build_model(name, input_shape=shape, flavour=flavour).double().eval()
    randomise_bn(net)
    folded = fold_batchnorm(net)
    assert not any(
        isinstance(m, (WithBN, nn.BatchNorm2d, nn.BatchNorm1d)) for m in folded.modules()
    )
    assert folded.spec["bn_folded"] and not net.spec["bn_folded"]
    x = frames(net.input_shape, steps=3, batch=2, dtype=torch.float64) * 3
    with torch.no_grad():
        _, ops_before = net.forward_with_ops(x)  # installs the counting hooks before the copy
        folded = fold_batchnorm(net)
        out, ops = folded.forward_with_ops(x)
        torch.testing.assert_close(out, net(x), rtol=1e-9, atol=1e-9)
    assert torch.equal(ops.ac, ops_before.ac) and torch.equal(ops.mac, ops_before.mac)
    rebuilt = build_from_spec(folded.spec)
    assert rebuilt.state_dict().keys() == folded.state_dict().keys()


def test_synaptic_operation_counts_on_a_hand_case():
    """Frame with 2 at the centre (2, 2) and the corner (0, 0) of a 5×5 map; a 1×1 identity conv
    feeds IF neurons (θ = 1) that spike at those two pixels. A 3×3 conv (pad 1, 2 channels, all
    weights 1) then receives spikes whose receptive footprints cover 9 + 4 output positions:
    AC = 13 · 2. Its output counts spikes per window, so the next neurons spike at the union
    of the two footprints, 9 + 4 − 1 = 12 positions × 2 channels; the Linear to 3 classes then
    adds 24 · 3 accumulates. The first (analog) layer costs 25 dense MACs."""
    first = nn.Conv2d(1, 1, 1)
    second = nn.Conv2d(1, 2, 3, padding=1)
    readout = nn.Linear(2 * 5 * 5, 3)
    with torch.no_grad():
        first.weight.fill_(1.0)
        first.bias.zero_()
        second.weight.fill_(1.0)
        second.bias.zero_()
    if_neuron = NeuronConfig(kind="if")
    body = nn.Sequential(
        first, SpikingNeuron(if_neuron), second, SpikingNeuron(if_neuron), nn.Flatten(), readout
    )
    net = StepNet(body, input_shape=(1, 5, 5), num_classes=3, spec={"arch": "test"})
    frame = torch.zeros(1, 1, 5, 5)
    frame[0, 0, 2, 2] = frame[0, 0, 0, 0] = 2.0
    with torch.no_grad():
        _, state = net.step(frame, net.init_state(), count_ops=True)
        assert state.ops.ac.tolist() == [13 * 2 + 24 * 3]
        assert state.ops.mac.tolist() == [25]
        torch.testing.assert_close(
            state.ops.energy_pj(), torch.tensor([98 * 0.9 + 25 * 4.6], dtype=torch.float64)
        )
        _, state = net.step(frame, state)
        assert state.ops is None


def test_multistep_ops_match_single_step_ops_and_unfold_count():
    torch.manual_seed(4)
    net = build_model("resnet20", input_shape=(3, 16, 16)).eval()
    randomise_bn(net)
    x = frames(net.input_shape, steps=3, batch=2) * 4
    with torch.no_grad():
        out, ops = net.forward_with_ops(x)
        state = net.init_state()
        for t in range(3):
            o, state = net.step(x[t], state, count_ops=True)
            assert torch.equal(state.ops.ac, ops.ac[t]) and torch.equal(state.ops.mac, ops.mac[t])
    assert ops.ac.shape == (3, 2) and (ops.ac > 0).all()
    stem = net.body[0].layer
    assert (ops.mac == 16 * 16 * 16 * stem.weight[0].numel()).all()

    # Independent count: unfold every spike-fed layer's input and count non-zero (input, weight)
    # pairs; the stem (analog input) is excluded.
    independent = torch.zeros(2, dtype=torch.long)

    def unfold_count(module, args, output):
        x_in = args[0]
        if isinstance(module, nn.Linear):
            independent.add_((x_in != 0).sum(dim=1) * module.out_features)
        else:
            cols = F.unfold(x_in, module.kernel_size, padding=module.padding, stride=module.stride)
            independent.add_((cols != 0).sum(dim=(1, 2)) * module.out_channels)

    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][1:]
    hooks = [m.register_forward_hook(unfold_count) for m in layers]
    with torch.no_grad():
        net.step(x[0], net.init_state())
    for h in hooks:
        h.remove()
    assert torch.equal(independent, ops.ac[0])


@pytest.mark.parametrize(
    "conv",
    [
        dict(kernel_size=4, stride=4),  # 34 px: the last 2 rows/columns feed no output
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=3, stride=3, padding=2, dilation=2),
        dict(kernel_size=(2, 5), stride=(1, 2), padding=(0, 2)),
    ],
)
def test_spike_accumulates_match_an_unfold_count_for_any_conv_geometry(conv):
    """The per-layer count comes from a cached coverage map; check it against counting every
    non-zero (input, weight) pair of the unfolded input, over two geometries of the same conv."""
    torch.manual_seed(7)
    first = nn.Conv2d(3, 3, 1)  # identity: the first weight layer is always counted as MACs
    with torch.no_grad():
        first.weight.copy_(torch.eye(3)[:, :, None, None])
        first.bias.zero_()
    layer = nn.Conv2d(3, 5, **conv)
    body = nn.Sequential(first, SpikingNeuron(NeuronConfig(kind="if")), layer, nn.Flatten())
    for size in ((34, 34), (20, 27)):
        x = (torch.rand(2, 3, *size) < 0.3).float() * 2
        with torch.no_grad():
            classes = layer(x).flatten(1).shape[1]
            net = StepNet(body, input_shape=(3, *size), num_classes=classes, spec={"arch": "t"})
            _, state = net.step(x, net.init_state(), count_ops=True)
        spikes = x >= 1  # IF, θ = 1, from rest: the input's non-zero pixels spike
        cols = F.unfold(
            spikes.float(), layer.kernel_size, layer.dilation, layer.padding, layer.stride
        )
        assert state.ops.ac.tolist() == ((cols != 0).sum(dim=(1, 2)) * 5).tolist(), size


def test_losses():
    torch.manual_seed(5)
    o = torch.randn(4, 3, 5, dtype=torch.float64)
    y = torch.tensor([0, 4, 2])
    expected_tet = (
        0.999 * sum(F.cross_entropy(o[t], y) for t in range(4)) / 4
        + 0.001 * ((o - 1.0) ** 2).mean()
    )
    torch.testing.assert_close(tet_loss(o, y), expected_tet)
    torch.testing.assert_close(
        tet_loss(o, y, lamb=0.0), F.cross_entropy(o.flatten(0, 1), y.repeat(4))
    )
    torch.testing.assert_close(mean_ce_loss(o, y), F.cross_entropy(o.mean(0), y))


def test_direct_training_step_reduces_loss():
    torch.manual_seed(6)
    net = build_model("nmnist_small")
    x = frames(net.input_shape, steps=4, batch=8) * 3
    y = torch.arange(8) % 10
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = tet_loss(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert net.body[0].layer.weight.grad.abs().sum() > 0  # gradient reached the first layer
