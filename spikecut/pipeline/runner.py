"""The stepwise runner: event streams in, early decisions out.

    model = StreamModel.load("checkpoints/nmnist")          # BN folded, eval mode, warmed up
    async with open_sinks(["-"]) as sink:
        runner = Runner(model, sink, RunOptions(segmentation=Segmentation("recording")))
        reports = await runner.run([Stream("cam0", [open_source("digit.bin")])])

Per stream, one asyncio task: source -> windowing stage (`windows`, the same `FrameBuilder` as
training) -> segmenter -> one SNN step per window (single-step mode, `torch.inference_mode`, its own
`NetState`) -> cutoff rule -> `Decision` -> sink. Streams run concurrently in one process.

Where SNN steps run (`RunOptions.step_in_thread`): in worker threads (a shared pool with a thread
per stream, at most `MAX_STEP_WORKERS`), or inline on the event loop. torch releases the GIL inside
its kernels, so with threads the loop keeps reading sources, binning and publishing while a step
runs, and a stream with a slow network never delays another's windows. But each hand-over to a
thread and back costs about 0.1-0.2 ms and a cold cache, as much as a whole step of a small 34x34
network. The default (None) therefore decides from the step time measured when the model loads:
inline below `INLINE_STEP_MAX_S` (the loop is then held for less than that per step), threads
above. `tools/bench_pipeline.py` and the tests measure both.

A stream plays its sources one after another; the windowing restarts at each (its origin is the
source's first event), on the stream's one `FrameBuilder`, reset. How a source's windows become
segments (one decision each) is chosen by `Segmentation.mode`:

- `recording`: the whole source is one sample, the dataset case: its windows 0..T-1 from its first
  event, exactly as `frames_for_recording` frames it for training. A recording shorter than T
  windows continues with empty windows (the zero frames a fixed span gives offline), so the
  decision equals the offline evaluation's. Longer recordings are cut at T windows.
- `fixed`: back-to-back segments of at most T windows; the next one starts with the window after a
  decision.
- `activity`: a segment starts at the first window whose event rate reaches `activity_rate`
  (events/s); after its decision, windows are skipped until `quiet_windows` consecutive windows
  fall below `quiet_rate`, then the next onset starts a new segment.

Every segment starts from a fresh `NetState`. Each step asks the cutoff rule; when it fires, the
decision is published at once and no further SNN step runs for that segment: its remaining windows
are skipped (for a recording replayed at full speed the rest of the file is not even read). If the
rule never fires the decision at T is published with `exit="forced"`; a segment cut short by the
end of a source (fixed/activity) is decided, forced, at its last step. `RunOptions(cutoff=False)`
still evaluates the rule at every step (same work) but always runs T steps: the baseline that
`tools/bench_pipeline.py` compares against.

Stopping: when `run()` is cancelled (Ctrl-C, SIGTERM in the CLI), every segment in progress that
has had at least one SNN step is decided at once with what it has, `exit="interrupted"`, and
published before `run()` ends (so before the sink flushes and says offline). A segment without a
step has nothing to decide. A second cancellation aborts those last publications.

Decision latency starts at the moment the windowing stage closed the deciding window
(`Window.closed_at`) and ends when the sink takes the decision.

A stream that fails (corrupt file, lost camera that will not come back) ends with its error in
its `StreamReport`; the decisions it made before stay published and the other streams go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spikecut.errors import CheckpointError, ConfigError, SpikecutError
from spikecut.models import (
    CheckpointConfig,
    CutoffRule,
    NetState,
    StepNet,
    fold_batchnorm,
    load_checkpoint,
    stream_gap,
)
from spikecut.pipeline.binning import FrameBuilder, Window, WindowSpec
from spikecut.pipeline.decision import (
    Decision,
    Stats,
    StatsMeter,
    check_stream_id,
)
from spikecut.pipeline.sinks import Sink
from spikecut.pipeline.windowing import StageStats, windows
from spikecut.sources.base import EventSource
from spikecut.sources.events import StreamInfo

log = logging.getLogger(__name__)

SEGMENT_MODES = ("recording", "fixed", "activity")
#: Upper bound on the step worker threads (one per stream up to this many).
MAX_STEP_WORKERS = 32
#: Networks whose step takes less than this run inline on the event loop by default.
INLINE_STEP_MAX_S = 0.001
#: `Window.closed_at` is `time.perf_counter()`; decisions count latency on `time.monotonic_ns()`.
_PERF_TO_MONOTONIC_NS = time.monotonic_ns() - time.perf_counter_ns()


def demo_model_path() -> Path:
    """The small model shipped with the package (`spikecut/assets/demo/`)."""
    return Path(str(resources.files("spikecut"))) / "assets" / "demo"


# --- the model, loaded once and shared by every stream -------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """What one SNN step tells the runner (computed in the step worker)."""

    state: NetState
    label: int
    gap: float
    stop: bool  # the segment is decided at this step
    forced: bool  # ... without the cutoff firing (T reached, or cutoff disabled)
    threshold: float | None  # the threshold the gap crossed, when the cutoff fired
    synops: float


class StreamModel:
    """A checkpoint ready for streaming: BN folded, eval mode, its cutoff rule and window spec.

    Read-only after construction, so every stream shares it; each stream keeps its own `NetState`.
    `spec` is the checkpoint's windowing, with `window_overrides` applied (e.g. `roi` and
    `downsample` to fit a bigger sensor into the network's input).
    """

    def __init__(
        self,
        net: StepNet,
        config: CheckpointConfig,
        *,
        name: str = "",
        window_overrides: dict[str, Any] | None = None,
    ) -> None:
        if not net.spec.get("bn_folded"):
            net = fold_batchnorm(net)
        self.net = net.eval()
        self.config = config
        self.rule: CutoffRule | None = config.cutoff_rule()
        if not config.windowing:
            raise CheckpointError(f"model {config.model_id!r}: the checkpoint has no windowing")
        spec = WindowSpec.from_dict(config.windowing)
        if window_overrides:
            spec = spec.with_(**window_overrides)
        if not spec.streamable:
            raise ConfigError(
                f"model {config.model_id!r}: its windowing bins each recording's own duration "
                "(n_bins without span_us), which needs the whole recording; it cannot stream"
            )
        self.spec = spec
        self.model_id = f"{name}:{config.model_id}" if name else config.model_id
        self._warm_up()

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, **window_overrides: Any
    ) -> StreamModel:
        """Load checkpoint directory `path` (default: the embedded demo model)."""
        directory = Path(path) if path is not None else demo_model_path()
        if path is None and not (directory / "config.json").is_file():
            raise CheckpointError(
                f"the embedded demo model is missing ({directory}): this checkout has no "
                "spikecut/assets/demo; give --model CHECKPOINT_DIR"
            )
        net, config = load_checkpoint(directory)
        overrides = {k: v for k, v in window_overrides.items() if v is not None}
        return cls(net, config, name=directory.name, window_overrides=overrides)

    @property
    def timesteps(self) -> int:
        return self.config.timesteps

    @property
    def class_names(self) -> list[str]:
        return self.config.class_names

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.net.input_shape

    def window_spec(self, info: StreamInfo) -> WindowSpec:
        """The spec for a sensor, checked against the network's input; `ConfigError` if the
        sensor's frames would not fit the network."""
        try:
            shape = self.spec.frame_shape(info)
        except ConfigError as exc:
            raise ConfigError(f"{info.source}: {exc}") from None
        if tuple(shape) != tuple(self.input_shape):
            p, h, w = self.input_shape
            raise ConfigError(
                f"{info.source}: a {info.width}x{info.height} sensor gives frames of shape "
                f"{tuple(shape)} with the model's windowing, but model {self.model_id!r} expects "
                f"({p}, {h}, {w}): crop or downsample the sensor into {w}x{h} (--roi X,Y,W,H, "
                "--downsample N)"
            )
        return self.spec

    def init_state(self) -> NetState:
        return self.net.init_state()

    def step(self, frames: np.ndarray, state: NetState, *, cutoff: bool = True) -> StepResult:
        """One timestep for one stream: frames [P, H, W] -> the stream's next state and what the
        cutoff rule says. Thread-safe (no shared mutable state); runs in the step workers."""
        with torch.inference_mode():
            x = torch.from_numpy(frames)[None]
            if x.dtype != torch.float32:
                x = x.float()
            _, state = self.net.step(x, state, count_ops=True)
            y = state.y[0]
            t = state.t
            gap = stream_gap(y)
            label = int(y.argmax())
            ops = state.ops
            synops = float(ops.ac.sum() + ops.mac.sum()) if ops is not None else 0.0
            if self.rule is None or not cutoff:
                if self.rule is not None:
                    self.rule.should_stop(t, y)  # the same work as with the cutoff on
                stop = t >= self.timesteps
                return StepResult(state, label, gap, stop, stop, None, synops)
            check = self.rule.should_stop(t, y)
        threshold = None if check.forced or not check.stop else float(check.threshold)
        return StepResult(state, label, gap, check.stop, check.forced, threshold, synops)

    def _warm_up(self) -> None:
        """One step before any thread runs (the op-count hooks are installed on the first counted
        step, which must not happen in two threads at once), then `step_time_s`: the median of
        three more."""
        frames = np.zeros(self.input_shape, dtype=np.float32)
        state = self.step(frames, self.init_state()).state
        times = []
        for _ in range(3):
            start = time.perf_counter()
            state = self.step(frames, state).state
            times.append(time.perf_counter() - start)
        self.step_time_s = sorted(times)[1]


