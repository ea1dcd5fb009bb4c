"""`spikecut demo`: the embedded model on emulated digits it never trained on, in real time.

Offline, no arguments, no broker: the test split of the model's dataset (emulated digits: scikit-
learn's bundled 8x8 digits moved in front of the DVS emulator, generated on the spot) is written
as event files to a temporary folder and replayed, one recording after another, as one stream
through the full pipeline (file source paced at `--speed`, windowing, stepwise SNN, cutoff, sink).
Each decision is printed as it happens, with the running accuracy; a summary ends the run.
`--mqtt URL` also publishes the same decisions (and stats) to a broker.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spikecut.errors import ConfigError
from spikecut.pipeline.app import default_instance, serve, setup_logging
from spikecut.pipeline.decision import Decision, Stats, percentile
from spikecut.pipeline.runner import (
    Runner,
    RunOptions,
    Segmentation,
    SegmentInfo,
    Stream,
    StreamModel,
    configure_torch,
)
from spikecut.pipeline.sinks import FanoutSink, Sink, SinkCounters, open_sink

DEMO_DATASETS = ("emulated-digits",)


class _Stamp:
    """The demo's own sink: takes each decision (stamping its latency) so the console can show
    it; `on_decision` prints it with the truth the sink does not know."""

    name = "console"

    def __init__(self) -> None:
        self.counters = SinkCounters()

    async def __aenter__(self) -> _Stamp:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def publish(self, decision: Decision) -> Decision:
        self.counters.published += 1
        return decision.stamped()

    async def publish_stats(self, stats: Stats) -> None:
        return None


@dataclass
class _Console:
    labels: list[int]
    class_names: list[str]
    timesteps: int
    correct: int = 0
    steps: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    synops: list[float] = field(default_factory=list)
    cutoffs: int = 0

    def __call__(self, decision: Decision, info: SegmentInfo) -> None:
        truth = self.labels[info.source_index]
        right = decision.label == truth
        self.correct += right
        self.steps.append(decision.timesteps)
        self.synops.append(decision.synops)
        self.cutoffs += decision.exit == "cutoff"
        if decision.latency_ms is not None:
            self.latencies_ms.append(decision.latency_ms)
        done = len(self.steps)
        if decision.exit == "cutoff":
            how = f"cutoff at t={decision.timesteps:>2}/{decision.max_timesteps}"
            why = f"gap {decision.gap:6.2f} > {decision.threshold:.2f}"
        else:
            how = f"forced at t={decision.timesteps:>2}/{decision.max_timesteps}"
            why = f"gap {decision.gap:6.2f} (never crossed)"
        print(
            f"[{done:>3}/{len(self.labels)}] digit {self.class_names[truth]} -> "
            f"{decision.label_name} {'ok ' if right else 'WRONG'}  {how}  {why}  "
            f"latency {decision.latency_ms:6.2f} ms  | accuracy {self.correct / done:6.1%}, "
            f"mean {np.mean(self.steps):.1f}/{self.timesteps} timesteps",
            flush=True,
        )

    def summary(self, wall_s: float, interrupted: bool) -> str:
        n = len(self.steps)
        if not n:
            return "no decision was made"
        mean_steps = float(np.mean(self.steps))
        lines = [
            f"{'interrupted after ' if interrupted else ''}{n} recording(s) in {wall_s:.1f} s",
            f"  accuracy      {self.correct / n:.1%} ({self.correct}/{n})",
            f"  timesteps     mean {mean_steps:.2f} of T={self.timesteps} "
            f"({self.timesteps / mean_steps:.2f}x fewer); {self.cutoffs} cutoff, "
            f"{n - self.cutoffs} forced",
            f"  latency       p50 {percentile(self.latencies_ms, 50):.2f} ms, "
            f"p99 {percentile(self.latencies_ms, 99):.2f} ms "
            "(deciding window closed -> decision published)",
            f"  synaptic ops  mean {np.mean(self.synops):.3g} per decision",
        ]
        return "\n".join(lines)


def demo_recordings(model: StreamModel, count: int) -> tuple[list[np.ndarray], list[int], object]:
    """`count` recordings of the model's test split (never trained on), classes interleaved."""
    from spikecut.sources.datasets import load_splits

    extra = model.config.extra
    dataset = extra.get("dataset", "emulated-digits")
    if dataset not in DEMO_DATASETS:
        raise ConfigError(
            f"the demo replays emulated digits, but model {model.model_id!r} was trained on "
            f"{dataset!r}: use spikecut replay with recordings of that dataset"
        )
    # the split the training run used (tools/train.py records its config under "training")
    training = extra.get("training", {})
    test = load_splits(
        dataset,
        seed=int(training.get("split_seed", 0)),
        validation=float(training.get("validation", 0.1)),
        test=float(training.get("test", 0.1)),
    ).test
    labels = np.asarray(test.labels)
    # Round-robin over classes so a short demo shows every digit.
    by_class = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    order: list[int] = []
    while len(order) < min(count, len(labels)):
        for members in by_class:
            if members and len(order) < count:
                order.append(members.pop(0))
    return [test[i][0] for i in order], [int(labels[i]) for i in order], test.info


def demo_command(args: argparse.Namespace) -> int:
    from spikecut.sources import open_source, write_events

    setup_logging("demo")
    configure_torch(1)
    model = StreamModel.load(args.model)
    recordings, labels, info = demo_recordings(model, args.count)
    spec = model.spec
    window = f"{spec.window_us / 1000:g} ms windows" if spec.window_us else f"{spec.kind} windows"
    print(
        f"spikecut demo: model {model.model_id} (T={model.timesteps}, {window}); "
        f"{len(recordings)} emulated digits from its test split, replayed at "
        f"{args.speed:g}x real time{' to ' + args.mqtt if args.mqtt else ''}",
        flush=True,
    )
    console = _Console(labels, model.class_names, model.timesteps)
    instance = default_instance()
    sink: Sink = _Stamp()
    if args.mqtt:
        sink = FanoutSink(sink, open_sink(args.mqtt, instance=instance))
    runner = Runner(
        model,
        sink,
        RunOptions(segmentation=Segmentation("recording"), stats_interval_s=5.0),
        on_decision=console,
    )
    with tempfile.TemporaryDirectory(prefix="spikecut-demo-") as folder:
        paths = []
        for i, events in enumerate(recordings):
            path = Path(folder) / f"digit{i:03d}.npz"
            write_events(path, events, info)
            paths.append(path)
        sources = (open_source(path, speed=args.speed) for path in paths)
        stream = Stream(f"{instance}.demo", sources)
        start = time.perf_counter()
        mqtt_urls = [args.mqtt] if args.mqtt else []
        interrupted = asyncio.run(serve(runner, [stream], mqtt_urls, instance))
        wall_s = time.perf_counter() - start
    print(console.summary(wall_s, interrupted), flush=True)
    report = runner.reports[stream.stream_id]
    if report.error is not None:
        return 2
    return 0


__all__ = ["demo_command", "demo_recordings"]
