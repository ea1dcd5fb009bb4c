"""The runner on real N-MNIST recordings with a real checkpoint: streaming decisions equal the
offline evaluation, early exit skips SNN steps, segmentation modes, concurrent and failing streams,
and an event loop that stays responsive while the network steps."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import math
import time

import numpy as np
import pytest
from pipeline_helpers import (
    WINDOW_US,
    T,
    concatenate,
    cumulative_outputs,
    offline_decisions,
    offline_fixed_segments,
    padded_frames,
)

from spikecut.errors import ConfigError
from spikecut.models import load_checkpoint, topk_gap
from spikecut.pipeline.binning import Window
from spikecut.pipeline.decision import Decision
from spikecut.pipeline.runner import (
    INLINE_STEP_MAX_S,
    Runner,
    RunOptions,
    Segmentation,
    Segmenter,
    Stream,
)
from spikecut.pipeline.sinks import StdoutSink
from spikecut.sources import open_source, read_events, write_events
from spikecut.sources.events import StreamInfo

pytestmark = pytest.mark.timeout(120)


async def run(model, streams, **options) -> tuple[list, list[Decision]]:
    """Run streams into an in-memory JSON-lines sink; (reports, decisions as read back)."""
    out = io.StringIO()
    async with StdoutSink(out) as sink:
        reports = await Runner(model, sink, RunOptions(**options)).run(streams)
    decisions = [Decision.from_json(line) for line in out.getvalue().splitlines()]
    return reports, decisions


def by_stream(decisions: list[Decision]) -> dict[str, list[Decision]]:
    grouped: dict[str, list[Decision]] = {}
    for decision in decisions:
        grouped.setdefault(decision.stream, []).append(decision)
    return grouped


def assert_matches(decision: Decision, offline) -> None:
    assert (decision.label, decision.timesteps, decision.exit) == (
        offline.label,
        offline.steps,
        offline.exit,
    )
    assert decision.gap == pytest.approx(offline.gap, rel=1e-4, abs=1e-6)


async def test_streaming_decisions_equal_the_offline_evaluation(
    recordings, checkpoint, model, tmp_path
):
    # The 12 recordings, plus 3 cut to 100 ms (4 windows < T: the runner continues on empty
    # windows, as the offline frames of a fixed span are zeros there).
    short = []
    for path in recordings[:3]:
        events, info = read_events(path)
        cut = events[events["t"] < events["t"][0] + 100_000]
        short.append(tmp_path / f"short-{path.stem}.npz")
        write_events(short[-1], cut, info)
    files = [*recordings, *short]
    expected = offline_decisions(checkpoint, files)
    assert {e.exit for e in expected} == {"cutoff", "forced"}  # both paths are exercised

    streams = [Stream(f"s{i}", [open_source(path)]) for i, path in enumerate(files)]
    reports, decisions = await run(model, streams, segmentation=Segmentation("recording"))
    grouped = by_stream(decisions)
    for i, (path, offline) in enumerate(zip(files, expected, strict=True)):
        (decision,) = grouped[f"s{i}"]
        assert_matches(decision, offline)
        events, _ = read_events(path)
        t0 = int(events["t"][0])
        # the window origin is the recording's first event, exactly as in training
        assert decision.segment_start_us == t0
        assert decision.segment_end_us == t0 + decision.timesteps * WINDOW_US
        in_segment = (events["t"] >= t0) & (events["t"] < decision.segment_end_us)
        assert decision.events == int(in_segment.sum())
        assert decision.threshold == (
            None
            if offline.exit == "forced"
            else pytest.approx(model.rule.beta[decision.timesteps - 1])
        )
        assert decision.model == model.model_id and decision.max_timesteps == T
        assert decision.latency_ms is not None and decision.latency_ms >= 0
        assert decision.synops > 0
    assert [r.padded_windows > 0 for r in reports[-3:]] == [
        d.timesteps > 4 for d in (grouped[f"s{i}"][0] for i in range(12, 15))
    ]
    assert all(r.error is None for r in reports)

    # The same recordings as one stream, one after another (the dataset case): same decisions.
    playlist = Stream("all", [open_source(path) for path in files])
    (report,), decisions = await run(model, [playlist], segmentation=Segmentation("recording"))
    assert [d.seq for d in decisions] == list(range(len(files)))
    for decision, offline in zip(decisions, expected, strict=True):
        assert_matches(decision, offline)
    assert report.sources == len(files)


async def test_early_exit_skips_network_steps(recordings, model, monkeypatch):
    calls = []
    real_step = model.net.step

    def counted_step(*args, **kwargs):
        calls.append(1)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(model.net, "step", counted_step)
    streams = [Stream(f"s{i}", [open_source(path)]) for i, path in enumerate(recordings)]
    reports, decisions = await run(model, streams)
    steps = sum(d.timesteps for d in decisions)
    assert len(calls) == steps == sum(r.steps for r in reports)
    assert steps < T * len(recordings)
    firsts = decisions_in_order(decisions, reports)
    early = [r for r, d in zip(reports, firsts, strict=True) if d.timesteps < T]
    assert early
    # decided early at full speed: the rest of the file is not even binned
    assert all(
        r.windows == next(d.timesteps for d in decisions if d.stream == r.stream_id) for r in early
    )

    calls.clear()
    streams = [Stream(f"s{i}", [open_source(path)]) for i, path in enumerate(recordings)]
    reports, forced = await run(model, streams, cutoff=False)
    assert len(calls) == T * len(recordings)
    assert {(d.exit, d.timesteps, d.threshold) for d in forced} == {("forced", T, None)}


def decisions_in_order(decisions, reports):
    grouped = by_stream(decisions)
    return [grouped[r.stream_id][0] for r in reports]


async def test_fixed_segments_run_back_to_back(recordings, checkpoint, model, tmp_path):
    parts = [read_events(path)[0] for path in recordings[:4]]
    events, _ = concatenate(parts, gap_us=45_000)
    info = StreamInfo(34, 34, "four digits")
    path = tmp_path / "four.npz"
    write_events(path, events, info)
    expected = offline_fixed_segments(checkpoint, events, info)
    assert len(expected) > 4

    (report,), decisions = await run(
        model, [Stream("cam", [open_source(path)])], segmentation=Segmentation("fixed")
    )
    assert [d.seq for d in decisions] == list(range(len(expected)))
    for decision, offline in zip(decisions, expected, strict=True):
        assert_matches(decision, offline)
    for before, after in zip(decisions, decisions[1:], strict=False):
        assert after.segment_start_us == before.segment_end_us  # back to back
    assert decisions[0].segment_start_us == int(events["t"][0])
    assert sum(d.events for d in decisions) == events.size  # every event was in a segment
    assert report.steps == report.windows == sum(d.timesteps for d in decisions)
    assert report.skipped_windows == 0


async def test_activity_segments_start_on_activity_and_wait_for_quiet(
    recordings, checkpoint, model, tmp_path
):
    # Three digits separated by 1 s of silence, each starting on the window grid, so that an
    # activity segment sees exactly the windows the recording is framed into offline.
    chosen = recordings[3:6]
    parts = [read_events(path)[0] for path in chosen]
    events, starts = concatenate(parts, gap_us=1_000_000, align_us=WINDOW_US)
    path = tmp_path / "bursts.npz"
    write_events(path, events, StreamInfo(34, 34, "bursts"))
    expected = offline_decisions(checkpoint, chosen)

    segmentation = Segmentation("activity", activity_rate=3_000, quiet_windows=3)
    (report,), decisions = await run(
        model, [Stream("cam", [open_source(path)])], segmentation=segmentation
    )
    assert [d.segment_start_us for d in decisions] == starts  # one segment per burst, at onset
    for decision, offline in zip(decisions, expected, strict=True):
        assert_matches(decision, offline)
    assert report.steps == sum(d.timesteps for d in decisions)
    assert report.skipped_windows == report.windows - report.steps > 60  # silence costs no step

    # A threshold above the digits' rate: no segment, no step.
    quiet = Segmentation("activity", activity_rate=1e7)
    (report,), decisions = await run(
        model, [Stream("cam", [open_source(path)])], segmentation=quiet
    )
    assert decisions == [] and report.steps == 0 and report.windows > 60


def window(n_events: int, index: int = 0) -> Window:
    start = index * WINDOW_US
    frames = np.zeros((2, 34, 34), np.float32)
    return Window(index, frames, start, start + WINDOW_US, n_events, closed_at=0.0)


def test_activity_needs_quiet_windows_before_the_next_segment():
    # 3000 events per 30 ms window = 100k ev/s; 600 = 20k ev/s; 0 = quiet
    segmenter = Segmenter(Segmentation("activity", activity_rate=50_000, quiet_windows=2))
    assert [segmenter.admit(window(n)) for n in (0, 600, 3000, 3000)] == [False, False, True, True]
    segmenter.decided()
    # busy windows keep it waiting; one quiet window is not enough; after two it re-arms
    assert [segmenter.admit(window(n)) for n in (3000, 0, 3000, 0, 0, 600, 3000)] == [
        False, False, False, False, False, False, True,
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="quiet_rate"):
        Segmentation("activity", activity_rate=10, quiet_rate=20)
    with pytest.raises(ConfigError, match="segment mode"):
        Segmentation("sometimes")


async def test_a_non_finite_network_output_ends_the_stream_with_a_clear_error(
    recordings, model, monkeypatch
):
    real_step = model.step
    monkeypatch.setattr(
        model, "step", lambda *a, **k: dataclasses.replace(real_step(*a, **k), gap=math.nan)
    )
    (report,), decisions = await run(model, [Stream("nan", [open_source(recordings[0])])])
    assert decisions == [] and "non-finite network output" in report.error


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "5"])
def test_run_options_reject_a_bad_stats_interval(bad):
    with pytest.raises(ConfigError, match="stats_interval_s"):
        RunOptions(stats_interval_s=bad)


class StalledSource:
    """A source that delivers one chunk and then never another (a hung camera)."""

    live = False

    def __init__(self, events: np.ndarray, name: str = "stalled") -> None:
        self.events = events
        self.info = StreamInfo(34, 34, name)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        return None

    async def __aiter__(self):
        yield self.events
        await asyncio.Event().wait()


async def test_a_failing_or_stalled_stream_does_not_stop_the_others(
    recordings, checkpoint, model, tmp_path
):
    damaged = tmp_path / "damaged.bin"
    data = bytearray(recordings[2].read_bytes())  # its cutoff never fires: read to the damage
    bad = 700  # 5-byte events: time steps back to 0 at event 700, before any decision
    data[5 * bad + 2 : 5 * bad + 5] = bytes(3)
    damaged.write_bytes(data)
    wrong_sensor = tmp_path / "wrong.npz"
    events, _ = read_events(recordings[5])
    write_events(wrong_sensor, events, StreamInfo(64, 64, "wide"))
    streams = [
        Stream("good0", [open_source(recordings[0])]),
        Stream("damaged", [open_source(damaged, chunk_events=256)]),
        Stream("stalled", [StalledSource(events[:100])]),
        Stream("wrong", [open_source(wrong_sensor)]),
        Stream("good3", [open_source(recordings[3])]),
    ]
    out = io.StringIO()
    async with StdoutSink(out) as sink:
        runner = Runner(model, sink, RunOptions())
        task = asyncio.create_task(runner.run(streams))
        deadline = time.monotonic() + 30
        while not (
            runner.reports.get("good3")
            and runner.reports["good3"].decisions
            and runner.reports["good0"].decisions
            and runner.reports["damaged"].error
            and runner.reports["wrong"].error
        ):
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.01)
        assert runner.reports["stalled"].decisions == 0 and not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    decisions = by_stream([Decision.from_json(line) for line in out.getvalue().splitlines()])
    expected = offline_decisions(checkpoint, [recordings[0], recordings[3]])
    assert_matches(decisions["good0"][0], expected[0])
    assert_matches(decisions["good3"][0], expected[1])
    assert "damaged.bin" in runner.reports["damaged"].error
    assert f"event index {bad}" in runner.reports["damaged"].error
    assert "expects (2, 34, 34)" in runner.reports["wrong"].error
    # what the damaged file delivered before the damage was still classified
    assert len(decisions["damaged"]) == 1 and runner.reports["damaged"].windows > 0


@pytest.mark.parametrize("step_in_thread", [False, True])
async def test_stopping_decides_the_segments_in_progress(
    recordings, checkpoint, model, step_in_thread
):
    """Cancelling run() (what Ctrl-C does) decides every segment that has had a step with what it
    has, exit "interrupted", before run() ends; a segment without a step has nothing to decide."""
    (offline,) = offline_decisions(checkpoint, recordings[2:3])
    assert offline.steps > 3  # this recording's cutoff does not fire in its first 3 windows
    events, info = read_events(recordings[2])
    t0 = int(events["t"][0])
    # events up to 3.5 windows: windows 0-2 close and are stepped, then the source hangs
    begun = StalledSource(events[events["t"] < t0 + 3 * WINDOW_US + WINDOW_US // 2], "begun")
    waiting = StalledSource(events[events["t"] < t0 + WINDOW_US // 2], "waiting")
    out = io.StringIO()
    async with StdoutSink(out) as sink:
        runner = Runner(model, sink, RunOptions(step_in_thread=step_in_thread))
        task = asyncio.create_task(
            runner.run([Stream("begun", [begun]), Stream("waiting", [waiting])])
        )
        deadline = time.monotonic() + 30
        while not (runner.reports.get("begun") and runner.reports["begun"].steps == 3):
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    (decision,) = [Decision.from_json(line) for line in out.getvalue().splitlines()]
    assert (decision.stream, decision.seq, decision.exit) == ("begun", 0, "interrupted")
    assert (decision.timesteps, decision.threshold) == (3, None)
    assert (decision.segment_start_us, decision.segment_end_us) == (t0, t0 + 3 * WINDOW_US)
    assert decision.events == int((events["t"] < t0 + 3 * WINDOW_US).sum())
    # what the network had after 3 windows, as the offline multi-step network computes it
    frames = padded_frames(events, info, model.spec, T)
    y = cumulative_outputs(load_checkpoint(checkpoint)[0], [frames])[2, 0]
    assert decision.label == int(y.argmax())
    assert decision.gap == pytest.approx(float(topk_gap(y)), rel=1e-4, abs=1e-6)
    assert runner.reports["begun"].interrupted == 1 and runner.reports["waiting"].decisions == 0


async def test_the_event_loop_stays_responsive_while_networks_step(recordings, model, monkeypatch):
    """Steps run in worker threads: a slow network (100 ms per step here) must not stall the
    loop, which keeps reading sources and publishing for every other stream."""
    real_step = model.step

    def slow_step(*args, **kwargs):
        time.sleep(0.1)  # releases the GIL like torch kernels do
        return real_step(*args, **kwargs)

    monkeypatch.setattr(model, "step", slow_step)

    async def max_loop_lag_s(step_in_thread: bool) -> float:
        lags = []

        async def ticker():
            while True:
                before = time.perf_counter()
                await asyncio.sleep(0.005)
                lags.append(time.perf_counter() - before - 0.005)

        ticking = asyncio.create_task(ticker())
        streams = [Stream(f"s{i}", [open_source(p)]) for i, p in enumerate(recordings[:2])]
        await run(model, streams, step_in_thread=step_in_thread, cutoff=False)
        ticking.cancel()
        return max(lags)

    assert await max_loop_lag_s(step_in_thread=True) < 0.05
    assert await max_loop_lag_s(step_in_thread=False) >= 0.1  # the inline baseline blocks


def test_small_networks_step_inline_and_slow_ones_in_threads(model, monkeypatch):
    sink = StdoutSink(io.StringIO())
    monkeypatch.setattr(model, "step_time_s", INLINE_STEP_MAX_S / 4)
    assert not Runner(model, sink).steps_in_thread
    assert Runner(model, sink, RunOptions(step_in_thread=True)).steps_in_thread
    monkeypatch.setattr(model, "step_time_s", INLINE_STEP_MAX_S * 4)
    assert Runner(model, sink).steps_in_thread
    assert not Runner(model, sink, RunOptions(step_in_thread=False)).steps_in_thread


async def test_a_live_source_cannot_be_one_recording(model):
    class Live(StalledSource):
        live = True

    (report,), decisions = await run(model, [Stream("cam", [Live(np.zeros(0))])])
    assert decisions == [] and "use fixed or activity" in report.error


def test_decisions_are_json_lines(recordings, model):
    out = io.StringIO()

    async def main():
        async with StdoutSink(out) as sink:
            await Runner(model, sink).run([Stream("one", [open_source(recordings[0])])])

    asyncio.run(main())
    record = json.loads(out.getvalue())
    assert list(record)[:3] == ["schema_version", "stream", "seq"]
