"""Evaluating a calibrated checkpoint: every cutoff rule offline, then with real early exit.

Offline (one multi-step pass over the test set, cumulative outputs Y [T, N, C]):
- accuracy at every t (the fixed-timestep baseline) and the OCT oracle;
- Top-K with the β[t] calibrated for each ε (from the checkpoint's `extra["calibration"]`, or
  recomputed from a calibration set);
- max-softmax (`ConfidenceRule`) and entropy (`EntropyRule`) over *every* threshold that changes
  a decision on this set, reduced to the Pareto front (fewest mean steps for each accuracy).
  `matched` picks, for each Top-K ε, the baseline setting with the fewest mean steps among those
  at least as accurate as Top-K. The baselines' thresholds are thus tuned on the test set itself,
  which favours them; Top-K's β come from the training set.

Online (`timed_early_exit`): each sample runs step by step through `net.step` with batch 1 and
stops as soon as the rule says so, the way the streaming runner does; the same loop forced to all
T steps is timed in the same run, interleaved sample by sample, so machine load hits both alike.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from spikecut.errors import CheckpointError, ConfigError
from spikecut.models.checkpoint import CheckpointConfig, load_checkpoint
from spikecut.models.cutoff import (
    CALIBRATION_DROPOUT,
    ConfidenceRule,
    CutoffRule,
    EntropyRule,
    FixedStepRule,
    TopKRule,
    accuracy_per_step,
    calibrate_topk,
    collect_outputs,
    evaluate_stops,
    max_softmax,
    oct_steps,
    rule_from_dict,
    softmax_entropy,
)
from spikecut.models.data import FrameSet, dataset_splits, frame_set, ordered_batches
from spikecut.models.network import StepNet
from spikecut.pipeline.binning import WindowSpec
from spikecut.sources.datasets import FramesDataset

#: Rules the report compares, in plotting order.
BASELINES = ("confidence", "entropy", "fixed")
#: The paper's tolerance sweep.
EPSILONS = tuple(round(0.01 * i, 2) for i in range(10))


def calibrate(
    net: StepNet,
    data: FrameSet | FramesDataset,
    epsilons: Sequence[float] = EPSILONS,
    *,
    dropout: float = CALIBRATION_DROPOUT,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """Top-K thresholds β[t] for every ε from `net`'s outputs on `data` (the training split, no
    augmentation) with calibration dropout after every spiking layer (method §2.3). Returns the
    JSON-able record checkpoints keep in `extra["calibration"]`."""
    torch.manual_seed(seed)
    y, labels = collect_outputs(net, ordered_batches(data, batch_size), dropout=dropout)
    return {
        "set": "train",
        "samples": int(labels.shape[0]),
        "dropout": dropout,
        "epsilons": [float(e) for e in epsilons],
        "beta": [calibrate_topk(y, labels, eps).beta.tolist() for eps in epsilons],
        "train_acc_T_with_dropout": float((y[-1].argmax(-1) == labels).double().mean()),
    }


@dataclass(frozen=True)
class Point:
    """One rule setting's outcome on a labelled set."""

    rule: dict[str, Any]
    accuracy: float
    mean_steps: float
    reduction: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "accuracy": self.accuracy,
            "mean_steps": self.mean_steps,
            "reduction": self.reduction,
        }


def score_rule(rule: CutoffRule, y: Tensor, labels: Tensor) -> tuple[Point, Tensor]:
    """The rule's offline outcome on cumulative outputs y [T, N, C], and its stop steps [N]."""
    stops = rule.stop_steps(y)
    result = evaluate_stops(y, labels, stops)
    return Point(rule.to_dict(), result.accuracy, result.mean_steps, result.reduction), stops


def histogram(stops: Tensor, timesteps: int) -> list[int]:
    """How many samples stopped at t = 1..T."""
    return torch.bincount(stops.long() - 1, minlength=timesteps)[:timesteps].tolist()