def configure_torch(threads: int) -> None:
    """Intra-op threads per step. Streams already run in parallel threads, and the networks
    meant for streaming are small, so 1 (the CLI's default) avoids oversubscribing the cores."""
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads!r}")
    torch.set_num_threads(threads)


# --- segmentation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segmentation:
    """When a classification starts and ends (see the module docstring).

    `activity_rate` (events/s) starts a segment in `activity` mode; the stream counts as quiet
    again after `quiet_windows` consecutive windows below `quiet_rate` (default half the
    activity rate). Both rates depend on the sensor and the scene.
    """

    mode: str = "recording"
    activity_rate: float = 10_000.0
    quiet_rate: float | None = None
    quiet_windows: int = 1

    def __post_init__(self) -> None:
        if self.mode not in SEGMENT_MODES:
            raise ConfigError(f"segment mode must be one of {SEGMENT_MODES}, got {self.mode!r}")
        if not (isinstance(self.activity_rate, (int, float)) and self.activity_rate > 0):
            raise ConfigError(f"activity_rate must be > 0 events/s, got {self.activity_rate!r}")
        if self.quiet_rate is not None and not 0 <= self.quiet_rate <= self.activity_rate:
            raise ConfigError(
                f"quiet_rate must be in 0..activity_rate ({self.activity_rate:g}), "
                f"got {self.quiet_rate!r}"
            )
        if isinstance(self.quiet_windows, bool) or not (
            isinstance(self.quiet_windows, int) and self.quiet_windows >= 1
        ):
            raise ConfigError(
                f"quiet_windows must be a positive integer, got {self.quiet_windows!r}"
            )

    @property
    def quiet_threshold(self) -> float:
        return self.activity_rate / 2 if self.quiet_rate is None else self.quiet_rate


