"""What a conversion's ANN is trained on: prefix means of the windows (`ann_input` with lengths),
the IF twin following the ANN on those prefix means step by step, and the config field that
selects it (with old saved configs still read as what they were trained with)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spikecut.errors import ConfigError
from spikecut.models import QCFS, StepNet, convert_to_snn, cumulative
from spikecut.models.training import TrainConfig, ann_input, prefix_lengths

pytestmark = pytest.mark.timeout(30)


def test_ann_input_is_the_mean_of_each_samples_first_windows():
    frames = torch.arange(4 * 3 * 2, dtype=torch.float64).reshape(4, 3, 2, 1, 1)  # [T, B, P, H, W]
    torch.testing.assert_close(ann_input(frames), frames.mean(dim=0, keepdim=True))
    got = ann_input(frames, torch.tensor([1, 4, 2]))
    assert got.shape == (1, 3, 2, 1, 1)
    torch.testing.assert_close(got[0, 0], frames[0, 0])
    torch.testing.assert_close(got[0, 1], frames[:, 1].mean(dim=0))
    torch.testing.assert_close(got[0, 2], (frames[0, 2] + frames[1, 2]) / 2)
    for bad in ([0, 1, 1], [1, 5, 1], [1, 1]):
        with pytest.raises(ConfigError, match="lengths"):
            ann_input(frames, torch.tensor(bad))


def test_prefix_lengths_depend_only_on_seed_epoch_and_sample():
    lengths = prefix_lengths(range(400), 10, seed=3, epoch=2)
    assert lengths.dtype == torch.long and set(lengths.tolist()) == set(range(1, 11))
    # another batch split or order (other processes, resumes) draws the same length per sample
    again = prefix_lengths([399, 7, 123], 10, seed=3, epoch=2)
    assert again.tolist() == [int(lengths[399]), int(lengths[7]), int(lengths[123])]
    assert not torch.equal(prefix_lengths(range(400), 10, seed=3, epoch=3), lengths)


def test_the_if_twin_at_step_t_is_the_ann_on_the_mean_of_the_first_t_windows():
    """One QCFS layer, non-negative currents below λ each step: after t steps an IF neuron
    (θ = λ, v0 = λ/2, soft reset) has fired floor(S_t/λ + 1/2) times, S_t its summed input,
    which is t·QCFS(S_t/t)/λ with L = t. So Y(t)/t equals the ANN (L = t) on the prefix mean:
    the frames the SNN has seen by step t, which prefix training shows the ANN."""
    torch.manual_seed(0)
    steps = 6
    qcfs = QCFS(steps, 1.0)
    body = nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), qcfs, nn.Flatten(), nn.Linear(5 * 4 * 4, 3))
    spec = {"arch": "one_layer", "kwargs": {"flavour": "ann"}, "bn_folded": False}
    ann = StepNet(body, input_shape=(2, 4, 4), num_classes=3, spec=spec).double().eval()
    frames = torch.rand(steps, 2, 2, 4, 4, dtype=torch.float64)
    frames[:, 1, :, :2] = 0  # a sample whose first half is silent in some windows
    frames[2:4, 1] *= 4  # and whose windows differ strongly in strength
    with torch.no_grad():
        body[0].weight.abs_()
        body[0].bias.zero_()
        qcfs.lam.fill_(1.01 * float(body[0](frames.flatten(0, 1)).max()))  # currents below λ
        y = cumulative(convert_to_snn(ann)(frames))
        for t in range(1, steps + 1):
            qcfs.levels = t
            expected = ann(ann_input(frames, torch.full((2,), t)))[0]
            torch.testing.assert_close(y[t - 1] / t, expected, rtol=1e-10, atol=1e-10)
            if 1 < t < steps:  # the ANN on the mean of all windows is not what the SNN computes
                assert not torch.allclose(y[t - 1] / t, ann(ann_input(frames))[0], atol=1e-3)


def test_ann_frames_defaults_to_prefix_for_conversion_and_old_configs_read_as_mean():
    conversion = TrainConfig(method="conversion")
    assert conversion.ann_frames == "prefix"
    assert TrainConfig(method="direct").ann_frames is None
    assert TrainConfig(method="conversion", ann_frames="mean").ann_frames == "mean"
    with pytest.raises(ConfigError, match="ann_frames"):
        TrainConfig(method="conversion", ann_frames="last")
    with pytest.raises(ConfigError, match="conversion"):
        TrainConfig(method="direct", ann_frames="prefix")
    saved_before = {k: v for k, v in conversion.to_dict().items() if k != "ann_frames"}
    assert TrainConfig.from_dict(saved_before).ann_frames == "mean"
    direct = TrainConfig(method="direct").to_dict()
    old_direct = {k: v for k, v in direct.items() if k != "ann_frames"}
    assert TrainConfig.from_dict(old_direct).to_dict() == direct
    assert TrainConfig.from_dict(conversion.to_dict()).to_dict() == conversion.to_dict()