def pareto_front(points: Iterable[Point]) -> list[Point]:
    """Points no other point beats on both accuracy (higher) and mean steps (lower), sorted by
    mean steps."""
    best: list[Point] = []
    for p in sorted(points, key=lambda p: (p.mean_steps, -p.accuracy)):
        if not best or p.accuracy > best[-1].accuracy:
            best.append(p)
    return best


def threshold_sweep(kind: str, y: Tensor, labels: Tensor) -> list[Point]:
    """Pareto front of max-softmax ("confidence") or entropy rules over every threshold that
    changes a decision on y (the observed scores themselves, plus one that stops everything at
    t = 1)."""
    steps = y.shape[0]
    if kind == "confidence":
        scores = torch.unique(max_softmax(y.flatten(0, 1)))
        thresholds = [0.0, *(float(s) for s in scores if s < 1.0)]
        rules: list[CutoffRule] = [ConfidenceRule(th, steps) for th in thresholds]
    elif kind == "entropy":
        scores = torch.unique(softmax_entropy(y.flatten(0, 1)))
        thresholds = [*(float(s) for s in scores), math.log(y.shape[-1]) + 1.0]
        rules = [EntropyRule(th, steps) for th in thresholds]
    else:
        raise ValueError(f"unknown baseline {kind!r}")
    return pareto_front(score_rule(rule, y, labels)[0] for rule in rules)


def fixed_points(y: Tensor, labels: Tensor) -> list[Point]:
    steps = y.shape[0]
    return [score_rule(FixedStepRule(t, steps), y, labels)[0] for t in range(1, steps + 1)]


def matched(points: Sequence[Point], accuracy: float) -> dict[str, Any]:
    """The setting with the fewest mean steps among those at least `accuracy` accurate (ties: the
    more accurate); if none is, the most accurate one, flagged `matched: false`."""
    tol = 1e-9
    good = [p for p in points if p.accuracy >= accuracy - tol]
    if good:
        best = min(good, key=lambda p: (p.mean_steps, -p.accuracy))
        return {**best.to_dict(), "matched": True}
    best = max(points, key=lambda p: (p.accuracy, -p.mean_steps))
    return {**best.to_dict(), "matched": False}


def topk_points(y: Tensor, labels: Tensor, calibration: dict[str, Any]) -> list[Point]:
    """Top-K at every calibrated ε."""
    return [
        score_rule(TopKRule(beta, eps), y, labels)[0]
        for eps, beta in zip(calibration["epsilons"], calibration["beta"], strict=True)
    ]