def window_rate(window: Window) -> float:
    """Events per second in a window (its own duration); inf for a zero-length window."""
    duration_us = window.t_end_us - window.t_start_us
    if duration_us <= 0:
        return math.inf if window.n_events else 0.0
    return window.n_events * 1e6 / duration_us


class Segmenter:
    """Per source: which windows the network steps on (`admit`), given the decisions so far."""

    def __init__(self, segmentation: Segmentation) -> None:
        self.segmentation = segmentation
        self.mode = segmentation.mode
        self.active = self.mode != "activity"  # a segment is running or may start on admit
        self.finished = False  # recording mode: the one segment is decided
        self._quiet_needed = 0  # activity mode: quiet windows still needed before re-arming

    def admit(self, window: Window) -> bool:
        """Should the network step on this window? (Starts a segment when one may start.)"""
        if self.mode == "recording":
            return not self.finished
        if self.mode == "fixed":
            return True
        rules = self.segmentation
        rate = window_rate(window)
        if self.active:
            return True
        if self._quiet_needed:  # after a decision: wait for the stream to fall quiet
            if rate < rules.quiet_threshold:
                self._quiet_needed -= 1
            else:
                self._quiet_needed = rules.quiet_windows
            return False
        if rate >= rules.activity_rate:
            self.active = True
            return True
        return False

    def decided(self) -> None:
        if self.mode == "recording":
            self.finished = True
        elif self.mode == "activity":
            self.active = False
            self._quiet_needed = self.segmentation.quiet_windows


