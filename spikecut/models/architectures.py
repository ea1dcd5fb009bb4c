"""Architectures of the paper (method §4.3) plus a small net for 34×34 N-MNIST-sized input.

Every architecture comes in two flavours built from one body description: `snn` (spiking neurons
at every activation site, LIF for direct training by default) and `ann` (QCFS activations, trained
as an ANN and turned into an IF SNN by `convert_to_snn`). The output layer is a plain Linear.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from spikecut.errors import ConfigError
from spikecut.models.conversion import QCFS
from spikecut.models.network import StepNet, WithBN, fold_batchnorm
from spikecut.models.neurons import DIRECT_LIF, NeuronConfig, SpikingNeuron

MakeAct = Callable[[], nn.Module]
FLAVOURS = ("snn", "ann")


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> WithBN:
    conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return WithBN(conv, nn.BatchNorm2d(cout))


def _pooled(size: int, pools: int) -> int:
    for _ in range(pools):
        size //= 2
    return size


def _check_size(name: str, input_shape: tuple[int, int, int], h: int, w: int) -> None:
    if h < 1 or w < 1:
        raise ConfigError(f"{name}: input {input_shape} is too small for this architecture")


def _vgg_dvs(input_shape: tuple[int, int, int], num_classes: int, act: MakeAct) -> nn.Module:
    """CIFAR10-DVS / N-Caltech101 VGG: 4×4/4 stem, then 64, 128, A, 256, 256, A, 512, 512, A,
    512, 512, A, Linear."""
    c, h, w = input_shape
    layers: list[nn.Module] = [conv_bn(c, 64, 4, 4, 0), act()]
    cin = 64
    for item in (64, 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A"):
        if item == "A":
            layers.append(nn.AvgPool2d(2))
        else:
            layers += [conv_bn(cin, int(item)), act()]
            cin = int(item)
    fh, fw = _pooled(h // 4, 4), _pooled(w // 4, 4)
    _check_size("vgg_dvs", input_shape, fh, fw)
    layers += [nn.Flatten(), nn.Linear(512 * fh * fw, num_classes)]
    return nn.Sequential(*layers)


def _vgg_gesture(input_shape: tuple[int, int, int], num_classes: int, act: MakeAct) -> nn.Module:
    """DVS128 Gesture VGG: 4×4/4 stem 64, 128, M, 4 × (128, M), Linear 512 + BN1d, Linear."""
    c, h, w = input_shape
    layers: list[nn.Module] = [conv_bn(c, 64, 4, 4, 0), act(), conv_bn(64, 128), act()]
    layers.append(nn.MaxPool2d(2))
    for _ in range(4):
        layers += [conv_bn(128, 128), act(), nn.MaxPool2d(2)]
    fh, fw = _pooled(h // 4, 5), _pooled(w // 4, 5)
    _check_size("vgg_gesture", input_shape, fh, fw)
    hidden = WithBN(nn.Linear(128 * fh * fw, 512), nn.BatchNorm1d(512))
    layers += [nn.Flatten(), hidden, act(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "A", 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A"),
    "vgg16": (64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A",
              512, 512, 512, "A"),
}  # fmt: skip


def _vgg(config: str) -> Callable[..., nn.Module]:
    def build(input_shape: tuple[int, int, int], num_classes: int, act: MakeAct) -> nn.Module:
        """CIFAR/ImageNet VGG: BN after each conv, AvgPool, classifier 4096 → 4096 → classes."""
        c, h, w = input_shape
        layers: list[nn.Module] = []
        cin = c
        for item in VGG_CONFIGS[config]:
            if item == "A":
                layers.append(nn.AvgPool2d(2))
            else:
                layers += [conv_bn(cin, int(item)), act()]
                cin = int(item)
        fh, fw = _pooled(h, 5), _pooled(w, 5)
        _check_size(config, input_shape, fh, fw)
        layers += [
            nn.Flatten(),
            nn.Linear(512 * fh * fw, 4096),
            act(),
            nn.Linear(4096, 4096),
            act(),
            nn.Linear(4096, num_classes),
        ]
        return nn.Sequential(*layers)

    return build


class BasicBlock(nn.Module):
    """ResNet basic block; the activation after the residual sum is a spiking layer in an SNN."""

    def __init__(self, cin: int, cout: int, stride: int, act: MakeAct) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride, 1)
        self.act1 = act()
        self.conv2 = conv_bn(cout, cout, 3, 1, 1)
        reshape = stride != 1 or cin != cout
        self.shortcut = conv_bn(cin, cout, 1, stride, 0) if reshape else nn.Identity()
        self.act2 = act()

    def forward(self, x: Tensor) -> Tensor:
        return self.act2(self.conv2(self.act1(self.conv1(x))) + self.shortcut(x))


def _resnet(widths: tuple[int, ...], blocks: tuple[int, ...]) -> Callable[..., nn.Module]:
    def build(
        input_shape: tuple[int, int, int], num_classes: int, act: MakeAct, stem: str = "cifar"
    ) -> nn.Module:
        """ResNet of BasicBlocks; `stem` "cifar" (3×3 conv, no pooling) or "imagenet"
        (7×7/2 conv + 3×3/2 max-pool). 1×1 conv + BN shortcuts where shapes change."""
        if stem == "cifar":
            layers: list[nn.Module] = [conv_bn(input_shape[0], widths[0]), act()]
        elif stem == "imagenet":
            layers = [conv_bn(input_shape[0], widths[0], 7, 2, 3), act(), nn.MaxPool2d(3, 2, 1)]
        else:
            raise ConfigError(f"resnet stem={stem!r}: expected 'cifar' or 'imagenet'")
        cin = widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(cin, width, stride, act))
                cin = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
        return nn.Sequential(*layers)

    return build


def _nmnist_small(input_shape: tuple[int, int, int], num_classes: int, act: MakeAct) -> nn.Module:
    """Small fast net for 34×34 input: two 3×3 stride-2 convs (16, 32 channels) and one Linear;
    about 0.1 ms per single step on one CPU core."""
    c, h, w = input_shape
    layers: list[nn.Module] = [conv_bn(c, 16, 3, 2, 1), act(), conv_bn(16, 32, 3, 2, 1), act()]
    fh, fw = (h + 1) // 2, (w + 1) // 2
    fh, fw = (fh + 1) // 2, (fw + 1) // 2
    layers += [nn.Flatten(), nn.Linear(32 * fh * fw, num_classes)]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class Architecture:
    build: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]
    num_classes: int
    description: str
    options: tuple[str, ...] = ()


ARCHITECTURES: dict[str, Architecture] = {
    "vgg_cifar10dvs": Architecture(
        _vgg_dvs, (2, 128, 128), 10, "CIFAR10-DVS VGG (4×4/4 stem, AvgPool, one FC)"
    ),
    "vgg_ncaltech101": Architecture(
        _vgg_dvs, (2, 180, 240), 101, "N-Caltech101 VGG (same body, 2×180×240, FC 512·2·3)"
    ),
    "vgg_gesture": Architecture(
        _vgg_gesture, (2, 128, 128), 11, "DVS128 Gesture VGG (128 channels, MaxPool, FC 512)"
    ),
    "resnet18": Architecture(
        _resnet((64, 128, 256, 512), (2, 2, 2, 2)), (3, 32, 32), 10, "ResNet-18", ("stem",)
    ),
    "resnet20": Architecture(
        _resnet((16, 32, 64), (3, 3, 3)), (3, 32, 32), 10, "CIFAR ResNet-20", ("stem",)
    ),
    "vgg11": Architecture(_vgg("vgg11"), (3, 32, 32), 10, "VGG-11 (AvgPool, 4096-wide FCs)"),
    "vgg16": Architecture(_vgg("vgg16"), (3, 32, 32), 10, "VGG-16 (AvgPool, 4096-wide FCs)"),
    "nmnist_small": Architecture(
        _nmnist_small, (2, 34, 34), 10, "small fast net for 34×34 N-MNIST-sized input"
    ),
}


def build_model(
    name: str,
    *,
    flavour: str = "snn",
    num_classes: int | None = None,
    input_shape: tuple[int, int, int] | list[int] | None = None,
    neuron: NeuronConfig | dict[str, Any] | None = None,
    qcfs_levels: int = 4,
    qcfs_init: float = 8.0,
    **options: Any,
) -> StepNet:
    """Build a registered architecture.

    flavour "snn": spiking neurons with `neuron` (default LIF θ=1, τ=0.5, hard reset).
    flavour "ann": QCFS activations with `qcfs_levels` L and λ initialised to `qcfs_init`.
    `input_shape` is (channels, height, width); architecture-specific `options` (ResNet `stem`)
    are listed in `ARCHITECTURES[name].options`.
    """
    if name not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    arch = ARCHITECTURES[name]
    if flavour not in FLAVOURS:
        raise ConfigError(f"flavour={flavour!r}: expected one of {FLAVOURS}")
    unknown = sorted(set(options) - set(arch.options))
    if unknown:
        raise ConfigError(f"{name}: unknown option(s) {unknown}; allowed: {list(arch.options)}")
    shape = tuple(int(v) for v in (input_shape or arch.input_shape))
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"{name}: input_shape={input_shape!r} must be (channels, height, width)")
    classes = int(num_classes if num_classes is not None else arch.num_classes)
    if classes < 2:
        raise ConfigError(f"{name}: num_classes={classes} must be >= 2")

    kwargs: dict[str, Any] = {
        "flavour": flavour,
        "num_classes": classes,
        "input_shape": list(shape),
    }
    if flavour == "snn":
        if isinstance(neuron, dict):
            neuron = NeuronConfig.from_dict(neuron)
        config = neuron or DIRECT_LIF
        kwargs["neuron"] = config.to_dict()

        def act() -> nn.Module:
            return SpikingNeuron(config)

    else:
        if neuron is not None:
            raise ConfigError(f"{name}: an ANN (flavour 'ann') takes no neuron config")

        def act() -> nn.Module:
            return QCFS(qcfs_levels, qcfs_init)

        kwargs.update(qcfs_levels=int(qcfs_levels), qcfs_init=float(qcfs_init))
    kwargs.update(options)
    body = arch.build(shape, classes, act, **options)
    spec = {"arch": name, "kwargs": kwargs, "bn_folded": False}
    return StepNet(body, input_shape=shape, num_classes=classes, spec=spec)


def build_from_spec(spec: dict[str, Any]) -> StepNet:
    """Rebuild the network a `StepNet.spec` describes (fresh weights, BN folded if it says so)."""
    net = build_model(spec["arch"], **spec["kwargs"])
    if spec.get("bn_folded"):
        net = fold_batchnorm(net)
    net.spec = dict(spec)
    return net
