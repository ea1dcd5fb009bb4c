import math

import pytest
import torch

from spikecut.errors import ConfigError
from spikecut.models import build_model, rcs_loss, record_activations, tet_loss
from spikecut.models.neurons import ActivationRecords, PreActivation, SpikeRecord
from spikecut.models.rcs import (
    ann_correct_mask,
    ann_penalty,
    reduce_penalties,
    snn_correct_mask,
    snn_penalty,
    tail_length,
)


def test_tail_length_follows_the_reference_slice():
    assert [tail_length(t) for t in (1, 2, 3, 4, 10, 16)] == [1, 2, 3, 1, 3, 4]
    assert tail_length(10, 0.5) == 5


def hand_cos(a, b):
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a) + 1e-5) * math.sqrt(sum(y * y for y in b) + 1e-5))


def test_snn_penalty_on_a_hand_computed_case():
    # T = 4 → ⌊0.3·4⌋ = 1: the reference is r(4). θ = 2, so r = s + ReLU(u / 2).
    spikes = torch.tensor(
        [[[0, 0], [0, 0]], [[1, 0], [0, 0]], [[0, 1], [0, 0]], [[1, 0], [0, 0]]],
        dtype=torch.float64,
    )
    membrane = torch.tensor(
        [[[1.0, 0], [0, 0]], [[0, 1.0], [0, 0]], [[-0.6, 0], [0, 0]], [[0, 0], [0, 0]]],
        dtype=torch.float64,
    )
    record = SpikeRecord(spikes, membrane, torch.tensor(2.0, dtype=torch.float64))
    # Sample 0: r = [.5, 0], [1, .5], [0, 1], [1, 0]; sample 1: all zeros.
    r0 = [[0.5, 0.0], [1.0, 0.5], [0.0, 1.0], [1.0, 0.0]]
    expected0 = 1 / (sum(hand_cos(r, r0[3]) for r in r0) / 4 + 1e-5)
    expected1 = 1 / (0 + 1e-5)  # zero activity: cos = 0, the 1e-5 keeps R finite
    penalty = snn_penalty(record)
    assert penalty.tolist() == [pytest.approx(expected0, rel=1e-12), pytest.approx(expected1)]
    assert expected0 == pytest.approx(1 / ((1 + 2 / math.sqrt(5) + 0 + 1) / 4), rel=1e-4)


def test_snn_penalty_reference_covers_all_steps_when_t_is_small():
    # T = 3 → ⌊0.9⌋ = 0 → all steps: reference is the mean of r(1..3).
    s = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]], dtype=torch.float64)
    record = SpikeRecord(s, torch.zeros_like(s), torch.tensor(1.0, dtype=torch.float64))
    ref = [2 / 3, 2 / 3]
    expected = 1 / (sum(hand_cos(r, ref) for r in ([1, 0], [0, 1], [1, 1])) / 3 + 1e-5)
    assert snn_penalty(record).item() == pytest.approx(expected, rel=1e-12)


def test_snn_penalty_gradient_with_stop_gradient_reference():
    """gradcheck on the membranes outside the reference window (the reference is detached, so
    only those steps have a gradient that numerical differentiation can reproduce)."""
    torch.manual_seed(0)
    steps = 10  # reference = last 3 steps
    spikes = (torch.rand(steps, 3, 2, 2) < 0.4).double()
    tail = torch.randn(3, 3, 2, 2, dtype=torch.float64)
    head = torch.randn(steps - 3, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    theta = torch.tensor(0.7, dtype=torch.float64)

    def f(u_head):
        return snn_penalty(SpikeRecord(spikes, torch.cat([u_head, tail]), theta))

    assert torch.autograd.gradcheck(f, (head,))
    tail_var = tail.clone().requires_grad_(True)
    snn_penalty(SpikeRecord(spikes, torch.cat([head, tail_var]), theta)).sum().backward()
    assert tail_var.grad is not None  # r(t) in the window still gets its direct gradient


def test_ann_penalty_on_a_hand_computed_case_and_gradcheck():
    x = torch.tensor([[[-1.0, 2.0], [1.0, 1.0]]], dtype=torch.float64)  # [T=1, B=2, F=2]
    expected = [2 / math.sqrt(2 + 1e-5), 2 / math.sqrt(1 + 1e-5)]
    assert ann_penalty(PreActivation(x)).tolist() == pytest.approx(expected, rel=1e-12)
    torch.manual_seed(1)
    xs = torch.randn(1, 4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: ann_penalty(PreActivation(v)), (xs,))


def test_correctness_masks_and_reduction():
    labels = torch.tensor([0, 1, 1])
    o = torch.zeros(4, 3, 2)
    o[:, 0, 0] = 1  # sample 0 right at every step
    o[:3, 1, 1] = 1  # sample 1 right except the last step
    o[3, 1, 0] = 1
    o[:3, 2, 0] = 1  # sample 2 wrong except the last step
    o[3, 2, 1] = 1
    assert snn_correct_mask(o, labels).tolist() == [True, False, True]  # last ⌊1.2⌋ = 1 step
    assert snn_correct_mask(o, labels, fraction=0.5).tolist() == [True, False, False]
    assert ann_correct_mask(o, labels).tolist() == [True, True, False]  # time-averaged output
    penalties = torch.tensor([[1.0, 5.0], [3.0, 2.0], [9.0, 9.0]])
    mask = torch.tensor([True, True, False])
    assert reduce_penalties(penalties, mask).item() == pytest.approx((3 + 5) / 2)
    assert reduce_penalties(penalties, torch.zeros(3, dtype=torch.bool)).item() == 0


def test_rcs_loss_in_a_direct_training_step():
    torch.manual_seed(2)
    net = build_model("nmnist_small")
    x = torch.poisson(torch.full((6, 4, 2, 34, 34), 1.5))
    with record_activations() as records:
        out = net(x)
    assert len(records) == len(net.neurons) == 2
    assert records.layers[0].spikes.shape == (6, 4, 16, 17, 17)
    labels = out[-1].argmax(-1).detach()  # right over the whole tail of ⌊0.3·6⌋ = 1 step
    labels[0] = (labels[0] + 1) % 10  # except sample 0
    mask = snn_correct_mask(out, labels)
    assert mask.tolist() == [False, True, True, True]
    penalties = torch.stack([snn_penalty(r) for r in records.layers], 1)  # [B, L]
    loss = rcs_loss(records, out, labels)
    torch.testing.assert_close(loss, penalties[1:].max(dim=0).values.mean())
    assert loss > 1  # R = 1 / mean cos ≥ 1
    (tet_loss(out, labels) + 0.002 * loss).backward()
    assert net.body[0].layer.weight.grad.abs().sum() > 0


def test_rcs_loss_ann_form_and_errors():
    torch.manual_seed(3)
    ann = build_model("nmnist_small", flavour="ann")
    x = torch.rand(1, 5, 2, 34, 34)
    with record_activations() as records:
        out = ann(x)
    assert all(isinstance(r, PreActivation) for r in records.layers)
    labels = out.mean(0).argmax(-1)  # every sample correct
    expected = torch.stack([ann_penalty(r) for r in records.layers], 1).max(0).values.mean()
    torch.testing.assert_close(rcs_loss(records, out, labels), expected)
    with pytest.raises(ConfigError, match="no activations"):
        rcs_loss(ActivationRecords(), out, labels)
    mixed = ActivationRecords([records.layers[0], SpikeRecord(out, out, torch.tensor(1.0))])
    with pytest.raises(ConfigError, match="mix"):
        rcs_loss(mixed, out, labels)