def choose_on_validation(
    y_val: Tensor, labels_val: Tensor, calibration: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Each rule family's cheapest setting that loses no accuracy on the validation set (its
    accuracy at the stop >= its accuracy at T): ε for Top-K, the threshold for max-softmax and
    entropy, t for fixed. The same protocol for every rule, and no test data."""
    reference = float(accuracy_per_step(y_val, labels_val)[-1])
    families = {
        "topk": topk_points(y_val, labels_val, calibration),
        "confidence": threshold_sweep("confidence", y_val, labels_val),
        "entropy": threshold_sweep("entropy", y_val, labels_val),
        "fixed": fixed_points(y_val, labels_val),
    }
    return {name: matched(points, reference) for name, points in families.items()}


def offline_report(
    y: Tensor,
    labels: Tensor,
    calibration: dict[str, Any],
    default_epsilon: float | None = None,
    validation: tuple[Tensor, Tensor] | None = None,
) -> dict[str, Any]:
    """Every rule on cumulative outputs y [T, N, C] (see the module docstring); with
    `validation` outputs and labels, also each rule at its `choose_on_validation` setting."""
    steps = y.shape[0]
    per_step = accuracy_per_step(y, labels)
    oct_stops = oct_steps(y, labels)
    oct_result = evaluate_stops(y, labels, oct_stops)
    topk = []
    for eps, beta in zip(calibration["epsilons"], calibration["beta"], strict=True):
        point, stops = score_rule(TopKRule(beta, eps), y, labels)
        topk.append({**point.to_dict(), "epsilon": eps, "histogram": histogram(stops, steps)})
    fronts = {
        "confidence": threshold_sweep("confidence", y, labels),
        "entropy": threshold_sweep("entropy", y, labels),
        "fixed": fixed_points(y, labels),
    }
    matches = {
        f"{row['epsilon']:.2f}": {
            name: matched(points, row["accuracy"]) for name, points in fronts.items()
        }
        for row in topk
    }
    chosen = {}
    if validation is not None:
        for name, val_point in choose_on_validation(*validation, calibration).items():
            point, _ = score_rule(rule_from_dict(val_point["rule"]), y, labels)
            chosen[name] = {
                **point.to_dict(),
                "validation": {k: val_point[k] for k in ("accuracy", "mean_steps", "matched")},
            }
    return {
        "samples": int(labels.shape[0]),
        "timesteps": steps,
        "accuracy_per_t": [float(a) for a in per_step],
        "accuracy_T": float(per_step[-1]),
        "oct": {
            "accuracy": oct_result.accuracy,
            "mean_steps": oct_result.mean_steps,
            "reduction": oct_result.reduction,
            "histogram": histogram(oct_stops, steps),
        },
        "default_epsilon": default_epsilon,
        "topk": topk,
        "baselines": {name: [p.to_dict() for p in points] for name, points in fronts.items()},
        "matched": matches,
        "chosen_on_validation": chosen,
    }


# --- real early exit -----------------------------------------------------------------------------


def run_stepwise(net: StepNet, frames: Tensor, rule: CutoffRule | None) -> tuple[int, int, float]:
    """One sample [T, P, H, W] step by step until `rule` stops it (None: all T steps).
    Returns (stop step, predicted class, seconds)."""
    steps = frames.shape[0]
    started = time.perf_counter()
    state = net.init_state()
    for t in range(steps):
        _, state = net.step(frames[t : t + 1], state)
        if rule is not None and rule.should_stop(state.t, state.y[0]):
            break
    elapsed = time.perf_counter() - started
    assert state.y is not None
    return state.t, int(state.y[0].argmax()), elapsed


def timed_early_exit(
    net: StepNet,
    frames: Sequence[Tensor],
    labels: Tensor,
    rules: dict[str, CutoffRule],
    *,
    offline_stops: dict[str, Tensor] | None = None,
) -> dict[str, dict[str, Any]]:
    """Wall-clock per sample of each rule with real early exit, and of all T steps ("full").

    Rules run interleaved per sample (the order rotates), each sample's frames already float32,
    under `torch.no_grad()`. `offline_stops` (rule name → stop steps from `rule.stop_steps`)
    adds the fraction of samples where the online stop equals the offline one.
    """
    names = ["full", *rules]
    chosen: dict[str, CutoffRule | None] = {"full": None, **rules}
    stops = {name: [] for name in names}
    preds = {name: [] for name in names}
    seconds = {name: 0.0 for name in names}
    net.eval()
    with torch.no_grad():
        run_stepwise(net, frames[0], None)  # warm-up, not timed
        for i, sample in enumerate(frames):
            k = i % len(names)
            for name in names[k:] + names[:k]:
                stop, pred, elapsed = run_stepwise(net, sample, chosen[name])
                stops[name].append(stop)
                preds[name].append(pred)
                seconds[name] += elapsed
    n = len(frames)
    full_ms = 1e3 * seconds["full"] / n
    out = {}
    for name in names:
        stop_steps = torch.tensor(stops[name])
        correct = torch.tensor(preds[name]) == labels[:n]
        ms = 1e3 * seconds[name] / n
        row = {
            "rule": None if chosen[name] is None else chosen[name].to_dict(),
            "accuracy": float(correct.double().mean()),
            "mean_steps": float(stop_steps.double().mean()),
            "net_steps": int(stop_steps.sum()),
            "ms_per_sample": ms,
            "speedup_vs_full": full_ms / ms if ms > 0 else math.nan,
        }
        if offline_stops is not None and name in offline_stops:
            agree = stop_steps == offline_stops[name][:n].cpu()
            row["agrees_with_offline"] = float(agree.double().mean())
        out[name] = row
    return out


def timing_rules(report: dict[str, Any], epsilon: float) -> dict[str, CutoffRule]:
    """Top-K at `epsilon` (and at ε = 0), the baselines matched to Top-K's accuracy at
    `epsilon`, and every rule at its validation-chosen setting."""
    rules: dict[str, CutoffRule] = {}
    for eps in sorted({0.0, epsilon}):
        row = next(r for r in report["topk"] if abs(r["epsilon"] - eps) < 1e-12)
        rules[f"topk@{eps:.2f}"] = rule_from_dict(row["rule"])
    for name, point in report["matched"][f"{epsilon:.2f}"].items():
        rules[f"{name}@matched"] = rule_from_dict(point["rule"])
    for name, point in report.get("chosen_on_validation", {}).items():
        rules[f"{name}@validation"] = rule_from_dict(point["rule"])
    return rules


def evaluate(
    net: StepNet,
    y: Tensor,
    labels: Tensor,
    frames: Sequence[Tensor],
    calibration: dict[str, Any],
    *,
    epsilon: float,
    validation: tuple[Tensor, Tensor] | None = None,
    timing: bool = True,
    timing_samples: int | None = None,
) -> dict[str, Any]:
    """`offline_report` plus, with `timing`, real early-exit wall-clock of the `timing_rules`
    on the first `timing_samples` samples."""
    report = offline_report(y, labels, calibration, epsilon, validation)
    if timing:
        rules = timing_rules(report, epsilon)
        n = len(frames) if timing_samples is None else min(timing_samples, len(frames))
        offline = {name: rule.stop_steps(y) for name, rule in rules.items()}
        offline["full"] = torch.full((y.shape[1],), y.shape[0])
        report["timing"] = timed_early_exit(net, frames[:n], labels, rules, offline_stops=offline)
        report["timing_samples"] = n
        report["torch_threads"] = torch.get_num_threads()
    return report


def load_eval_frames(
    config: CheckpointConfig,
    split: str = "test",
    *,
    root: str | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> FrameSet:
    """A split of the checkpoint's dataset (as recorded at training: preset, seed, fractions),
    binned with the checkpoint's own window spec and T. `root` overrides the dataset folder."""
    training = config.extra.get("training")
    if not isinstance(training, dict) or "dataset" not in training:
        raise CheckpointError("the checkpoint does not record its dataset (extra.training)")
    splits = dataset_splits(
        training["dataset"],
        root if root is not None else training.get("root"),
        seed=int(training.get("split_seed", 0)),
        validation=float(training.get("validation", 0.1)),
        test=float(training.get("test", 0.1)),
        limit=limit if limit is not None else training.get("limit"),
    )
    spec = WindowSpec.from_dict(config.windowing)
    return frame_set(getattr(splits, split), spec, config.timesteps, progress=progress)


