import math

import pytest
import torch

from spikecut.errors import ConfigError
from spikecut.models import (
    ConfidenceRule,
    EntropyRule,
    FixedStepRule,
    TopKRule,
    accuracy_per_step,
    build_model,
    calibrate_topk,
    collect_outputs,
    evaluate_stops,
    oct_steps,
    rule_from_dict,
    topk_gap,
)


def outputs_from(preds_and_gaps, classes=3):
    """Cumulative outputs Y [T, N, C] with Y_t = gap · e_pred, so top1 − top2 = gap exactly."""
    steps = len(preds_and_gaps[0][0])
    y = torch.zeros(steps, len(preds_and_gaps), classes)
    for n, (preds, gaps) in enumerate(preds_and_gaps):
        for t, (c, g) in enumerate(zip(preds, gaps, strict=True)):
            y[t, n, c] = g
    return y


# All labels 0. A: right throughout (OCT 1); B: wrong at t=1 (OCT 2); C: wrong at t=2 (OCT 3);
# D: wrong throughout and E: right until it turns wrong at T (both get OCT T = 3).
SAMPLES = [
    ([0, 0, 0], [5.0, 4.0, 10.0]),
    ([1, 0, 0], [3.0, 1.0, 6.0]),
    ([0, 1, 0], [1.0, 2.0, 2.0]),
    ([1, 1, 1], [0.5, 0.5, 0.5]),
    ([0, 0, 1], [0.25, 0.25, 0.25]),
]
LABELS = torch.zeros(5, dtype=torch.long)


def test_topk_gap_and_oct():
    y = outputs_from(SAMPLES)
    assert topk_gap(y)[:, 0].tolist() == [5.0, 4.0, 10.0]
    assert topk_gap(torch.tensor([3.0, 7.0, -1.0, 7.0])).item() == 0.0  # ties give a zero gap
    assert oct_steps(y, LABELS).tolist() == [1, 2, 3, 3, 3]
    assert accuracy_per_step(y, LABELS).tolist() == [0.6, 0.6, 0.6]


def test_calibration_on_constructed_outputs():
    """max gap = 10 → grid β_m = 0.1·m.
    t=1: gaps A 5 (OCT ≤ 1), B 3, C 1, D 0.5, E 0.25 (not yet settled): only β ≥ 3 leaves A.
    t=2: A 4 and B 1 settled, C 2, D 0.5, E 0.25 not: β ≥ 2 → 2.0.
    t=3: every sample counts as settled at T (OCT is T for the wrong ones) → 0.0.
    With ε = 0.5: t=1 needs half the samples above β settled: β = 1.0 keeps {A, B} → 1.0;
    t=2: β = 0.2 keeps all five (2 settled: 0.4), β = 0.3 drops E (2 of 4) → 0.3."""
    y = outputs_from(SAMPLES)
    strict = calibrate_topk(y, LABELS, epsilon=0.0)
    assert strict.beta.tolist() == pytest.approx([3.0, 2.0, 0.0])
    assert strict.grid.shape == (100,) and strict.grid[1].item() == pytest.approx(0.1)
    assert calibrate_topk(y, LABELS, epsilon=0.5).beta.tolist() == pytest.approx([1.0, 0.3, 0.0])
    # Bookkeeping: at t=2 no sample has a gap above 4.0 → empty bin → NaN (fails); the last row
    # is forced to 1.
    assert strict.counts[40, 1] == 0 and math.isnan(strict.confidence[40, 1])
    assert strict.counts[29, 0] == 2 and strict.confidence[29, 0] == 0.5
    assert (strict.confidence[-1] == 1).all()
    rule = strict.rule()
    assert rule.beta == pytest.approx([3.0, 2.0, 0.0]) and rule.epsilon == 0.0
    assert rule.stop_steps(y).tolist() == [1, 3, 3, 3, 3]


def test_last_grid_point_always_qualifies():
    # One sample, wrong at t=1 with the largest gap of all: no grid point < 9.9 works at t=1.
    y = outputs_from([([1, 0], [10.0, 3.0])])
    result = calibrate_topk(y, torch.tensor([0]), epsilon=0.0)
    assert result.beta.tolist() == pytest.approx([9.9, 0.0])
    assert calibrate_topk(y, torch.tensor([0]), grid_points=10).beta.tolist() == pytest.approx(
        [9.0, 0.0]
    )


def random_outputs(seed, steps=8, n=300, classes=10):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    per_step = torch.randn(steps, n, classes, generator=g)
    per_step[:, torch.arange(n), labels] += 0.8  # a drift toward the label, as trained nets have
    return per_step.cumsum(0), labels


def all_rules(y_cal, labels_cal, steps):
    return [
        calibrate_topk(y_cal, labels_cal, epsilon=0.05).rule(),
        calibrate_topk(y_cal, labels_cal, epsilon=0.0).rule(),
        FixedStepRule(3, steps),
        ConfidenceRule(0.9, steps),
        EntropyRule(0.6, steps),
    ]


def test_online_and_offline_decisions_agree_exactly():
    y_cal, labels_cal = random_outputs(0)
    y, labels = random_outputs(1)
    for rule in all_rules(y_cal, labels_cal, 8):
        offline = rule.stop_steps(y)
        online = []
        for n in range(y.shape[1]):
            for t in range(1, 9):
                check = rule.should_stop(t, y[t - 1, n])
                if check:
                    online.append(t)
                    assert not check.forced or t == 8
                    break
        assert online == offline.tolist(), rule.name
        assert 1 < offline.double().mean() < 8, rule.name  # the test exercises real early exits


