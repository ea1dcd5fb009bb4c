"""Evaluation: every rule and key in the report, matched baselines, figures, and early exit that
really runs fewer network steps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from spikecut.models import TopKRule, load_checkpoint
from spikecut.models.evaluation import (
    Point,
    evaluate_checkpoint,
    load_eval_frames,
    matched,
    pareto_front,
    plot_report,
    threshold_sweep,
    timed_early_exit,
)
from spikecut.models.training import EPSILONS, TrainConfig, train
from spikecut.sources.datasets import EmulatedDigits, write_recordings
from tools import evaluate as evaluate_tool

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("eval")
    folder = write_recordings(EmulatedDigits(), base / "digits", indices=range(120))
    config = TrainConfig(
        dataset="emulated-digits",
        root=str(folder),
        timesteps=5,
        epochs=3,
        batch_size=16,
        limit=40,
        validation=0.2,
        test=0.3,
        out_dir=str(base / "run"),
    )
    return train(config, progress=False).checkpoint


@pytest.fixture(scope="module")
def report(checkpoint) -> dict:
    return evaluate_checkpoint(checkpoint, timing_samples=12)


def test_report_has_every_rule_and_key(report):
    json.dumps(report, allow_nan=False)  # plain JSON
    steps = report["timesteps"]
    n = report["samples"]
    assert steps == 5 and 30 <= n <= 40 and report["split"] == "test"
    assert len(report["accuracy_per_t"]) == steps
    assert report["accuracy_T"] == report["accuracy_per_t"][-1]
    assert report["oct"]["accuracy"] == report["accuracy_T"]  # OCT is forced to T when wrong
    assert 1 <= report["oct"]["mean_steps"] <= steps and sum(report["oct"]["histogram"]) == n
    assert [row["epsilon"] for row in report["topk"]] == list(EPSILONS)
    for row in report["topk"]:
        assert row["rule"]["rule"] == "topk" and len(row["rule"]["beta"]) == steps
        assert math.isclose(row["reduction"], steps / row["mean_steps"])
        assert sum(row["histogram"]) == n
    assert set(report["baselines"]) == {"confidence", "entropy", "fixed"}
    assert [p["rule"]["step"] for p in report["baselines"]["fixed"]] == list(range(1, steps + 1))
    assert set(report["matched"]) == {f"{e:.2f}" for e in EPSILONS}
    for per_eps, row in zip(report["matched"].values(), report["topk"], strict=True):
        for name, point in per_eps.items():
            assert name in ("confidence", "entropy", "fixed")
            if point["matched"]:
                assert point["accuracy"] >= row["accuracy"] - 1e-9
    timing = report["timing"]
    eps = report["default_epsilon"]
    rules = ("topk", "confidence", "entropy", "fixed")
    assert set(timing) == {
        "full",
        "topk@0.00",
        f"topk@{eps:.2f}",
        *(f"{name}@matched" for name in rules[1:]),
        *(f"{name}@validation" for name in rules),
    }
    chosen = report["chosen_on_validation"]
    assert set(chosen) == set(rules)
    assert chosen["topk"]["rule"]["epsilon"] == eps  # the checkpoint's ε was chosen the same way
    for point in chosen.values():
        assert point["validation"]["matched"]  # T itself always qualifies
    assert timing["full"]["mean_steps"] == steps and timing["full"]["net_steps"] == 12 * steps
    for row in timing.values():
        assert row["ms_per_sample"] > 0 and row["speedup_vs_full"] > 0
        assert row["agrees_with_offline"] == 1.0  # online stops are the offline ones


def test_early_exit_runs_fewer_network_steps(checkpoint):
    net, config = load_checkpoint(checkpoint)
    data = load_eval_frames(config, "test")
    frames = [data.frames[i].float() for i in range(10)]
    calls = {"n": 0}
    step = net.step

    def counting_step(*args, **kwargs):
        calls["n"] += 1
        return step(*args, **kwargs)

    net.step = counting_step
    always = TopKRule([-1.0] * config.timesteps, 0.0)  # the gap is >= 0 > β: stop after step 1
    calibrated = config.cutoff_rule()
    result = timed_early_exit(net, frames, data.labels, {"always": always, "topk": calibrated})
    warmup = config.timesteps
    assert calls["n"] == warmup + sum(row["net_steps"] for row in result.values())
    assert result["full"]["net_steps"] == 10 * config.timesteps
    assert result["always"]["net_steps"] == 10 and result["always"]["mean_steps"] == 1
    assert result["topk"]["net_steps"] < result["full"]["net_steps"]


def test_pareto_front_and_matching():
    pts = [
        Point({"rule": "a"}, 0.90, 2.0, 5.0),
        Point({"rule": "b"}, 0.85, 3.0, 10 / 3),  # dominated by a
        Point({"rule": "c"}, 0.95, 4.0, 2.5),
        Point({"rule": "d"}, 0.95, 5.0, 2.0),  # dominated by c
    ]
    front = pareto_front(pts)
    assert [p.rule["rule"] for p in front] == ["a", "c"]
    assert matched(front, 0.92)["rule"] == {"rule": "c"}
    assert matched(front, 0.90)["rule"] == {"rule": "a"}
    miss = matched(front, 0.99)
    assert miss["matched"] is False and miss["rule"] == {"rule": "c"}


def test_threshold_sweeps_cover_both_ends():
    torch.manual_seed(0)
    y = torch.randn(6, 50, 10).cumsum(0) * 3
    labels = y[-1].argmax(-1)
    labels[:5] = (labels[:5] + 1) % 10
    for kind in ("confidence", "entropy"):
        front = threshold_sweep(kind, y, labels)
        assert front[0].mean_steps == 1.0  # a threshold that stops everyone at once
        accs = [p.accuracy for p in front]
        assert accs == sorted(accs)
        # the front reaches the accuracy at T (a threshold nobody crosses)
        assert front[-1].accuracy >= float((y[-1].argmax(-1) == labels).double().mean())


def test_figures_and_the_tool(checkpoint, report, tmp_path):
    paths = plot_report(report, tmp_path / "fig", "tiny")
    assert [p.name for p in paths] == [
        "accuracy_vs_steps.png",
        "stop_histogram.png",
        "accuracy_vs_t.png",
    ]
    assert all(p.stat().st_size > 5000 for p in paths)
    out = tmp_path / "tool"
    assert evaluate_tool.main([str(checkpoint), "--no-timing", "--out", str(out)]) == 0
    written = json.loads((out / "report.json").read_text())
    assert "timing" not in written and written["topk"] == report["topk"]
    assert (out / "accuracy_vs_steps.png").is_file()