def evaluate_checkpoint(
    path: str | Path,
    *,
    split: str = "test",
    root: str | None = None,
    limit: int | None = None,
    epsilon: float | None = None,
    timing: bool = True,
    timing_samples: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """`evaluate` for a checkpoint directory on a split of its dataset, with the validation
    split for `choose_on_validation`. ε defaults to the checkpoint's cutoff rule's; the per-ε β
    come from `extra["calibration"]`, or are recomputed on the training split (dropout 0.3) for
    checkpoints without them."""
    net, config = load_checkpoint(path)
    data = load_eval_frames(config, split, root=root, limit=limit, progress=progress)
    calibration = config.extra.get("calibration")
    if not calibration:
        calibration = calibrate(net, load_eval_frames(config, "train", root=root, limit=limit))
    if epsilon is None:
        epsilon = float((config.cutoff or {}).get("epsilon") or 0.0)
    if not any(abs(e - epsilon) < 1e-12 for e in calibration["epsilons"]):
        raise ConfigError(f"epsilon {epsilon} was not calibrated: {calibration['epsilons']}")
    y, labels = collect_outputs(net, data.batches(64))
    validation = None
    if split != "validation":
        val_data = load_eval_frames(config, "validation", root=root, limit=limit)
        validation = collect_outputs(net, val_data.batches(64))
    frames = [data.frames[i].float() for i in range(len(data))]
    report = evaluate(
        net,
        y,
        labels,
        frames,
        calibration,
        epsilon=epsilon,
        validation=validation,
        timing=timing,
        timing_samples=timing_samples,
    )
    return {
        "checkpoint": str(path),
        "model_id": config.model_id,
        "dataset": config.extra.get("dataset"),
        "split": split,
        "method": config.extra.get("method"),
        "alpha": config.extra.get("alpha"),
        "windowing": config.windowing,
        "calibration_set": {k: calibration[k] for k in ("set", "samples", "dropout")},
        **report,
    }


# --- figures -------------------------------------------------------------------------------------


def _save(fig: Any, path: Path) -> Path:
    """Write a report figure and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_report(report: dict[str, Any], out_dir: str | Path, title: str = "") -> list[Path]:
    """accuracy_vs_steps.png, stop_histogram.png and accuracy_vs_t.png in `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = report["timesteps"]
    paths = []

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    topk = report["topk"]
    ax.plot(
        [r["mean_steps"] for r in topk],
        [100 * r["accuracy"] for r in topk],
        "o-",
        label="Top-K (ε sweep)",
    )
    styles = {"confidence": "s--", "entropy": "^--", "fixed": "x:"}
    labels = {"confidence": "max-softmax", "entropy": "entropy", "fixed": "fixed t"}
    for name in BASELINES:
        pts = report["baselines"][name]
        ax.plot(
            [p["mean_steps"] for p in pts],
            [100 * p["accuracy"] for p in pts],
            styles[name],
            markersize=3,
            label=labels[name],
        )
    oct_ = report["oct"]
    ax.plot([oct_["mean_steps"]], [100 * oct_["accuracy"]], "k*", markersize=10, label="OCT")
    ax.axhline(100 * report["accuracy_T"], color="grey", lw=0.8, label=f"all {steps} steps")
    ax.set_xlabel("mean timesteps")
    ax.set_ylabel("accuracy (%)")
    ax.set_xlim(0.8, steps + 0.2)
    low = min(100 * report["accuracy_T"] - 15, min(100 * r["accuracy"] for r in topk) - 2)
    ax.set_ylim(max(0, low), 100.5)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or "accuracy vs mean timesteps")
    paths.append(_save(fig, out / "accuracy_vs_steps.png"))

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    eps = report["default_epsilon"]
    row = next(r for r in topk if eps is None or abs(r["epsilon"] - eps) < 1e-12)
    t = np.arange(1, steps + 1)
    width = 0.4
    ax.bar(t - width / 2, row["histogram"], width, label=f"Top-K ε={row['epsilon']:.2f}")
    ax.bar(t + width / 2, oct_["histogram"], width, label="OCT (oracle)")
    ax.set_xlabel("stop timestep")
    ax.set_ylabel("samples")
    ax.set_xticks(t)
    ax.legend()
    ax.set_title(title or "stop timesteps")
    paths.append(_save(fig, out / "stop_histogram.png"))

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(t, [100 * a for a in report["accuracy_per_t"]], "o-")
    ax.set_xlabel("timestep t")
    ax.set_ylabel("accuracy at t (%)")
    ax.set_xticks(t)
    ax.grid(alpha=0.3)
    ax.set_title(title or "accuracy vs t")
    paths.append(_save(fig, out / "accuracy_vs_t.png"))
    return paths