# --- streams, options, reports -------------------------------------------------------------------


@dataclass
class Stream:
    """One stream: its id (one MQTT topic level, see `check_stream_id`) and its sources, played one
    after another. Sources are entered (`async with`) one at a time; an iterable may be endless
    (a looping playlist) or lazy (opened only when reached)."""

    stream_id: str
    sources: Iterable[EventSource]

    def __post_init__(self) -> None:
        check_stream_id(self.stream_id)


@dataclass(frozen=True)
class RunOptions:
    """How the runner drives streams.

    `policy`: the windowing stage's backpressure (None: `block` for files, `drop_oldest` for live
    sources). `wall_grace_us`: slack before a live source's silence closes a window.
    `stats_interval_s`: period of the stats records sent to the sink (None: only a final one).
    """

    segmentation: Segmentation = field(default_factory=Segmentation)
    cutoff: bool = True
    step_in_thread: bool | None = None  # None: threads if the model's step is slow (see above)
    queue_size: int = 8
    policy: str | None = None
    wall_grace_us: int = 5_000
    stats_interval_s: float | None = 5.0

    def __post_init__(self) -> None:
        interval = self.stats_interval_s
        if interval is not None and not (
            isinstance(interval, (int, float)) and 0 < interval < math.inf
        ):
            raise ConfigError(
                f"stats_interval_s must be a positive number of seconds or None, got {interval!r}"
            )


@dataclass(frozen=True)
class SegmentInfo:
    """Where a decision came from, for `on_decision` callbacks (not part of the wire record)."""

    source_index: int  # which of the stream's sources (0-based)
    source_name: str  # its StreamInfo.source
    steps: int  # SNN steps run for the segment
    wall_s: float  # first window of the segment taken -> decision handed to the sink


@dataclass
class StreamReport:
    """What one stream did; `error` is the message of the error that ended it, if any."""

    stream_id: str
    decisions: int = 0
    cutoffs: int = 0
    sources: int = 0
    windows: int = 0
    events: int = 0
    steps: int = 0  # SNN steps run
    skipped_windows: int = 0  # windows no step ran on (decided segment, waiting for activity)
    padded_windows: int = 0  # empty windows added after a short recording
    dropped_windows: int = 0  # backpressure (live sources)
    dropped_events: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    segment_wall_s: list[float] = field(default_factory=list)
    timesteps: list[int] = field(default_factory=list)
    interrupted: int = 0  # decisions of segments stopped mid-way (run() cancelled)
    error: str | None = None


DecisionCallback = Callable[[Decision, SegmentInfo], Any]


@dataclass
class _Segment:
    """The segment in progress on one source."""

    state: NetState
    start_us: int
    started: float  # perf_counter when its first window was taken
    steps: int = 0
    events: int = 0
    synops: float = 0.0
    last: StepResult | None = None
    last_window: Window | None = None
    decided: bool = False  # its decision was handed to the sink (or is being handed)