def test_should_stop_result():
    rule = TopKRule([3.0, 2.0, 0.0])
    check = rule.should_stop(1, torch.tensor([5.0, 1.0, 0.0]))
    assert check and check.score == 4.0 and check.threshold == 3.0 and not check.forced
    check = rule.should_stop(2, torch.tensor([5.0, 4.0, 0.0]))
    assert not check and check.score == 1.0
    check = rule.should_stop(3, torch.tensor([5.0, 5.0, 0.0]))
    assert check and check.forced
    assert rule.should_stop(4, torch.tensor([5.0, 5.0, 0.0])).forced
    with pytest.raises(ValueError, match="1-based"):
        rule.should_stop(0, torch.zeros(3))
    with pytest.raises(ValueError, match="one stream"):
        rule.should_stop(1, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="T=3"):
        rule.stop_steps(torch.zeros(4, 2, 3))
    fixed = FixedStepRule(2, 5)
    assert [bool(fixed.should_stop(t, torch.zeros(3))) for t in (1, 2)] == [False, True]


def test_evaluate_stops_and_oct():
    y = outputs_from(SAMPLES)
    result = evaluate_stops(y, LABELS, torch.tensor([1, 3, 3, 3, 2]))
    assert result.correct.tolist() == [True, True, True, False, True]
    assert result.accuracy == 0.8 and result.mean_steps == 2.4
    assert result.reduction == pytest.approx(3 / 2.4)
    oracle = evaluate_stops(y, LABELS, oct_steps(y, LABELS))
    # OCT accuracy is the accuracy at T: E, right before T but wrong at T, does not count.
    assert oracle.accuracy == accuracy_per_step(y, LABELS)[-1].item() == 0.6
    assert oracle.mean_steps == pytest.approx(12 / 5)


def test_rules_round_trip_through_dicts():
    y, labels = random_outputs(2, steps=5)
    for rule in all_rules(y, labels, 5):
        again = rule_from_dict(rule.to_dict())
        assert type(again) is type(rule) and again.to_dict() == rule.to_dict()
        assert torch.equal(again.stop_steps(y), rule.stop_steps(y))
    for bad in (
        {"rule": "spikecp"},
        {"beta": [1.0]},
        {"rule": "topk", "beta": [1.0, float("nan")]},
        {"rule": "fixed", "step": 9, "timesteps": 4},
        {"rule": "confidence", "threshold": 1.5, "timesteps": 4},
        {"rule": "entropy", "limit": 1.0, "timesteps": 4},
    ):
        with pytest.raises(ConfigError):
            rule_from_dict(bad)


def test_collect_outputs_with_and_without_calibration_dropout():
    torch.manual_seed(3)
    net = build_model("nmnist_small").train()
    batches = [
        (torch.poisson(torch.full((4, 3, 2, 34, 34), 2.0)), torch.tensor([0, 1, 2]))
        for _ in range(2)
    ]
    y, labels = collect_outputs(net, batches)
    assert y.shape == (4, 6, 10) and labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert net.training  # restored
    again, _ = collect_outputs(net, batches)
    assert torch.equal(y, again)  # eval mode, no dropout: deterministic
    noisy, _ = collect_outputs(net, batches, dropout=0.3)
    assert not torch.equal(noisy, y)
    assert all(n.dropout == 0 for n in net.neurons)
    with torch.no_grad():
        net.eval()
        torch.testing.assert_close(y[:, :3], net(batches[0][0]).cumsum(0))


def test_calibration_input_checks():
    y, labels = random_outputs(4, steps=3, n=5)
    with pytest.raises(ConfigError, match="epsilon"):
        calibrate_topk(y, labels, epsilon=1.0)
    with pytest.raises(ValueError, match="labels"):
        calibrate_topk(y, labels[:3])


def test_topk_online_score_matches_the_tensor_path_on_edge_values():
    """The online Top-K gap (numpy fast path) equals `topk_gap` bit for bit: float32 rounding,
    ties at the threshold, NaN and infinities, and float64 outputs."""
    rows = [
        [0.1, 0.3, 0.7],
        [1e8, 1.0, 1e8 - 8],  # float32 subtraction rounds
        [2.0, 2.0, 1.0],  # tie: gap 0
        [float("nan"), 1.0, 0.0],
        [float("inf"), 1.0, 0.0],
        [float("-inf"), float("-inf"), 0.0],
    ]
    for dtype in (torch.float32, torch.float64):
        y = torch.tensor(rows, dtype=dtype)
        expected = topk_gap(y).double()
        for row, gap in zip(y, expected, strict=True):
            at = float(gap) if torch.isfinite(gap) else 0.0
            for beta in (at, math.nextafter(at, -math.inf)):  # on the threshold, just above it
                rule = TopKRule([beta, beta])
                check = rule.should_stop(1, row)
                assert check.score == float(gap) or (math.isnan(check.score) and gap.isnan())
                offline = rule.stop_steps(torch.stack([row, row])[:, None])
                assert (1 if check.stop else 2) == int(offline[0]), (row, dtype, beta)
