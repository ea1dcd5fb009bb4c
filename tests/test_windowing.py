"""The asyncio windowing stage against small in-test sources that follow the EventSource protocol.

Timing is never asserted beyond generous overall timeouts: wall-clock behaviour is checked through
what the windows say (closed_by_wall_clock, emptiness, lateness), not through how long it took.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from spikecut.errors import ConfigError, CorruptFileError, EventDataError
from spikecut.pipeline.binning import FrameBuilder, WindowSpec, bin_recording, frames_for_recording
from spikecut.pipeline.windowing import StageStats, windows
from spikecut.sources.base import EventSource
from spikecut.sources.events import StreamInfo, make_events
from tests._real_events import load

INFO = StreamInfo(width=8, height=6, source="fake")


class FakeSource:
    """Replays chunks; optionally sleeps between them, raises at the end, or goes silent."""

    def __init__(
        self,
        chunks: Sequence[np.ndarray],
        *,
        info: StreamInfo = INFO,
        live: bool = False,
        pause_s: float = 0.0,
        error: Exception | None = None,
        silent_forever: bool = False,
    ) -> None:
        self.info = info
        self.live = live
        self.chunks = list(chunks)
        self.pause_s = pause_s
        self.error = error
        self.silent_forever = silent_forever
        self.pulled = 0

    async def __aenter__(self) -> FakeSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[np.ndarray]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[np.ndarray]:
        for chunk in self.chunks:
            if self.pause_s:
                await asyncio.sleep(self.pause_s)
            self.pulled += 1
            yield chunk
        if self.error is not None:
            raise self.error
        if self.silent_forever:
            await asyncio.Event().wait()


def split_randomly(events: np.ndarray, rng: np.random.Generator, n_cuts: int) -> list[np.ndarray]:
    cuts = np.sort(rng.integers(0, len(events) + 1, n_cuts))
    return np.split(events, cuts)


async def collect(source: EventSource, spec: WindowSpec, **options) -> list:
    async with source:
        return [w async for w in windows(source, spec, **options)]


def test_fake_source_follows_the_protocol() -> None:
    assert isinstance(FakeSource([]), EventSource)


SPECS = [
    WindowSpec(window_us=5_000),
    WindowSpec(window_us=8_000, stride_us=3_000, dtype="uint16"),
    WindowSpec(event_count=3_000, stride_events=2_000, dtype="int32"),
    WindowSpec(n_bins=10, span_us=130_000, dtype="float16"),
    WindowSpec(window_us=4_000, filter_us=2_000, refractory_us=50, downsample=2),
    WindowSpec(window_us=6_000, roi=(40, 30, 200, 150), polarities=1, clip=3, dtype="uint8"),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.kind + str(SPECS.index(s)))
@pytest.mark.parametrize("end", ["emit", "drop"])
async def test_stream_equals_frames_for_recording_bit_for_bit(
    real_data: Path, spec: WindowSpec, end: str
) -> None:
    events, info = load(real_data / "aedat4/davis346_aestream_example.aedat4")
    expected = bin_recording(events, info, spec, end=end)
    for seed in range(3):
        chunks = split_randomly(events, np.random.default_rng(seed), 40)
        got = await collect(FakeSource(chunks, info=info), spec, end=end)
        frames = np.stack([w.frames for w in got])
        n = len(expected.frames) if spec.kind != "bins" else len(got)
        assert frames.dtype == expected.frames.dtype
        assert frames.tobytes() == expected.frames[:n].tobytes()
        assert [w.index for w in got] == list(range(n))
        assert [w.t_start_us for w in got] == expected.t_start_us[:n].tolist()
        assert [w.n_events for w in got] == expected.n_events[:n].tolist()


async def test_n_bins_over_a_whole_recording_cannot_stream() -> None:
    with pytest.raises(ConfigError, match="span_us"):
        await collect(FakeSource([]), WindowSpec(n_bins=4))


@pytest.mark.parametrize(
    ("options", "message"),
    [({"policy": "newest"}, "policy"), ({"queue_size": 0}, "queue_size"), ({"end": "x"}, "end")],
)
async def test_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        await collect(FakeSource([]), WindowSpec(window_us=10), **options)


def one_window_per_chunk(n_windows: int, window_us: int = 100, per_window: int = 5) -> list:
    """Chunk k holds `per_window` events inside window k (so chunk k closes window k - 1)."""
    chunks = []
    for k in range(n_windows):
        t = k * window_us + np.arange(per_window)
        chunks.append(
            make_events(t, np.arange(per_window) % 8, np.zeros(per_window), np.ones(per_window))
        )
    return chunks


async def test_block_policy_loses_nothing_and_holds_back_the_source() -> None:
    source = FakeSource(one_window_per_chunk(40))
    stats = StageStats()
    received = []
    async with source:
        async for window in windows(source, WindowSpec(window_us=100), queue_size=3, stats=stats):
            # The producer may run ahead of us by the buffer, one window being handed over and
            # the chunk that completes the next one; never more.
            assert source.pulled <= len(received) + 3 + 3
            received.append(window)
            await asyncio.sleep(0.001)  # a slow consumer
    assert [w.index for w in received] == list(range(40))
    assert all(w.n_events == 5 for w in received)
    assert stats.windows == 40 and stats.events == 200
    assert stats.drops.backpressure_windows == 0


async def test_drop_oldest_counts_every_dropped_window_and_event() -> None:
    source = FakeSource(one_window_per_chunk(60))
    stats = StageStats()
    received = []
    async with source:
        stream = windows(
            source, WindowSpec(window_us=100), queue_size=4, policy="drop_oldest", stats=stats
        )
        async for window in stream:
            received.append(window)
            if len(received) == 1:
                while source.pulled < 60:  # stall until the source is exhausted
                    await asyncio.sleep(0.001)
                await asyncio.sleep(0.01)
    dropped_windows = sum(w.drops.backpressure_windows for w in received)
    dropped_events = sum(w.drops.backpressure_events for w in received)
    assert dropped_windows > 0
    assert len(received) <= 1 + 4 + 1
    assert len(received) + dropped_windows == 60
    assert sum(w.n_events for w in received) + dropped_events == 300
    assert stats.drops.backpressure_windows == dropped_windows
    assert stats.drops.backpressure_events == dropped_events
    indices = [w.index for w in received]
    assert indices == sorted(indices) and indices[-1] == 59  # the newest survive


async def test_a_slow_consumer_never_grows_the_buffer() -> None:
    # 2,000 windows through a buffer of 2 with drop_oldest and a consumer that takes one at a
    # time: the number of live Window objects stays tiny, measured by how many exist at once.
    source = FakeSource(one_window_per_chunk(2_000, per_window=1))
    stats = StageStats()
    async with source:
        async for _window in windows(
            source, WindowSpec(window_us=100), queue_size=2, policy="drop_oldest", stats=stats
        ):
            await asyncio.sleep(0)
    assert stats.windows + stats.drops.backpressure_windows == 2_000
    assert stats.events + stats.drops.backpressure_events == 2_000


async def test_end_of_stream_partial_window_emitted_or_dropped() -> None:
    events = make_events([0, 50, 120, 130], [0, 1, 2, 3], [0, 0, 0, 0], [1, 1, 0, 0])
    emitted = await collect(FakeSource([events]), WindowSpec(window_us=100))
    assert [(w.index, w.n_events, w.partial) for w in emitted] == [(0, 2, False), (1, 2, True)]
    stats = StageStats()
    dropped = await collect(
        FakeSource([events]), WindowSpec(window_us=100), end="drop", stats=stats
    )
    assert [(w.index, w.n_events) for w in dropped] == [(0, 2)]
    assert stats.drops.end_of_stream == 2


async def test_source_errors_arrive_after_everything_received_before() -> None:
    events = make_events([0, 50, 120, 130], [0, 1, 2, 3], [0, 0, 0, 0], [1, 1, 0, 0])
    source = FakeSource([events], error=CorruptFileError("bad packet", path="x.aedat4", offset=99))
    got = []
    with pytest.raises(CorruptFileError, match="byte offset 99"):
        async with source:
            async for window in windows(source, WindowSpec(window_us=100)):
                got.append(window)
    assert [(w.index, w.n_events, w.partial) for w in got] == [(0, 2, False), (1, 2, True)]


async def test_a_chunk_of_the_wrong_dtype_is_a_clear_error() -> None:
    good = make_events([0, 150], [0, 0], [0, 0], [0, 0])
    bad = np.zeros(3, dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1")])
    got = []
    with pytest.raises(EventDataError, match="EVENT_DTYPE"):
        async for window in windows(FakeSource([good, bad]), WindowSpec(window_us=100)):
            got.append(window)
    assert [w.index for w in got] == [0, 1]


async def test_breaking_out_cancels_the_producer() -> None:
    source = FakeSource(one_window_per_chunk(1_000), live=False)
    stream = windows(source, WindowSpec(window_us=100), queue_size=2)
    async for window in stream:
        if window.index == 3:
            break
    await stream.aclose()
    await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "spikecut-windowing"]
    assert source.pulled < 1_000


async def take(stream: AsyncIterator, done, got: list | None = None) -> list:
    """Collect windows until `done(got)`, then close the stream."""
    got = [] if got is None else got
    try:
        async for window in stream:
            got.append(window)
            if done(got):
                break
    finally:
        await stream.aclose()
    return got


def now_us() -> int:
    return time.perf_counter_ns() // 1_000


@pytest.mark.timeout(30)
async def test_a_silent_live_sensor_still_yields_empty_windows() -> None:
    window_us = 20_000
    t0 = now_us()
    burst = make_events(t0 + np.arange(5), np.arange(5), np.zeros(5), np.ones(5))
    source = FakeSource([burst], live=True, silent_forever=True)
    before = time.perf_counter()
    stream = windows(source, WindowSpec(window_us=window_us), wall_grace_us=1_000)
    got = await asyncio.wait_for(take(stream, lambda got: len(got) == 4), 20)
    assert got[0].n_events == 5
    assert all(w.closed_by_wall_clock for w in got)
    assert all(w.n_events == 0 and not w.frames.any() for w in got[1:])
    assert [w.t_start_us - t0 for w in got] == [0, window_us, 2 * window_us, 3 * window_us]
    assert all(before <= w.closed_at <= time.perf_counter() for w in got)


@pytest.mark.timeout(30)
async def test_events_for_a_window_the_wall_clock_closed_are_late() -> None:
    window_us = 10_000
    t0 = now_us()
    first = make_events([t0], [0], [0], [0])

    class Straggler(FakeSource):
        async def _chunks(self) -> AsyncIterator[np.ndarray]:
            yield first
            await asyncio.sleep(0.2)  # the sensor goes quiet; its windows close on the wall clock
            yield make_events([t0 + 1, now_us()], [1, 2], [0, 0], [0, 0])  # one stale, one fresh
            await asyncio.Event().wait()

    stream = windows(Straggler([], live=True), WindowSpec(window_us=window_us), wall_grace_us=0)
    got = await asyncio.wait_for(take(stream, lambda got: sum(w.n_events for w in got) == 2), 20)
    assert sum(w.drops.late for w in got) == 1
    assert got[0].n_events == 1 and got[0].closed_by_wall_clock


@pytest.mark.timeout(30)
async def test_live_count_windows_wait_for_events() -> None:
    # Count windows have no end time: a silent sensor produces nothing, and that is no error.
    burst = make_events(now_us() + np.arange(3), [0, 1, 2], [0, 0, 0], [1, 1, 1])
    source = FakeSource([burst], live=True, silent_forever=True)
    got: list = []
    stream = windows(source, WindowSpec(event_count=2))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(take(stream, lambda _: False, got), 0.2)
    assert [w.n_events for w in got] == [2]


async def test_frames_for_recording_is_what_a_live_replay_would_see() -> None:
    # Live sources go through the same builder; without silence the wall clock never intervenes.
    rng = np.random.default_rng(3)
    t = now_us() + np.sort(rng.integers(0, 5_000, 400))
    events = make_events(
        t, rng.integers(0, 8, 400), rng.integers(0, 6, 400), rng.integers(0, 2, 400)
    )
    spec = WindowSpec(window_us=500, dtype="int32")
    got = await collect(
        FakeSource(split_randomly(events, rng, 10), live=True), spec, wall_grace_us=10**6
    )
    expected = frames_for_recording(events, INFO, spec)
    np.testing.assert_array_equal(np.stack([w.frames for w in got]), expected)


async def test_a_stream_reuses_one_builder_for_its_sources() -> None:
    # Three sources one after another through one builder, the first abandoned mid-way (windows
    # still waiting in the ring and the buffer): each source gets exactly the windows a new
    # builder gives it, origin and counters included.
    rng = np.random.default_rng(5)
    spec = WindowSpec(window_us=300, filter_us=400, roi=(1, 1, 6, 4), dtype="int32")

    def recording(n: int) -> np.ndarray:
        t = 10_000 + np.cumsum(rng.integers(0, 20, n))
        xy = rng.integers(0, 9, (2, n))  # some outside the 8x6 sensor, many outside the ROI
        return make_events(t, xy[0], xy[1], rng.integers(0, 2, n))

    first, second, third = recording(3_000), recording(2_000), recording(500)
    builder = FrameBuilder(spec, INFO)
    stream = windows(FakeSource(split_randomly(first, rng, 8)), spec, builder=builder)
    assert len(await take(stream, lambda got: len(got) == 3)) == 3
    for events in (second, third):
        stats, fresh_stats = StageStats(), StageStats()
        chunks = split_randomly(events, rng, 5)
        got = await collect(FakeSource(chunks), spec, builder=builder, stats=stats)
        fresh = await collect(FakeSource(chunks), spec, stats=fresh_stats)
        assert [(w.index, w.t_start_us, w.n_events, w.drops) for w in got] == [
            (w.index, w.t_start_us, w.n_events, w.drops) for w in fresh
        ]
        assert np.stack([w.frames for w in got]).tobytes() == (
            np.stack([w.frames for w in fresh]).tobytes()
        )
        assert stats.drops == fresh_stats.drops and stats.drops.outside_roi > 0


async def test_a_builder_must_fit_and_serve_one_stage_at_a_time() -> None:
    spec = WindowSpec(window_us=100)
    builder = FrameBuilder(spec, INFO)
    with pytest.raises(ConfigError, match="builder"):
        await collect(FakeSource([]), spec.with_(window_us=200), builder=builder)
    with pytest.raises(ConfigError, match="builder"):
        await collect(FakeSource([], info=StreamInfo(9, 6, "other")), spec, builder=builder)
    running = windows(FakeSource(one_window_per_chunk(50)), spec, builder=builder)
    assert (await anext(running)).index == 0
    with pytest.raises(ConfigError, match="already running"):
        await collect(FakeSource([]), spec, builder=builder)
    await running.aclose()
    assert len(await collect(FakeSource(one_window_per_chunk(3)), spec, builder=builder)) == 3