# --- the runner ----------------------------------------------------------------------------------


class Runner:
    """Runs streams concurrently through one model into one sink (see the module docstring)."""

    def __init__(
        self,
        model: StreamModel,
        sink: Sink,
        options: RunOptions | None = None,
        *,
        on_decision: DecisionCallback | None = None,
    ) -> None:
        self.model = model
        self.sink = sink
        self.options = options or RunOptions()
        self.on_decision = on_decision
        # read once: every decision carries them
        self._class_names = list(model.class_names)
        self._timesteps = int(model.timesteps)
        self._model_id = model.model_id
        self.reports: dict[str, StreamReport] = {}
        self._meters: dict[str, StatsMeter] = {}
        self._builders: dict[str, FrameBuilder] = {}  # per stream, reused by its sources
        self._executor: ThreadPoolExecutor | None = None

    @property
    def steps_in_thread(self) -> bool:
        """Whether SNN steps run in worker threads (else inline on the event loop)."""
        if self.options.step_in_thread is not None:
            return self.options.step_in_thread
        return self.model.step_time_s >= INLINE_STEP_MAX_S

    async def run(self, streams: Sequence[Stream]) -> list[StreamReport]:
        """Run every stream to its end (or until cancelled); one report per stream, in order."""
        ids = [s.stream_id for s in streams]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ConfigError(f"stream ids must be unique in a process, repeated: {duplicates}")
        for stream in streams:
            self.reports[stream.stream_id] = StreamReport(stream.stream_id)
            self._meters[stream.stream_id] = StatsMeter(stream.stream_id)
        if self.steps_in_thread:
            workers = max(1, min(len(streams), MAX_STEP_WORKERS))
            self._executor = ThreadPoolExecutor(workers, thread_name_prefix="spikecut-step")
        stats_task = None
        if self.options.stats_interval_s:
            stats_task = asyncio.create_task(self._report_stats(self.options.stats_interval_s))
        tasks = [
            asyncio.create_task(self._run_stream(s), name=f"spikecut-stream {s.stream_id}")
            for s in streams
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if stats_task is not None:
                stats_task.cancel()
                await asyncio.gather(stats_task, return_exceptions=True)
            if self._executor is not None:
                # Steps in flight finish within milliseconds; nothing waits for their results.
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
        return [self.reports[i] for i in ids]

    # -- one stream --

    async def _run_stream(self, stream: Stream) -> None:
        report = self.reports[stream.stream_id]
        meter = self._meters[stream.stream_id]
        try:
            for index, source in enumerate(stream.sources):
                await self._run_source(stream, index, source, report, meter)
        except Exception as exc:  # this stream ends; the others go on
            known = isinstance(exc, (SpikecutError, OSError))
            report.error = str(exc) if known and str(exc) else f"{type(exc).__name__}: {exc}"
            log.error("%s: %s", stream.stream_id, report.error)
            if not known:
                log.debug("stream %s", stream.stream_id, exc_info=True)
        finally:
            self._builders.pop(stream.stream_id, None)
            with contextlib.suppress(Exception):  # best effort: a last stats record
                await self.sink.publish_stats(self._snapshot(stream.stream_id))

    async def _run_source(
        self,
        stream: Stream,
        index: int,
        source: EventSource,
        report: StreamReport,
        meter: StatsMeter,
    ) -> None:
        options = self.options
        segmenter = Segmenter(options.segmentation)
        recording = segmenter.mode == "recording"
        async with source:
            live = bool(source.live)
            if recording and live:
                raise ConfigError(
                    f"{source.info.source}: a live source has no end, so it cannot be one "
                    "'recording' segment: use fixed or activity segmentation"
                )
            spec = self.model.window_spec(source.info)
            report.sources += 1
            # Paced or live sources keep time: after a recording's decision its rest still plays
            # (skipped); at full speed the rest is not read at all.
            keeps_time = live or getattr(source, "speed", None) is not None
            policy = options.policy or ("drop_oldest" if live else "block")
            stage = StageStats()
            segment: _Segment | None = None
            error: BaseException | None = None
            builder = self._builders.get(stream.stream_id)
            if builder is None or not builder.fits(spec, source.info):
                builder = self._builders[stream.stream_id] = FrameBuilder(spec, source.info)
            stage_windows = windows(
                source,
                spec,
                queue_size=options.queue_size,
                policy=policy,
                wall_grace_us=options.wall_grace_us,
                stats=stage,
                builder=builder,
            )
            try:
                async with contextlib.aclosing(stage_windows):
                    try:
                        async for window in stage_windows:
                            self._count_window(window, report, meter)
                            if not segmenter.admit(window):
                                report.skipped_windows += 1
                                if segmenter.finished and not keeps_time:
                                    break
                                continue
                            if segment is None:
                                segment = self._new_segment(window)
                            if await self._advance(stream, index, source, segment, window):
                                segment = None
                                segmenter.decided()
                                if segmenter.finished and not keeps_time:
                                    break
                    except SpikecutError as exc:
                        error = exc  # after every window delivered before it
                if segment is not None:
                    if recording:
                        await self._pad(stream, index, source, segment, spec, report)
                    else:
                        await self._decide(stream, index, source, segment, "forced")
            except asyncio.CancelledError:
                if segment is not None and segment.steps and not segment.decided:
                    await self._decide(stream, index, source, segment, "interrupted")
                raise
            if error is not None:
                raise error

    def _count_window(self, window: Window, report: StreamReport, meter: StatsMeter) -> None:
        report.windows += 1
        report.events += window.n_events
        meter.add_events(window.n_events)
        meter.add_windows()
        drops = window.drops
        lost_events = drops.outside_sensor + drops.late + drops.backpressure_events
        if lost_events or drops.backpressure_windows:
            report.dropped_events += lost_events
            report.dropped_windows += drops.backpressure_windows
            meter.add_dropped(events=lost_events, windows=drops.backpressure_windows)

    def _new_segment(self, window: Window) -> _Segment:
        return _Segment(self.model.init_state(), int(window.t_start_us), time.perf_counter())

    async def _step(self, segment: _Segment, frames: np.ndarray) -> StepResult:
        step = self.model.step
        cutoff = self.options.cutoff
        if self._executor is None:
            return step(frames, segment.state, cutoff=cutoff)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, lambda: step(frames, segment.state, cutoff=cutoff)
        )

    async def _advance(
        self, stream: Stream, index: int, source: EventSource, segment: _Segment, window: Window
    ) -> bool:
        """One SNN step on `window`; publish the decision if the segment ends here."""
        result = await self._step(segment, window.frames)
        segment.state = result.state
        segment.steps += 1
        segment.events += int(window.n_events)
        segment.synops += result.synops
        segment.last, segment.last_window = result, window
        self.reports[stream.stream_id].steps += 1
        if not result.stop:
            return False
        await self._decide(stream, index, source, segment, "forced" if result.forced else "cutoff")
        return True

    async def _pad(
        self,
        stream: Stream,
        index: int,
        source: EventSource,
        segment: _Segment,
        spec: WindowSpec,
        report: StreamReport,
    ) -> None:
        """A recording that ended before its decision: continue on empty windows up to T."""
        zeros = np.zeros(self.model.input_shape, dtype=np.dtype(spec.dtype))
        while True:
            last = segment.last_window
            start_us, end_us = _next_window_bounds(spec, last)
            window = Window(
                index=last.index + 1,
                frames=zeros,
                t_start_us=start_us,
                t_end_us=end_us,
                n_events=0,
                closed_at=time.perf_counter(),
                partial=True,
            )
            report.padded_windows += 1
            if await self._advance(stream, index, source, segment, window):
                return

    async def _decide(
        self, stream: Stream, index: int, source: EventSource, segment: _Segment, exit: str
    ) -> None:
        """Publish the segment's decision from its last step; `exit` is "cutoff" when the rule
        fired there, else why the segment ended ("forced": T or the end of its stream;
        "interrupted": the run was cancelled)."""
        result, window = segment.last, segment.last_window
        assert result is not None and window is not None
        segment.decided = True
        report = self.reports[stream.stream_id]
        cutoff = exit == "cutoff"
        if not (math.isfinite(result.gap) and math.isfinite(segment.synops)):
            raise CheckpointError(
                f"model {self._model_id!r}: non-finite network output on stream "
                f"{stream.stream_id!r} (Top-K gap {result.gap}, synaptic ops {segment.synops}) "
                f"at timestep {segment.steps}: are the checkpoint's weights broken?"
            )
        # Every value is a plain int/float/str computed here: no schema check (see decision.py).
        decision = Decision.unchecked(
            stream=stream.stream_id,
            seq=report.decisions,
            label=result.label,
            label_name=self._class_names[result.label],
            gap=result.gap,
            threshold=result.threshold if cutoff else None,
            exit=exit,
            timesteps=segment.steps,
            max_timesteps=self._timesteps,
            segment_start_us=segment.start_us,
            segment_end_us=int(window.t_end_us),
            events=segment.events,
            synops=segment.synops,
            model=self._model_id,
            window_closed_ns=int(window.closed_at * 1e9) + _PERF_TO_MONOTONIC_NS,
        )
        report.decisions += 1
        decision = await self.sink.publish(decision)
        wall_s = time.perf_counter() - segment.started
        report.cutoffs += cutoff
        report.interrupted += exit == "interrupted"
        report.timesteps.append(segment.steps)
        report.segment_wall_s.append(wall_s)
        if decision.latency_ms is not None:
            report.latencies_ms.append(decision.latency_ms)
        self._meters[stream.stream_id].add_decision(decision)
        if self.on_decision is not None:
            info = SegmentInfo(index, source.info.source, segment.steps, wall_s)
            outcome = self.on_decision(decision, info)
            if asyncio.iscoroutine(outcome):
                await outcome

    def _snapshot(self, stream_id: str) -> Stats:
        """The stream's stats now, with the decisions the sink dropped (full outbox) counted."""
        meter = self._meters[stream_id]
        dropped = self.sink.counters.dropped_by_stream.get(stream_id, 0)
        if dropped > meter.dropped_decisions:
            meter.add_dropped(decisions=dropped - meter.dropped_decisions)
        return meter.snapshot()

    async def _report_stats(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            for stream_id in self._meters:
                if self.reports[stream_id].error is None:
                    with contextlib.suppress(SpikecutError):
                        await self.sink.publish_stats(self._snapshot(stream_id))


def _next_window_bounds(spec: WindowSpec, last: Window) -> tuple[int, int]:
    """Sensor time [start, end) of the window after `last`, on the same grid."""
    if spec.kind == "time":
        start = last.t_start_us + (spec.stride_us or spec.window_us)
        return start, start + spec.window_us
    if spec.kind == "bins":
        n, span = spec.n_bins, spec.span_us

        def offset(k: int) -> int:
            q, r = divmod(k, n)
            return q * span + -(-r * span // n)

        origin = last.t_start_us - offset(last.index)
        return origin + offset(last.index + 1), origin + offset(last.index + 2)
    return last.t_end_us, last.t_end_us  # event-count windows: no time of their own


__all__ = [
    "INLINE_STEP_MAX_S",
    "MAX_STEP_WORKERS",
    "SEGMENT_MODES",
    "RunOptions",
    "Runner",
    "SegmentInfo",
    "Segmentation",
    "Segmenter",
    "StepResult",
    "Stream",
    "StreamModel",
    "StreamReport",
    "configure_torch",
    "demo_model_path",
    "window_rate",
]
